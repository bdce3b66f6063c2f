"""etcd's parseKeyRequest rules: form precedence, value syntax, error codes and their order."""

from __future__ import annotations

import pytest

from fastkv.api.keys import MAX_FORM_SIZE, build_form, media_type, parse_key_request
from fastkv.v2store.errors import V2Error


def parse(method: str, key: str, query: bytes = b"", body: bytes = b"", ct: str | None = None):
    form = build_form(method, ct, body, False, query)
    return parse_key_request(method, key, form)


def error_of(method: str, query: bytes, body: bytes = b"", ct: str | None = None) -> tuple[int, str, int]:
    with pytest.raises(V2Error) as e:
        parse(method, "/k", query, body, ct)
    return e.value.code, e.value.cause, e.value.index


FORM = "application/x-www-form-urlencoded"


def test_plain_requests() -> None:
    req, nvos = parse("GET", "")
    assert (req.method, req.path, nvos) == ("GET", "/", False)
    req, _ = parse("PUT", "/a/b/", body=b"value=x%20y&ttl=5&prevExist=false", ct=FORM)
    # The ttl stays relative: the expiration is stamped when the entry is applied (cluster time).
    assert (req.path, req.value, req.prev_exist, req.ttl, req.expiration) == ("/a/b", "x y", False, 5, 0)


def test_body_wins_over_query_and_first_value_wins() -> None:
    req, _ = parse("PUT", "/a", query=b"value=q&value=r", body=b"value=b&value=c", ct=FORM)
    assert req.value == "b"
    req, _ = parse("PUT", "/a", query=b"value=q&value=r", body=b"value=b", ct=None)
    assert req.value == "q"  # no form media type: the body is not a form


def test_body_ignored_for_delete_and_get() -> None:
    req, _ = parse("DELETE", "/a", body=b"recursive=true", ct=FORM)
    assert req.recursive is False


def test_ttl_rules() -> None:
    assert parse("PUT", "/a", query=b"ttl=")[0].ttl is None
    assert parse("PUT", "/a")[0].ttl is None
    assert parse("PUT", "/a", query=b"ttl=0")[0].ttl == 0
    assert parse("PUT", "/a", query=b"ttl=18446744073709551615")[0].ttl == (1 << 64) - 1
    assert error_of("PUT", b"ttl=-1") == (202, 'invalid value for "ttl"', 0)
    assert error_of("PUT", b"ttl=1.5")[0] == 202


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"prevIndex=x", (203, 'invalid value for "prevIndex"')),
        (b"prevIndex=", (203, 'invalid value for "prevIndex"')),
        (b"waitIndex=-1", (203, 'invalid value for "waitIndex"')),
        (b"recursive=yes", (209, 'invalid value for "recursive"')),
        (b"sorted=", (209, 'invalid value for "sorted"')),
        (b"dir=2", (209, 'invalid value for "dir"')),
        (b"quorum=x", (209, 'invalid value for "quorum"')),
        (b"stream=x", (209, 'invalid value for "stream"')),
        (b"wait=true", (209, '"wait" can only be used with GET requests')),
        (b"prevValue=", (201, '"prevValue" cannot be empty')),
        (b"noValueOnSuccess=x", (209, 'invalid value for "noValueOnSuccess"')),
        (b"prevExist=x", (209, "invalid value for prevExist")),
        (b"refresh=x", (209, "invalid value for refresh")),
        (b"refresh=true&ttl=5&value=v", (211, "A value was provided on a refresh")),
        (b"refresh=true", (212, "No TTL value set")),
        (b"refresh=true&ttl=", (212, "No TTL value set")),
        (b"a=%zz", (210, 'invalid URL escape "%zz"')),
        (b"a=1;b=2", (210, "invalid semicolon separator in query")),
    ],
)
def test_each_error(query: bytes, expected: tuple[int, str]) -> None:
    assert error_of("PUT", query) == (*expected, 0)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        (b"recursive=x&prevIndex=x", 203),
        (b"waitIndex=x&prevIndex=x", 203),
        (b"ttl=x&wait=true&prevValue=&prevIndex=1", 209),
        (b"prevValue=&ttl=x", 201),
        (b"ttl=x&prevExist=x", 202),
        (b"prevExist=x&refresh=true", 209),
        (b"noValueOnSuccess=x&ttl=x", 209),
        (b"stream=x&wait=true", 209),
    ],
)
def test_error_order(query: bytes, code: int) -> None:
    assert error_of("PUT", query)[0] == code


def test_refresh_and_flags() -> None:
    req, nvos = parse("PUT", "/a", query=b"refresh=true&ttl=5&value=&prevExist=true&noValueOnSuccess=1")
    assert (req.refresh, req.prev_exist, nvos, req.value) == (True, True, True, "")
    req, _ = parse("GET", "/a", query=b"wait=true&waitIndex=7&recursive=T&stream=1&quorum=f&sorted=True")
    assert (req.wait, req.since, req.recursive, req.stream, req.quorum, req.sorted) == (
        True,
        7,
        True,
        True,
        False,
        True,
    )


def test_form_errors() -> None:
    assert error_of("PUT", b"", b"value=%", FORM) == (210, 'invalid URL escape "%"', 0)
    # The body's error is reported even when the query has one too.
    assert error_of("PUT", b"x=%zz", b"value=%", FORM)[1] == 'invalid URL escape "%"'
    assert error_of("PUT", b"", b"value=1", FORM + "; charset")[:2] == (210, "mime: invalid media parameter")
    assert error_of("PUT", b"", b"value=1", "a/")[:2] == (210, "mime: expected token after slash")
    with pytest.raises(V2Error) as e:
        build_form("PUT", FORM, b"v=" + b"x" * MAX_FORM_SIZE, False, b"")
    assert (e.value.code, e.value.cause) == (210, "http: POST too large")
    assert build_form("PUT", FORM, b"v=" + b"x" * (MAX_FORM_SIZE - 2), False, b"")["v"] == "x" * (
        MAX_FORM_SIZE - 2
    )


def test_media_type() -> None:
    assert media_type("Application/X-WWW-Form-Urlencoded; charset=utf-8") == (FORM, None)
    assert media_type("foo") == ("foo", None)
    assert media_type("") == ("", "mime: no media type")
    assert media_type("a b") == ("", "mime: expected slash after first token")
    assert media_type('text/plain; a="x y";') == ("text/plain", None)
    assert media_type("text/plain; a=1; A=2") == ("", "mime: duplicate parameter name")
