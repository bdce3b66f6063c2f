"""``/v2/keys`` requests: Go's form rules and etcd's ``parseKeyRequest``, check for check.

The form is built like Go's ``Request.ParseForm``: the body is read as a form only for POST/PUT with a media
type of ``application/x-www-form-urlencoded`` (at most 10 MiB, else "http: POST too large"), body values
come before query values, and etcd only ever looks at the first value of a name.  Any form error is
errorCode 210 with Go's message as cause.

The parameter checks then run in etcd's order (verified against etcd 3.4.23 with two bad values at once):
prevIndex, waitIndex (203); recursive, sorted, wait, dir, quorum, stream (209); wait on a non-GET (209);
empty prevValue (201); noValueOnSuccess (209); ttl (202, an empty ttl means no TTL); prevExist (209);
refresh (209), refresh with a value (211), refresh without ttl (212).  Every parse error carries index 0.
"""

from __future__ import annotations

from .._native.httpcodec import parse_bool, parse_form, parse_uint64
from ..v2store.errors import (
    INDEX_NAN,
    INVALID_FIELD,
    INVALID_FORM,
    PREV_VALUE_REQUIRED,
    REFRESH_TTL_REQUIRED,
    REFRESH_VALUE,
    TTL_NAN,
    V2Error,
)
from ..v2store.request import V2Request

# Go's net/http limit on a urlencoded body read by ParseForm.
MAX_FORM_SIZE = 10 << 20
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"

_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')


def _is_token_char(c: str) -> bool:
    return " " < c < "\x7f" and c not in _TSPECIALS


def _consume_token(v: str) -> tuple[str, str]:
    i = 0
    while i < len(v) and _is_token_char(v[i]):
        i += 1
    return v[:i], v[i:]


def _consume_value(v: str) -> tuple[str, str]:
    if not v:
        return "", v
    if v[0] != '"':
        return _consume_token(v)
    buf: list[str] = []
    i = 1
    while i < len(v):
        c = v[i]
        if c == '"':
            return "".join(buf), v[i + 1 :]
        if c == "\\" and i + 1 < len(v) and v[i + 1] in '\\"':
            buf.append(v[i + 1])
            i += 2
            continue
        if c in "\r\n":
            return "", v
        buf.append(c)
        i += 1
    return "", v


def media_type(header: str) -> tuple[str, str | None]:
    """Go's ``mime.ParseMediaType`` reduced to what ParseForm needs: (media type, error message or None)."""
    base, _, params = header.partition(";")
    mt = base.strip().lower()
    typ, rest = _consume_token(mt)
    if not typ:
        return "", "mime: no media type"
    if rest:
        if not rest.startswith("/"):
            return "", "mime: expected slash after first token"
        sub, rest = _consume_token(rest[1:])
        if not sub:
            return "", "mime: expected token after slash"
        if rest:
            return "", "mime: unexpected content after media subtype"
    if not params:
        return mt, None
    v = ";" + params
    seen: set[str] = set()
    while v:
        v = v.lstrip()
        if not v:
            break
        rest = v
        key = ""
        if rest.startswith(";"):
            rest = rest[1:].lstrip()
            param, rest = _consume_token(rest)
            param = param.lower()
            rest = rest.lstrip()
            if param and rest.startswith("="):
                rest = rest[1:].lstrip()
                value, rest2 = _consume_value(rest)
                if value or rest2 != rest:
                    key, rest = param, rest2
        if not key:
            if v.strip() == ";":
                break
            return mt, "mime: invalid media parameter"
        if key in seen:
            return "", "mime: duplicate parameter name"
        seen.add(key)
        v = rest
    return mt, None


def build_form(
    method: str, content_type: str | None, body: bytes, too_large: bool, query: bytes
) -> dict[str, str]:
    """Go's ``ParseForm`` into name -> first value; raises V2Error 210 like etcd."""
    form: dict[str, str] = {}
    err: str | None = None
    if method == "PUT" or method == "POST":
        if content_type == FORM_MEDIA_TYPE:
            mt: str = FORM_MEDIA_TYPE
        else:
            mt, err = media_type(content_type or "application/octet-stream")
        if mt == FORM_MEDIA_TYPE:
            if too_large or len(body) > MAX_FORM_SIZE:
                raise V2Error(INVALID_FORM, "http: POST too large")
            e = parse_form(body, form)
            if err is None:
                err = e
    if query:
        e = parse_form(query, form)
        if err is None:
            err = e
    if err is not None:
        raise V2Error(INVALID_FORM, err)
    return form


