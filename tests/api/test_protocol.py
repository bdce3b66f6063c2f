"""The HTTP layer over a FakeServer: etcd's statuses, headers and bodies, watches, and hostile clients."""

from __future__ import annotations

import asyncio

from fastkv.server.interface import OutcomeUnknown
from fastkv.v2store.errors import LEADER_ELECT, RAFT_INTERNAL, V2Error
from tests.api.fake import FakeServer
from tests.api.harness import Conn, one, req, run

CORS = [
    "Access-Control-Allow-Headers",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Origin",
]
KEYS_OK = [*CORS, "Content-Type", "X-Etcd-Cluster-Id", "X-Etcd-Index", "X-Raft-Index", "X-Raft-Term", "Date"]


def test_set_get_headers_and_status_rule() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        r = await one(port, req("PUT", "/v2/keys/a", b"value=1"))
        assert r.status_line == "HTTP/1.1 201 Created"
        assert r.names == [*KEYS_OK, "Content-Length"]
        assert r.header("X-Etcd-Cluster-Id") == "5a03e5414ff8f8ed"
        assert r.header("X-Etcd-Index") == "4" and r.header("X-Raft-Index") == "6"
        assert (
            r.body == b'{"action":"set","node":{"key":"/a","value":"1","modifiedIndex":4,"createdIndex":4}}\n'
        )
        assert r.header("Content-Length") == str(len(r.body))
        r = await one(port, req("PUT", "/v2/keys/a", b"value=2"))
        assert r.status == 200  # set over an existing key
        r = await one(port, req("PUT", "/v2/keys/b?prevExist=false&noValueOnSuccess=true", b"value=2"))
        assert (r.status, r.body) == (201, b'{"action":"create"}\n')
        r = await one(port, req("GET", "/v2/keys/a"))
        assert r.status == 200 and b'"value":"2"' in r.body
        r = await one(port, req("HEAD", "/v2/keys/a"), head=True)
        assert r.status == 200 and r.header("Content-Length") == "84"
        r = await one(port, req("GET", "/v2/keys/nope"))
        assert r.status == 404
        assert r.names == [
            *CORS,
            "Content-Type",
            "X-Etcd-Cluster-Id",
            "X-Etcd-Index",
            "Date",
            "Content-Length",
        ]
        assert r.body == b'{"errorCode":100,"message":"Key not found","cause":"/nope","index":6}\n'
        assert r.header("X-Etcd-Index") == "6"

    run(t)


def test_requests_built_for_the_server() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        await one(port, req("PUT", "/v2/keys/x%2Fy/?ttl=10&value=q", b"value=b&prevIndex=3"))
        await one(port, req("GET", "/v2/keys/a?quorum=true&wait=true"))
        await one(port, req("DELETE", "/v2/keys/a?recursive=true", b"dir=true"))
        await one(port, req("POST", "/v2/keys/q", b"value=j"))
        put, qget, delete, post = srv.proposals
        assert (put.method, put.path, put.value, put.prev_index) == ("PUT", "/x/y", "b", 3)
        assert (put.ttl, put.expiration) == (10, 0)  # made absolute on apply, from cluster time
        assert (qget.method, qget.quorum, qget.wait) == ("QGET", True, True)
        assert (delete.method, delete.recursive, delete.dir) == ("DELETE", True, False)
        assert (post.method, post.path) == ("POST", "/q")

    run(t)


def test_parse_error_never_reaches_the_server() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        r = await one(port, req("PUT", "/v2/keys/a?ttl=x", b"value=1"))
        assert (r.status, r.header("X-Etcd-Index")) == (400, "0")
        assert b'"errorCode":202' in r.body and b'"index":0' in r.body
        r = await one(port, req("PUT", "/v2/keys/a", b"value=1&x=%zz"))
        assert (
            r.body
            == b'{"errorCode":210,"message":"Invalid POST form","cause":"invalid URL escape \\"%zz\\"","index":0}\n'
        )
        r = await one(port, req("PUT", "/v2/keys/a?refresh=true&ttl=1", b"value=1"))
        assert b'"errorCode":211' in r.body
        assert srv.proposals == []

    run(t)


