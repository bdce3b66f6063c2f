"""Target ``form``: the form decoder and etcd's key-request parser (api/keys.py, native/httpcodec.pyx).

The input chooses a method, a Content-Type, a body, a query, a key and whether the body was over Go's
limit, then runs ``build_form`` and ``parse_key_request`` as the client protocol does.

Invariants:
- ``build_form`` raises nothing but ``V2Error`` 210 (index 0); ``parse_key_request`` nothing but the
  ``V2Error`` codes etcd's parseKeyRequest gives (201, 202, 203, 209, 211, 212; index 0), and carries a
  given ttl relative (a uint64; the expiration is stamped on apply); ``media_type`` never raises;
- the compiled ``parse_form`` and its pure-Python twin (tests/twins/httpcodec.py) agree on every input;
- round trips against urllib.parse: on ASCII input without a form error whose escapes decode to UTF-8,
  the first value of every name is what ``urllib.parse.parse_qsl`` finds; and any decoded form, encoded
  again with ``urllib.parse.urlencode``, decodes to itself.
"""

from __future__ import annotations

import urllib.parse

from fastkv._native.httpcodec import GO_REPLACE, clean_path, parse_form
from fastkv.api.keys import FORM_MEDIA_TYPE, build_form, media_type, parse_key_request
from fastkv.v2store.errors import (
    INDEX_NAN,
    INVALID_FIELD,
    INVALID_FORM,
    PREV_VALUE_REQUIRED,
    REFRESH_TTL_REQUIRED,
    REFRESH_VALUE,
    TTL_NAN,
    V2Error,
)
from fastkv.v2store.request import V2Request
from tests.fuzz.reader import Reader
from tests.twins import httpcodec as twin

METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE", "PATCH")
CONTENT_TYPES = (
    None,
    FORM_MEDIA_TYPE,
    "application/json",
    "application/x-www-form-urlencoded; charset=utf-8",
)
KEY_REQUEST_CODES = frozenset(
    {PREV_VALUE_REQUIRED, TTL_NAN, INDEX_NAN, INVALID_FIELD, REFRESH_VALUE, REFRESH_TTL_REQUIRED}
)


class FuzzFailure(AssertionError):
    pass


def _first_values(pairs: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in pairs:
        out.setdefault(k, v)
    return out


def check_parse_form(data: bytes) -> None:
    form: dict[str, str] = {}
    err = parse_form(data, form)
    twin_form: dict[str, str] = {}
    twin_err = twin.parse_form(data, twin_form)
    if (err, form) != (twin_err, twin_form):
        raise FuzzFailure(f"parse_form differs from its twin: {(err, form)!r} != {(twin_err, twin_form)!r}")
    if err is None and data.isascii():
        try:
            pairs = urllib.parse.parse_qsl(data.decode("ascii"), keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            pass  # an escape of invalid UTF-8: Go keeps the bytes, Python cannot; not comparable
        else:
            expected = _first_values(pairs)
            if form != expected:
                raise FuzzFailure(f"parse_form {form!r} != urllib.parse {expected!r}")
    again: dict[str, str] = {}
    encoded = urllib.parse.urlencode(list(form.items())).encode("ascii")
    err2 = parse_form(encoded, again)
    if err2 is not None or again != form:
        raise FuzzFailure(f"form does not survive urlencode: {form!r} -> {encoded!r} -> {again!r} ({err2})")


def form(data: bytes) -> None:
    r = Reader(data)
    method = METHODS[r.byte() % len(METHODS)]
    ct_choice = r.byte()
    if ct_choice < len(CONTENT_TYPES):
        content_type = CONTENT_TYPES[ct_choice]
    else:
        content_type = r.chunk(64).decode("latin-1")  # as the protocol decodes the header
    too_large = r.byte() == 0xFF
    # What the protocol passes: the clean, decoded path after /v2/keys ("" or "/...").
    raw_key = r.chunk(32)
    key = clean_path("/" + raw_key.decode("utf-8", GO_REPLACE)) if raw_key else ""
    body = r.chunk()
    query = r.rest()

    check_parse_form(body)
    check_parse_form(query)
    if content_type is not None:
        mt, mt_err = media_type(content_type)
        if not isinstance(mt, str) or not (mt_err is None or isinstance(mt_err, str)):
            raise FuzzFailure(f"media_type({content_type!r}) returned {(mt, mt_err)!r}")

    try:
        fields = build_form(method, content_type, body, too_large, query)
    except V2Error as e:
        if e.code != INVALID_FORM or e.index != 0:
            raise FuzzFailure(f"build_form raised {e.code} index {e.index}: {e}") from e
        if not 400 <= e.status < 500:
            raise FuzzFailure(f"form error answered with status {e.status}") from e
        e.to_json()
        return
    if not all(type(k) is str and type(v) is str for k, v in fields.items()):
        raise FuzzFailure(f"build_form returned non-str names or values: {fields!r}")

    try:
        req, no_value = parse_key_request(method, key, fields)
    except V2Error as e:
        if e.code not in KEY_REQUEST_CODES or e.index != 0:
            raise FuzzFailure(f"parse_key_request raised {e.code} index {e.index}: {e}") from e
        e.to_json()
        return
    if not isinstance(req, V2Request) or type(no_value) is not bool:
        raise FuzzFailure(f"parse_key_request returned {(req, no_value)!r}")
    if not req.path.startswith("/") or (req.path != "/" and req.path.endswith("/")):
        raise FuzzFailure(f"request path {req.path!r} from key {key!r}")
    # The ttl travels relative (a uint64, or None without a ttl); it is made absolute on apply.
    if req.ttl is not None and not (fields.get("ttl") and 0 <= req.ttl < 1 << 64):
        raise FuzzFailure(f"ttl {req.ttl!r} from {fields.get('ttl')!r}")
    if req.ttl is None and fields.get("ttl"):
        raise FuzzFailure(f"ttl {fields.get('ttl')!r} dropped")
    if req.expiration:
        raise FuzzFailure(f"expiration {req.expiration} stamped by the API")
    if req.wait and method != "GET":
        raise FuzzFailure(f"wait accepted on {method}")