def _uint(form: dict[str, str], name: str) -> int:
    s = form.get(name)
    if s is None:
        return 0
    v = parse_uint64(s)
    if v < 0:
        raise V2Error(INDEX_NAN, f'invalid value for "{name}"')
    return v


def _bool(form: dict[str, str], name: str) -> bool:
    s = form.get(name)
    if s is None:
        return False
    b = parse_bool(s)
    if b < 0:
        raise V2Error(INVALID_FIELD, f'invalid value for "{name}"')
    return b == 1


def key_path(key: str) -> str:
    """The request path of a decoded, clean key after ``/v2/keys`` ("" or "/a/b/"): path.Join'ed, "/" for
    the root."""
    return key.rstrip("/") or "/"


def parse_key_request(method: str, key: str, form: dict[str, str]) -> tuple[V2Request, bool]:
    """etcd's ``parseKeyRequest``: the V2Request and noValueOnSuccess, or V2Error (index 0).

    ``key`` is the decoded, clean URL path after ``/v2/keys`` ("" or "/a/b/"); the request path is the
    path.Join'ed key ("/" for the root).  A ttl stays relative (``req.ttl``): the expiration is stamped
    when the entry is applied, from the cluster time, not from this member's clock.
    """
    path = key.rstrip("/") or "/"  # key_path(key), inlined on this hot path
    if not form:
        return V2Request(method, path), False
    if len(form) == 1 and "value" in form:
        # The common write: every other parameter is absent, so every check below passes.
        return V2Request(method, path, value=form["value"]), False
    prev_index = _uint(form, "prevIndex")
    since = _uint(form, "waitIndex")
    recursive = _bool(form, "recursive")
    sorted_ = _bool(form, "sorted")
    wait = _bool(form, "wait")
    dir_ = _bool(form, "dir")
    quorum = _bool(form, "quorum")
    stream = _bool(form, "stream")
    if wait and method != "GET":
        raise V2Error(INVALID_FIELD, '"wait" can only be used with GET requests')
    prev_value = form.get("prevValue")
    if prev_value == "":
        raise V2Error(PREV_VALUE_REQUIRED, '"prevValue" cannot be empty')
    no_value_on_success = _bool(form, "noValueOnSuccess")
    ttl_s = form.get("ttl")
    ttl = -1
    if ttl_s:
        ttl = parse_uint64(ttl_s)
        if ttl < 0:
            raise V2Error(TTL_NAN, 'invalid value for "ttl"')
    prev_exist: bool | None = None
    s = form.get("prevExist")
    if s is not None:
        b = parse_bool(s)
        if b < 0:
            raise V2Error(INVALID_FIELD, "invalid value for prevExist")
        prev_exist = b == 1
    refresh: bool | None = None
    s = form.get("refresh")
    if s is not None:
        b = parse_bool(s)
        if b < 0:
            raise V2Error(INVALID_FIELD, "invalid value for refresh")
        refresh = b == 1
        if refresh:
            if form.get("value"):
                raise V2Error(REFRESH_VALUE, "A value was provided on a refresh")
            if ttl < 0:
                raise V2Error(REFRESH_TTL_REQUIRED, "No TTL value set")
    req = V2Request(
        method,
        path,
        value=form.get("value", ""),
        dir=dir_,
        prev_value=prev_value or "",
        prev_index=prev_index,
        prev_exist=prev_exist,
        ttl=ttl if ttl >= 0 else None,
        wait=wait,
        since=since,
        recursive=recursive,
        sorted=sorted_,
        quorum=quorum,
        stream=stream,
        refresh=refresh,
        no_value_on_success=no_value_on_success,
    )
    return req, no_value_on_success