def test_propose_failures() -> None:
    srv = FakeServer()
    srv.fail_with = V2Error(RAFT_INTERNAL, "etcdserver: request timed out")

    async def t(srv: FakeServer, port: int) -> None:
        r = await one(port, req("PUT", "/v2/keys/a", b"value=1"))
        assert r.status == 500
        assert (
            r.body
            == b'{"errorCode":300,"message":"Raft Internal Error","cause":"etcdserver: request timed out","index":0}\n'
        )
        srv.fail_with = V2Error(LEADER_ELECT)
        r = await one(port, req("DELETE", "/v2/keys/a"))
        assert r.status == 500 and b'"errorCode":301' in r.body

    run(t, srv)


def test_a_write_of_unknown_outcome_is_never_answered_as_failed() -> None:
    """The member stopped while the write may have been in the log: the connection closes with no
    answer (a client must treat it like a timeout), as a crashed member's would."""
    srv = FakeServer()
    srv.fail_with = OutcomeUnknown(RAFT_INTERNAL, "etcdserver: server stopped")

    async def t(srv: FakeServer, port: int) -> None:
        conn = await Conn.open(port)
        await conn.send(req("PUT", "/v2/keys/a", b"value=1"))
        assert await conn.read_all() == b""

    run(t, srv)


def test_not_found_method_not_allowed_options_redirect() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        r = await one(port, req("GET", "/foo"))
        assert (r.status, r.body, r.header("Content-Type")) == (
            404,
            b"404 page not found\n",
            "text/plain; charset=utf-8",
        )
        for path in ("/v2/keysfoo", "/v2", "/v2/stats/self/", "/v2/authx"):
            assert (await one(port, req("GET", path))).status == 404
        r = await one(port, req("PATCH", "/v2/keys/a"))
        assert (r.status, r.header("Allow"), r.body) == (
            405,
            "HEAD,GET,PUT,POST,DELETE",
            b"Method Not Allowed\n",
        )
        assert r.header("X-Content-Type-Options") == "nosniff"
        r = await one(port, req("OPTIONS", "/anything//at/all"))
        assert (r.status, r.header("Content-Length"), r.body) == (200, "0", b"")
        assert r.names == [*CORS, "Date", "Content-Length"]
        r = await one(port, req("GET", "/v2/keys/a//b/../c?x=1&y=<"))
        assert (r.status, r.header("Location")) == (301, "/v2/keys/a/c?x=1&y=<")
        assert r.body == b'<a href="/v2/keys/a/c?x=1&amp;y=&lt;">Moved Permanently</a>.\n\n'
        r = await one(port, req("PUT", "/v2/keys/a/./b"))
        assert (r.status, r.header("Location"), r.header("Content-Type"), r.body) == (
            301,
            "/v2/keys/a/b",
            None,
            b"",
        )
        r = await one(port, req("HEAD", "/v2/keys//a"), head=True)
        assert r.status == 301 and r.header("Content-Length") is None
        r = await one(port, req("GET", "/v2/keys/a%2F%2Fb"))
        assert (r.status, r.header("Location")) == (301, "/v2/keys/a/b")
        r = await one(port, req("GET", "/v2/keys/a%20b/"))
        assert r.status == 404 and b'"cause":"/a b"' in r.body
        r = await one(port, req("GET", "/v2/keys"))
        assert r.status == 404 and b'"cause":"/"' in r.body  # the fake has no root; the path is "/"

    run(t)


