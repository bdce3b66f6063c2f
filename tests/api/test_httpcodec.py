"""The compiled request codec against Go's rules and against its pure-Python twin."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastkv._native import httpcodec as native
from tests.twins import httpcodec as twin

URLISH = st.binary(max_size=64).map(lambda b: bytes(c for c in b)) | st.text(
    alphabet="ab%+=&;/.2Fz0-9 é\x00", max_size=40
).map(lambda s: s.encode())


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except ValueError as e:
        return ("err", str(e))


@settings(max_examples=400, deadline=None)
@given(URLISH, st.booleans())
def test_unescape_matches_twin(data: bytes, query: bool) -> None:
    assert _outcome(native.unescape, data, query) == _outcome(twin.unescape, data, query)


@settings(max_examples=400, deadline=None)
@given(URLISH, URLISH)
def test_parse_form_matches_twin(first: bytes, second: bytes) -> None:
    a: dict[str, str] = {}
    b: dict[str, str] = {}
    assert (native.parse_form(first, a), native.parse_form(second, a)) == (
        twin.parse_form(first, b),
        twin.parse_form(second, b),
    )
    assert a == b


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="/.ab", max_size=24))
def test_clean_path_matches_twin(p: str) -> None:
    assert native.clean_path(p) == twin.clean_path(p)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789+-_ xa", max_size=22) | st.integers(0, 2**65).map(str))
def test_parse_uint64_matches_twin(s: str) -> None:
    assert native.parse_uint64(s) == twin.parse_uint64(s)


@pytest.mark.parametrize(
    ("data", "query", "expected"),
    [
        (b"a%2Fb", False, b"a/b"),
        (b"a+b", False, b"a+b"),
        (b"a+b", True, b"a b"),
        (b"%e2%82%ac", True, "€".encode()),
        (b"%zz", True, 'invalid URL escape "%zz"'),
        (b"x%", True, 'invalid URL escape "%"'),
        (b"x%4", True, 'invalid URL escape "%4"'),
        (b"%4g1", True, 'invalid URL escape "%4g"'),
        (b'%"1', True, 'invalid URL escape "%\\"1"'),
        (b"%\xff1", True, 'invalid URL escape "%\\xff1"'),
    ],
)
def test_unescape_go_cases(data: bytes, query: bool, expected: bytes | str) -> None:
    if isinstance(expected, bytes):
        assert native.unescape(data, query) == expected
    else:
        with pytest.raises(ValueError) as e:
            native.unescape(data, query)
        assert str(e.value) == expected


def test_parse_form_go_rules() -> None:
    form: dict[str, str] = {}
    assert native.parse_form(b"value=b&&value=c&ttl&x=%41+%42", form) is None
    assert form == {"value": "b", "ttl": "", "x": "A B"}
    # The body was parsed first: the query cannot override it.
    assert native.parse_form(b"value=q&new=1", form) is None
    assert form["value"] == "b" and form["new"] == "1"


def test_parse_form_errors_keep_going_and_semicolon_wins() -> None:
    form: dict[str, str] = {}
    assert native.parse_form(b"a=%zz&b=2&c=%", form) == 'invalid URL escape "%zz"'
    assert form == {"b": "2"}
    form = {}
    assert native.parse_form(b"a=%zz&b=1;2&c=3", form) == "invalid semicolon separator in query"
    assert form == {"c": "3"}


def test_parse_form_invalid_utf8_becomes_replacement_char() -> None:
    form: dict[str, str] = {}
    native.parse_form(b"value=%ff%fe", form)
    assert form["value"] == "\ufffd\ufffd"


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        ("", "/"),
        ("/", "/"),
        ("/v2/keys/a/b/", "/v2/keys/a/b/"),
        ("/v2/keys//a", "/v2/keys/a"),
        ("/v2/keys/./a/../b", "/v2/keys/b"),
        ("/../..", "/"),
        ("/a/..", "/"),
        ("/a/.", "/a"),
        ("/a/./", "/a/"),
        ("/a/.b/..c", "/a/.b/..c"),
        ("a", "/a"),
    ],
)
def test_clean_path(p: str, expected: str) -> None:
    assert native.clean_path(p) == expected


def test_parse_bool_and_uint() -> None:
    for s in ("1", "t", "T", "TRUE", "true", "True"):
        assert native.parse_bool(s) == 1
    for s in ("0", "f", "F", "FALSE", "false", "False"):
        assert native.parse_bool(s) == 0
    for s in ("", "yes", "tRUE", " true", "2"):
        assert native.parse_bool(s) == -1
    assert native.parse_uint64("18446744073709551615") == 2**64 - 1
    for s in ("18446744073709551616", "", "-1", "+1", "1_0", " 1", "0x10"):
        assert native.parse_uint64(s) == -1
    assert native.parse_uint64("007") == 7
