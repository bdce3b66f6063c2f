"""Client request parsing: fastkv._native.httpcodec against tests/twins/httpcodec.py.

Inputs are one PUT as etcd clients send it: the form body ``value=<100 bytes, form-encoded>&ttl=10&
prevExist=true``, a percent-escaped request path, and the flag/number strings ``fastkv.api.keys``
converts for every request.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_plus

import pytest
from tests.twins import httpcodec as twin

from fastkv._native import httpcodec as native

from .conftest import json_value

IMPLS = {"native": native, "twin": twin}
VALUE = json_value()
BODY = b"value=" + quote_plus(VALUE).encode() + b"&ttl=10&prevExist=true"
RAW_PATH = b"/v2/keys/registry/services/web%20frontend/key-0042"
MESSY_PATH = "/v2/keys/registry//services/./web/../key-0042/"


def _parse_form(mod: Any, body: bytes) -> tuple[str | None, dict[str, str]]:
    form: dict[str, str] = {}
    return mod.parse_form(body, form), form


@pytest.mark.parametrize("impl", IMPLS)
def test_parse_form(benchmark: Any, impl: str) -> None:
    benchmark.group = f"httpcodec: parse_form PUT body ({len(BODY)} B)"
    result = benchmark(_parse_form, IMPLS[impl], BODY)
    assert result == _parse_form(twin, BODY) == (None, {"value": VALUE, "ttl": "10", "prevExist": "true"})


@pytest.mark.parametrize("impl", IMPLS)
def test_unescape(benchmark: Any, impl: str) -> None:
    benchmark.group = "httpcodec: unescape request path"
    out = benchmark(IMPLS[impl].unescape, RAW_PATH, False)
    assert out == twin.unescape(RAW_PATH, False) == b"/v2/keys/registry/services/web frontend/key-0042"


@pytest.mark.parametrize("impl", IMPLS)
def test_clean_path(benchmark: Any, impl: str) -> None:
    benchmark.group = "httpcodec: clean_path (Go path.Clean, trailing slash kept)"
    out = benchmark(IMPLS[impl].clean_path, MESSY_PATH)
    assert out == twin.clean_path(MESSY_PATH) == "/v2/keys/registry/services/key-0042/"


@pytest.mark.parametrize("impl", IMPLS)
def test_parse_bool(benchmark: Any, impl: str) -> None:
    benchmark.group = "httpcodec: parse_bool('true')"
    assert benchmark(IMPLS[impl].parse_bool, "true") == twin.parse_bool("true") == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_parse_uint64(benchmark: Any, impl: str) -> None:
    benchmark.group = "httpcodec: parse_uint64('3600')"
    assert benchmark(IMPLS[impl].parse_uint64, "3600") == twin.parse_uint64("3600") == 3600