def test_other_endpoints() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        r = await one(port, req("GET", "/version"))
        assert (r.body, r.header("Content-Type")) == (
            b'{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}',
            "application/json",
        )
        r = await one(port, req("HEAD", "/version"), head=True)
        assert (r.status, r.header("Allow")) == (405, "GET")
        r = await one(port, req("GET", "/health"))
        assert (r.body, r.names[-2:]) == (b'{"health":"true"}', ["Content-Length", "Content-Type"])
        srv.healthy = False
        r = await one(port, req("GET", "/health"))
        assert (r.status, r.body, r.header("Content-Type")) == (
            503,
            b'{"health":"false"}\n',
            "text/plain; charset=utf-8",
        )
        r = await one(port, req("GET", "/v2/machines"))
        assert r.body == b"http://127.0.0.1:2379"
        r = await one(port, req("POST", "/v2/machines"))
        assert (r.status, r.header("Allow")) == (405, "GET,HEAD")
        r = await one(port, req("GET", "/v2/stats/leader"))
        assert r.body == b'{"leader":"69db9e7e424953fc","followers":{}}'
        r = await one(port, req("GET", "/v2/stats/self"))
        assert r.body == srv.stats_self()
        r = await one(port, req("GET", "/v2/stats/store"))
        assert r.body == srv.store.stats_json() and r.header("Content-Type") == "application/json"

    run(t)


def test_members_api() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        r = await one(port, req("GET", "/v2/members"))
        assert r.body.startswith(
            b'{"members":[{"id":"1234","name":"","peerURLs":["http://127.0.0.1:2480"],"clientURLs":[]},'
        )
        assert r.body.endswith(b"}]}\n")
        r = await one(port, req("GET", "/v2/members/leader"))
        assert r.body.startswith(b'{"id":"69db9e7e424953fc","name":"default"') and r.body.endswith(b"\n")
        r = await one(port, req("GET", "/v2/members/zz"))
        assert (r.status, r.body) == (404, b'{"message":"Not found"}')
        json = "Content-Type: application/json\r\n"
        r = await one(
            port, req("POST", "/v2/members", b'{"peerURLs":["http://10.0.0.1:2380"]}', form=False, extra=json)
        )
        assert (r.status, r.body) == (
            201,
            b'{"id":"abc","name":"","peerURLs":["http://10.0.0.1:2380"],"clientURLs":[]}\n',
        )
        r = await one(
            port,
            req("POST", "/v2/members", b'{"peerURLs":["http://127.0.0.1:2380"]}', form=False, extra=json),
        )
        assert (r.status, r.body) == (409, b'{"message":"membership: peerURL exists"}')
        r = await one(port, req("POST", "/v2/members", b"{}", form=True))
        assert (r.status, r.body) == (
            415,
            b'{"message":"Bad Content-Type application/x-www-form-urlencoded, accept application/json"}',
        )
        r = await one(port, req("POST", "/v2/members", b"gg", form=False, extra=json))
        assert (r.status, r.body) == (
            400,
            b'{"message":"invalid character \'g\' looking for beginning of value"}',
        )
        r = await one(port, req("POST", "/v2/members", b'{"peerURLs":["not a url"]}', form=False, extra=json))
        assert r.body == b'{"message":"URL scheme must be http, https, unix, or unixs: not a url"}'
        r = await one(
            port, req("PUT", "/v2/members/abc", b'{"peerURLs":["http://1.2.3.4:5"]}', form=False, extra=json)
        )
        assert (r.status, r.body) == (500, b'{"message":"Internal Server Error"}')
        r = await one(port, req("DELETE", "/v2/members/abc"))
        assert (r.status, r.body, r.header("Content-Length")) == (204, b"", None)
        r = await one(port, req("DELETE", "/v2/members/abc"))
        assert (r.status, r.body) == (404, b'{"message":"No such member: abc"}')
        r = await one(port, req("DELETE", "/v2/members/xyz"))
        assert (r.status, r.body) == (404, b'{"message":"No such member: xyz"}')
        r = await one(port, req("DELETE", "/v2/members"))
        assert (r.status, r.header("Allow"), r.header("X-Etcd-Cluster-Id")) == (405, None, "5a03e5414ff8f8ed")
        r = await one(port, req("PATCH", "/v2/members/1"))
        assert (r.status, r.header("Allow")) == (405, "GET,POST,DELETE,PUT")

    run(t)


