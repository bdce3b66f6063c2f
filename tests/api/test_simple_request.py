"""The client protocol's fast path (``httpcodec.simple_request``): a request it takes is answered, and
changes the store, exactly as when the general parser reads it.

A request arriving whole in one read may take the fast path; the same bytes cut into two reads never do
(the first read is not a whole request), so comparing the two outcomes through the real ClientProtocol
(tests/fuzz/http_target.py) compares the fast path with the parser.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastkv._native.httpcodec import simple_request
from tests.fuzz import http_target

_FORM = "application/x-www-form-urlencoded"

_SAFE_TARGETS = [
    "/v2/keys/a",
    "/v2/keys/dir/",
    "/v2/keys/a?recursive=true",
    "/v2/keys/q?wait=true&waitIndex=1",
    "/v2/keys/a/../b",
    "/v2/keys//a",
    "/v2/keys/%41%zz",
    "/v2/keys/_hidden",
    "/v2/keys/a+b,c~d",
    "/v2/keys/a?prevExist=false",
    "/v2/keys/a?dir=true&value=x",
    "/v2/keys/a?sorted=true&quorum=true",
    "/version",
    "/health",
    "/v2/members",
    "/v2/stats/self",
    "/nope",
]
_SAFE_HEADERS = [
    "User-Agent: python-urllib3/2.0.7",
    "accept: */*",
    "Accept-Encoding:    identity   ",
    "Connection: keep-alive",
    "CONNECTION: Keep-Alive",
    "Content-Type: " + _FORM,
    "content-type: application/json",
]
_HOSTS = ["Host: 127.0.0.1:2379", "host: localhost", "HOST: [::1]:2379"]
_BODIES = ["", "value=1", "value=a%20b&ttl=5", "dir=true", "prevValue=1&value=2", "value=%zz", "x"]
# One change that may take a request out of the fast path's form, or keep it in.
_CHANGES = [
    ("method", "HEAD"),
    ("method", "get"),
    ("method", "PATCH"),
    ("method", "OPTIONS"),
    ("target", "/v2/keys/a b"),
    ("target", "/v2/keys/a#frag"),
    ("target", "/v2/keys/\xe9"),
    ("target", "*"),
    ("target", "/v2/keys/a;b"),
    # A connection's first line is at most 4096 bytes with its CRLF (cmux): lines of 4093-4097.
    *(("target", "/v2/keys/" + "k" * n) for n in range(4071, 4076)),
    ("version", "HTTP/1.0"),
    ("version", "HTTP/2.0"),
    ("header", "Host: "),
    ("header", "Host: a b"),
    ("header", "Host: a_b"),
    ("header", "Host: 127.0.0.1:2379"),
    ("header", "Connection: close"),
    ("header", "Origin: http://x"),
    ("header", "Authorization: Basic cm9vdDpyb290"),
    ("header", "Expect: 100-continue"),
    ("header", "Transfer-Encoding: chunked"),
    ("header", "Host : x"),
    ("header", "Accept:\t*/*"),
    ("header", "X-Other: 1"),
    ("header", "Content-Type: text/plain"),
    ("nohost", ""),
    ("length", "none"),
    ("length", "short"),
    ("length", "long"),
    ("length", "twice"),
    ("length", "padded"),
    ("length", "sign"),
    ("tail", "GET /v2/keys/a HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("tail", "\r\n"),
]


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    """A request of the fast path's form, half the time with one change that may take it out."""
    method = draw(st.sampled_from(["GET", "PUT", "POST", "DELETE"]))
    target = draw(st.sampled_from(_SAFE_TARGETS))
    version = "HTTP/1.1"
    headers = draw(st.lists(st.sampled_from(_SAFE_HEADERS), max_size=3, unique=True))
    headers.insert(draw(st.integers(0, len(headers))), draw(st.sampled_from(_HOSTS)))
    body = draw(st.sampled_from(_BODIES)).encode()
    length, tail = "exact", ""
    if draw(st.booleans()):
        what, change = draw(st.sampled_from(_CHANGES))
        if what == "method":
            method = change
        elif what == "target":
            target = change
        elif what == "version":
            version = change
        elif what == "header":
            headers.insert(draw(st.integers(0, len(headers))), change)
        elif what == "nohost":
            headers = [h for h in headers if not h.lower().startswith("host")]
        elif what == "length":
            length = change
        else:
            tail = change
    if length == "exact" and (body or draw(st.booleans())):
        headers.append(f"Content-Length: {len(body)}")
    elif length == "short" and body:
        headers.append(f"Content-Length: {len(body) - 1}")
    elif length == "long":
        headers.append(f"Content-Length: {len(body) + 1}")
    elif length == "twice":
        headers += [f"Content-Length: {len(body)}"] * 2
    elif length == "padded":
        headers.append(f"Content-Length:   0{len(body)}  ")
    elif length == "sign":
        headers.append(f"Content-Length: +{len(body)}")
    head = f"{method} {target} {version}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    return head.encode("utf-8") + body + tail.encode()


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(_requests())
def test_fast_path_answers_as_the_parser(request: bytes) -> None:
    whole = http_target._run([request])
    for cut in (1, len(request) // 2, len(request) - 1):
        assert http_target._run([request[:cut], request[cut:]]) == whole, (request, cut)


@pytest.mark.parametrize(
    "request_bytes",
    [
        # wrk's GET and PUT
        b"GET /v2/keys/bench/k1 HTTP/1.1\r\nHost: 127.0.0.1:2379\r\n\r\n",
        b"PUT /v2/keys/bench/k1 HTTP/1.1\r\nHost: 127.0.0.1:2379\r\nContent-Type: "
        + _FORM.encode()
        + b"\r\nContent-Length: 7\r\n\r\nvalue=1",
        # python-etcd (urllib3)
        b"GET /v2/keys/a?recursive=false HTTP/1.1\r\nHost: 127.0.0.1:2379\r\nAccept-Encoding: identity\r\n"
        b"User-Agent: python-urllib3\r\n\r\n",
        b"DELETE /v2/keys/a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
        b"POST /v2/keys/q HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_common_clients_requests_take_the_fast_path(request_bytes: bytes) -> None:
    assert simple_request(request_bytes) is not None
    whole = http_target._run([request_bytes])
    assert whole[0].startswith(b"HTTP/1.1 2") or whole[0].startswith(b"HTTP/1.1 404")
    assert http_target._run([request_bytes[:5], request_bytes[5:]]) == whole


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v2/keys/a HTTP/1.0\r\nHost: h\r\n\r\n",  # HTTP/1.0: keep-alive rules differ
        b"GET /v2/keys/a HTTP/1.1\r\n\r\n",  # no Host: 400
        b"GET /v2/keys/a HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",
        b"GET /v2/keys/a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        b"GET /v2/keys/a HTTP/1.1\r\nHost: h\r\nOrigin: x\r\n\r\n",  # CORS
        b"GET /v2/keys/a HTTP/1.1\r\nHost: h\r\nAuthorization: Basic eDp5\r\n\r\n",  # v2 auth
        b"HEAD /v2/keys/a HTTP/1.1\r\nHost: h\r\n\r\n",  # no body in the answer
        b"GET /v2/keys/a HTTP/1.1\r\nHost: h\r\n\r\nGET /v2/keys/b HTTP/1.1\r\nHost: h\r\n\r\n",  # two
        b"PUT /v2/keys/a HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\nvalue=",  # body not all here
        b"PUT /v2/keys/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /v2/keys/a#x HTTP/1.1\r\nHost: h\r\n\r\n",
    ],
)
def test_anything_else_goes_to_the_parser(request_bytes: bytes) -> None:
    assert simple_request(request_bytes) is None