def test_long_poll_watch_and_disconnect() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        c = await Conn.open(port)
        await c.send(req("GET", "/v2/keys/w?wait=true"))
        head = await c.response(head=True)  # headers arrive before any event
        assert head.header("Transfer-Encoding") == "chunked" and head.header("X-Etcd-Index") == "3"
        assert head.header("Content-Length") is None
        await one(port, req("PUT", "/v2/keys/w", b"value=1"))
        body = await asyncio.wait_for(c.reader.readuntil(b"0\r\n\r\n"), 5)
        assert body.startswith(b'54\r\n{"action":"set"') and body.endswith(b"}\n\r\n0\r\n\r\n")
        # Keep-alive: the connection serves the next request.
        r = await c.request(req("GET", "/v2/keys/w"))
        assert r.status == 200
        # A client that goes away mid-watch leaves no watcher behind.
        await c.send(req("GET", "/v2/keys/w?wait=true"))
        await c.response(head=True)
        assert len(srv.store.watchers) == 1
        c.close()
        for _ in range(100):
            if not srv.store.watchers:
                break
            await asyncio.sleep(0.01)
        assert srv.store.watchers == []

    run(t)


def test_stream_watch_and_history() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        await one(port, req("PUT", "/v2/keys/s", b"value=0"))
        c = await Conn.open(port)
        await c.send(req("GET", "/v2/keys/s?wait=true&stream=true"))
        await c.response(head=True)
        for i in (1, 2):
            await one(port, req("PUT", "/v2/keys/s", b"value=%d" % i))
            size = int((await asyncio.wait_for(c.reader.readuntil(b"\r\n"), 5))[:-2], 16)
            event = await c.reader.readexactly(size + 2)
            assert b'"value":"%d"' % i in event and event.endswith(b"\n\r\n")
        c.close()
        # Served from history: one event, end of response.
        r = await one(port, req("GET", "/v2/keys/s?wait=true&waitIndex=4"))
        assert r.status == 200 and b'"value":"0"' in r.body and r.header("X-Etcd-Index") == "6"

    run(t)


def test_quorum_disables_wait_and_head_with_wait_is_an_error() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        await one(port, req("PUT", "/v2/keys/a", b"value=1"))
        r = await one(port, req("GET", "/v2/keys/a?wait=true&quorum=true"))
        assert r.status == 200 and b'"action":"get"' in r.body
        r = await one(port, req("HEAD", "/v2/keys/a?wait=true"), head=True)
        assert r.status == 400

    run(t)


def test_pipelining_keeps_order_and_sees_writes() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        c = await Conn.open(port)
        batch = b"".join(req("PUT", "/v2/keys/p", b"value=%d" % i) for i in range(40)) + req(
            "GET", "/v2/keys/p"
        )
        await c.send(batch)
        for i in range(40):
            r = await c.response()
            assert b'"value":"%d"' % i in r.body
        r = await c.response()
        assert b'"action":"get"' in r.body and b'"value":"39"' in r.body
        c.close()

    run(t)


def test_http10_and_connection_close() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        await one(port, req("PUT", "/v2/keys/a", b"value=1"))
        c = await Conn.open(port)
        await c.send(b"GET /v2/keys/a HTTP/1.0\r\n\r\n")
        raw = await c.read_all()
        assert raw.startswith(b"HTTP/1.0 200 OK\r\n") and b"Connection" not in raw and raw.endswith(b"}\n")
        c = await Conn.open(port)
        r = await c.request(b"GET /v2/keys/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert r.header("Connection") == "keep-alive"
        assert (await c.request(b"GET /v2/keys/a HTTP/1.0\r\n\r\n")).status == 200
        assert await c.closed_by_server()
        c = await Conn.open(port)
        r = await c.request(req("GET", "/v2/keys/a", extra="Connection: close\r\n"))
        assert r.header("Connection") == "close" and await c.closed_by_server()
        # HTTP/1.0 watch: no chunking, the body ends with the connection.
        c = await Conn.open(port)
        await c.send(b"GET /v2/keys/a?wait=true&waitIndex=1 HTTP/1.0\r\n\r\n")
        raw = await c.read_all()
        assert b"Transfer-Encoding" not in raw and raw.endswith(b'"createdIndex":4}}\n')

    run(t)


def test_large_bodies_are_chunked_like_go() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        value = b"x" * 3000
        r = await one(port, req("PUT", "/v2/keys/big", b"value=" + value))
        assert r.header("Transfer-Encoding") == "chunked" and r.header("Content-Length") is None
        assert value in r.body
        r = await one(port, req("HEAD", "/v2/keys/big"), head=True)
        assert r.header("Transfer-Encoding") is None and r.header("Content-Length") is None

    run(t)


def test_malformed_requests_get_go_400_and_close() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        for bad in (
            b"GARBAGE\r\n\r\n",
            b"GET /v2/keys/a%zz HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /v2/keys/a% HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /v2/keys/a HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
            b"GET /v2/keys/a HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        ):
            c = await Conn.open(port)
            await c.send(bad)
            raw = await c.read_all()
            assert raw == (
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
                b"400 Bad Request"
            ), bad
        c = await Conn.open(port)
        await c.send(b"GET /v2/keys/a HTTP/1.1\r\n\r\n")
        assert (await c.read_all()).endswith(b"\r\n\r\n400 Bad Request: missing required Host header")
        # A good request before the garbage is still answered first.
        c = await Conn.open(port)
        await c.send(req("GET", "/version") + b"NONSENSE\r\n\r\n")
        raw = await c.read_all()
        assert raw.startswith(b"HTTP/1.1 200 OK") and raw.endswith(b"400 Bad Request")
        assert srv.proposals == []

    run(t)


def test_only_http_1_x_is_served() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        bad_request = (
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
            b"400 Bad Request"
        )
        put = req("PUT", "/v2/keys/after", b"value=1")
        for bad in (
            b"GET /v2/keys/a\r\n\r\n",  # no version: HTTP/0.9 to httptools
            b"PUT /v2/keys/a\r\n\r\n" + put,
            b"GET /v2/keys/a HTTP/0.9\r\n\r\n",
            b"PUT /v2/keys/a HTTP/2.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + put,
        ):
            c = await Conn.open(port)
            await c.send(bad)
            assert await c.read_all() == bad_request, bad
        # The same after a good request on the connection.
        c = await Conn.open(port)
        await c.send(req("GET", "/version") + b"GET /v2/keys/a\r\n\r\n" + put)
        raw = await c.read_all()
        assert raw.startswith(b"HTTP/1.1 200 OK") and raw.endswith(b"}" + bad_request)
        assert srv.proposals == []

    run(t)


def test_first_line_of_a_connection_is_limited_like_etcd_cmux() -> None:
    too_long = (
        b"HTTP/1.1 414 URI Too Long\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
        b"414 URI Too Long"
    )

    def put_line(length: int) -> bytes:
        """A PUT whose request line is ``length`` bytes before its CRLF."""
        line = b"PUT /v2/keys/" + b"k" * (length - 22) + b" HTTP/1.1"
        assert len(line) == length
        return line + b"\r\nHost: x\r\nContent-Length: 0\r\n\r\n"

    async def t(srv: FakeServer, port: int) -> None:
        # 4094 bytes + CRLF fill cmux's 4096-byte buffer exactly: served.
        assert (await one(port, put_line(4094))).status == 201
        assert len(srv.proposals) == 1
        # One byte more is refused before anything is parsed, whole or sent in pieces.
        c = await Conn.open(port)
        await c.send(put_line(4095))
        assert await c.read_all() == too_long
        c = await Conn.open(port)
        data = put_line(100_000)
        for start in range(0, 5000, 1000):
            await c.send(data[start : start + 1000])
        assert await c.read_all() == too_long
        # Without a line end yet: refused once 4096 bytes have come.
        c = await Conn.open(port)
        await c.send(b"GET /" + b"k" * 4090)
        assert not await c.closed_by_server(0.2)
        await c.send(b"k")
        assert await c.read_all() == too_long
        assert len(srv.proposals) == 1
        # Later requests on a connection have only the 1 MiB header limit, as behind etcd's cmux.
        c = await Conn.open(port)
        assert (await c.request(req("GET", "/version"))).status == 200
        assert (await c.request(put_line(100_000))).status == 201
        c.close()
        assert len(srv.proposals) == 2

    run(t)


def test_huge_headers_431_and_huge_body_210() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        c = await Conn.open(port)
        ok = b"GET /version HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * ((1 << 20) - 100) + b"\r\n\r\n"
        assert (await c.request(ok)).status == 200
        c.writer.write(b"GET /version HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * (2 << 20))
        raw = await c.read_all()
        assert raw.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
        c = await Conn.open(port)
        body = b"value=" + b"x" * (20 << 20)
        c.writer.write(req("PUT", "/v2/keys/huge", body))
        r = await c.response()
        assert r.status == 400 and r.header("Connection") == "close"
        assert (
            r.body
            == b'{"errorCode":210,"message":"Invalid POST form","cause":"http: POST too large","index":0}\n'
        )
        assert srv.proposals == []

    run(t)


def test_slow_and_chunked_and_vanishing_clients() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        c = await Conn.open(port)
        for b in req("PUT", "/v2/keys/slow", b"value=%C3%A9%ff"):
            await c.send(bytes([b]))
        r = await c.response()
        assert r.status == 201 and '"value":"é\ufffd"'.encode() in r.body
        c.close()
        chunked = (
            b"PUT /v2/keys/ch HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nval\r\n4\r\nue=c\r\n0\r\n\r\n"
        )
        r = await one(port, chunked)
        assert r.status == 201 and b'"value":"c"' in r.body
        # Body shorter than Content-Length, then gone: nothing is proposed.
        c = await Conn.open(port)
        await c.send(
            b"PUT /v2/keys/v HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 50\r\n\r\nvalue=1"
        )
        c.close()
        # Vanishing while the write is being made durable: no crash, the write still completes.
        srv.hold = []
        c = await Conn.open(port)
        await c.send(req("PUT", "/v2/keys/gone", b"value=1"))
        while not srv.hold:
            await asyncio.sleep(0.01)
        c.close()
        await asyncio.sleep(0.05)
        done, pending = srv.hold.pop()
        srv.hold = None
        srv.complete(done, pending)
        await asyncio.sleep(0.05)
        # Body longer than Content-Length: the excess is a malformed next request.
        c = await Conn.open(port)
        await c.send(
            b"PUT /v2/keys/l HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 7\r\n\r\nvalue=1garbage\r\n\r\n"
        )
        raw = await c.read_all()
        assert raw.startswith(b"HTTP/1.1 201 Created") and raw.endswith(b"400 Bad Request")
        assert [p.path for p in srv.proposals] == ["/slow", "/ch", "/gone", "/l"]
        assert (await one(port, req("GET", "/v2/keys/gone"))).status == 200

    run(t)


def test_cors_with_an_origin_list_and_disabled() -> None:
    async def t(srv: FakeServer, port: int) -> None:
        r = await one(port, req("GET", "/version", extra="Origin: http://ok\r\n"))
        assert r.header("Access-Control-Allow-Origin") == "http://ok"
        r = await one(port, req("GET", "/version", extra="Origin: http://evil\r\n"))
        assert r.header("Access-Control-Allow-Origin") is None

    run(t, FakeServer(cors={"http://ok"}))

    async def none(srv: FakeServer, port: int) -> None:
        r = await one(port, req("GET", "/version"))
        assert r.names == ["Content-Type", "Date", "Content-Length"]

    run(none, FakeServer(cors=set()))
