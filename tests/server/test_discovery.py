"""The discovery protocol client (``--discovery``) and the DNS SRV bootstrap (``--discovery-srv``).

The protocol tests run against a real single-member fastkv as the discovery service, and again
against a real etcd when one is installed (proving the requests are etcd's); endpoints that
misbehave are a small local HTTP server.  The SRV tests ask tests/support/dnsserver.py.
"""

from __future__ import annotations

import http.server
import itertools
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import orjson
import pytest

from fastkv.server import bootstrap, discovery, srv
from fastkv.server.config import parse_config
from fastkv.server.discovery import Discovery, DiscoveryError
from fastkv.server.identity import format_id, member_id_for
from tests.support.dnsserver import DNSServer
from tests.support.procs import free_port, have_etcd, start_server

pytestmark = pytest.mark.slow

_tokens = itertools.count()
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(method: str, url: str, form: dict[str, str] | None = None) -> tuple[int, dict]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with NO_PROXY.open(req, timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


@pytest.fixture(scope="module", params=["fastkv", "etcd"])
def endpoint(request, tmp_path_factory) -> Iterator[str]:
    if request.param == "etcd" and not have_etcd():
        pytest.skip("etcd is not installed")
    server = start_server(request.param, str(tmp_path_factory.mktemp(f"disc-{request.param}")))
    yield server.url
    server.stop()


def new_token(endpoint: str, size: str | int | None) -> str:
    """A fresh discovery URL on ``endpoint`` whose size key holds ``size`` (None: no size key)."""
    durl = f"{endpoint}/v2/keys/_etcd/registry/tok{next(_tokens)}-{time.monotonic_ns()}"
    if size is not None:
        status, _ = call("PUT", f"{durl}/_config/size", {"value": str(size)})
        assert status == 201
    return durl


def peer(i: int) -> str:
    return f"http://127.0.0.1:{23000 + i}"


def join(durl: str, name: str, urls: list[str], **kw) -> str:
    mid = member_id_for(urls, durl)
    return Discovery(durl, mid, backoff_base=0.001, **kw).join_cluster(",".join(f"{name}={u}" for u in urls))


def join_all(durl: str, members: dict[str, list[str]]) -> dict[str, str | Exception]:
    results: dict[str, str | Exception] = {}

    def run(name: str, urls: list[str]) -> None:
        try:
            results[name] = join(durl, name, urls)
        except Exception as e:  # noqa: BLE001 - reported to the test
            results[name] = e

    threads = [threading.Thread(target=run, args=item) for item in members.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return results


def registrations(durl: str) -> list[dict]:
    status, body = call("GET", durl)
    assert status == 200
    nodes = [n for n in body["node"].get("nodes", []) if not n["key"].endswith("/_config")]
    return sorted(nodes, key=lambda n: n["createdIndex"])


def reason(excinfo: pytest.ExceptionInfo) -> str:
    return str(excinfo.value)


# -- the protocol against a real endpoint ------------------------------------------------------


def test_three_members_register_concurrently(endpoint):
    durl = new_token(endpoint, 3)
    members = {f"n{i}": [peer(i)] for i in range(3)}
    results = join_all(durl, members)
    regs = registrations(durl)
    expected = ",".join(n["value"] for n in regs)
    assert results == {name: expected for name in members}
    assert sorted(expected.split(",")) == sorted(f"{n}={u[0]}" for n, u in members.items())
    # Each registration is keyed by the member id derived with the discovery URL as token.
    by_key = {n["key"].rsplit("/", 1)[1]: n["value"] for n in regs}
    assert by_key == {format_id(member_id_for(u, durl)): f"{n}={u[0]}" for n, u in members.items()}


def test_waits_until_the_cluster_is_complete(endpoint):
    durl = new_token(endpoint, 2)
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(join(durl, "a", [peer(1)])))
    t.start()
    deadline = time.monotonic() + 10
    while not registrations(durl) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    assert t.is_alive() and not result  # registered, now watching for the second member
    second = join(durl, "b", [peer(2), peer(3)])
    t.join(10)
    assert result == [second] == [f"a={peer(1)},b={peer(2)},b={peer(3)}"]


def test_cluster_full_before_registering(endpoint):
    durl = new_token(endpoint, 1)
    first = join(durl, "a", [peer(1)])
    assert first == f"a={peer(1)}"
    with pytest.raises(DiscoveryError) as e:
        join(durl, "b", [peer(2)])
    assert reason(e) == "failed to join discovery cluster (discovery: cluster is full)"
    assert e.value.reason == "discovery: cluster is full"
    assert [n["value"] for n in registrations(durl)] == [f"a={peer(1)}"]  # b never registered


def test_size_key_not_found(endpoint):
    with pytest.raises(DiscoveryError) as e:
        join(new_token(endpoint, None), "a", [peer(1)])
    assert reason(e) == "failed to join discovery cluster (discovery: size key not found)"


@pytest.mark.parametrize("size", ["three", "-1", "3.0", " 3", ""])
def test_size_key_bad(endpoint, size):
    with pytest.raises(DiscoveryError) as e:
        join(new_token(endpoint, size), "a", [peer(1)])
    assert reason(e) == "failed to join discovery cluster (discovery: size key is bad)"


def test_duplicate_id_after_a_crash_before_the_wal(endpoint):
    """A member that registered and died before writing its WAL cannot register again (etcd)."""
    durl = new_token(endpoint, 3)
    mid = format_id(member_id_for([peer(1)], durl))
    status, _ = call("PUT", f"{durl}/{mid}?prevExist=false", {"value": f"a={peer(1)}"})
    assert status == 201
    with pytest.raises(DiscoveryError) as e:
        join(durl, "a", [peer(1)])
    assert reason(e) == "failed to join discovery cluster (discovery: found duplicate id)"


def test_duplicate_name(endpoint):
    durl = new_token(endpoint, 2)
    call("PUT", f"{durl}/0123abcd", {"value": f"a={peer(9)}"})
    with pytest.raises(DiscoveryError) as e:
        join(durl, "a", [peer(1)])
    assert reason(e) == "failed to join discovery cluster (discovery: found duplicate name)"


@pytest.mark.parametrize("value", ["x=not-a-url", "x=http://127.0.0.1:1/path", "x"])
def test_invalid_url(endpoint, value):
    durl = new_token(endpoint, 2)
    call("PUT", f"{durl}/0123abcd", {"value": value})
    with pytest.raises(DiscoveryError) as e:
        join(durl, "a", [peer(1)])
    assert reason(e) == "failed to join discovery cluster (discovery: invalid URL)"


def test_bootstrap_config_fills_the_initial_cluster(endpoint, tmp_path):
    durl = new_token(endpoint, 1)
    cfg = parse_config(
        ["--name", "solo", "--data-dir", str(tmp_path / "d"), "--discovery", durl,
         "--initial-advertise-peer-urls", f"{peer(2)},{peer(1)}",
         "--listen-client-urls", "http://127.0.0.1:2", "--advertise-client-urls", "http://127.0.0.1:2"],
        {},
    )  # fmt: skip
    assert cfg.initial_cluster == []
    out = discovery.bootstrap_config(cfg)
    assert out.initial_cluster == [("solo", peer(1)), ("solo", peer(2))]
    assert out.discovery == durl and out.initial_cluster_token_for_ids() == durl
    key = registrations(durl)[0]["key"].rsplit("/", 1)[1]
    assert key == format_id(member_id_for([peer(1), peer(2)], durl))


def _discovery_cfg(durl: str, tmp_path, *extra: str):
    return parse_config(
        ["--name", "late", "--data-dir", str(tmp_path / "late"), "--discovery", durl,
         "--initial-advertise-peer-urls", peer(7), *extra],
        {},
    )  # fmt: skip


def test_full_cluster_messages_of_the_server(endpoint, tmp_path):
    durl = new_token(endpoint, 1)
    join(durl, "a", [peer(1)])
    with pytest.raises(DiscoveryError) as e:
        bootstrap.resolve_initial_cluster(_discovery_cfg(durl, tmp_path, "--discovery-fallback", "exit"))
    assert str(e.value) == "failed to join discovery cluster (discovery: cluster is full)"
    with pytest.raises(bootstrap.StartupError) as e2:
        bootstrap.resolve_initial_cluster(_discovery_cfg(durl, tmp_path))
    text = str(e2.value)
    assert text.startswith("failed to join discovery cluster (discovery: cluster is full); ")
    assert "no proxy mode" in text and "--discovery-fallback exit" in text and "\n" not in text


def test_duplicate_id_message_of_the_server(endpoint, tmp_path):
    durl = new_token(endpoint, 2)
    call("PUT", f"{durl}/{format_id(member_id_for([peer(7)], durl))}", {"value": f"late={peer(7)}"})
    with pytest.raises(bootstrap.StartupError) as e:
        bootstrap.resolve_initial_cluster(_discovery_cfg(durl, tmp_path))
    text = str(e.value)
    assert text.startswith('failed to join discovery cluster (discovery: found duplicate id): member "late"')
    assert durl in text and "\n" not in text


# -- misbehaving endpoints, retries and --discovery-proxy ---------------------------------------


class FakeEndpoint:
    """An HTTP server that either answers every request with ``static`` (status, body) or
    forwards it to ``target`` (then it also works as an HTTP proxy: absolute request URIs),
    answering the first ``fail_first`` requests with 503 instead."""

    def __init__(self, static: tuple[int, bytes] | None = None, target: str = "", fail_first: int = 0):
        self.static, self.target, self.fail_first = static, target, fail_first
        self.requests: list[tuple[str, str]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                fake.requests.append((self.command, self.path))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if fake.static is not None:
                    return self._send(fake.static[0], fake.static[1], {})
                if fake.fail_first > 0:
                    fake.fail_first -= 1
                    return self._send(503, b"busy", {})
                u = urllib.parse.urlsplit(self.path)
                url = fake.target + u.path + (f"?{u.query}" if u.query else "")
                req = urllib.request.Request(url, data=body or None, method=self.command)
                if body:
                    req.add_header("Content-Type", self.headers["Content-Type"])
                try:
                    with NO_PROXY.open(req, timeout=30) as r:
                        status, headers, data = r.status, r.headers, r.read()
                except urllib.error.HTTPError as e:
                    status, headers, data = e.code, e.headers, e.read()
                self._send(status, data, {"X-Etcd-Index": headers.get("X-Etcd-Index", "")})

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    if v:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = _any  # noqa: N815 - http.server's names

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    "static",
    [(404, b"<html>404 page not found</html>"), (200, b"hello"), (200, b"[1,2]"), (200, b"{}"), (404, b"{}")],
)
def test_bad_discovery_endpoint(static):
    fake = FakeEndpoint(static=static)
    try:
        with pytest.raises(DiscoveryError) as e:
            join(f"{fake.url}/v2/keys/_etcd/registry/t", "a", [peer(1)])
        assert reason(e) == "failed to join discovery cluster (discovery: bad discovery endpoint)"
    finally:
        fake.close()


def test_server_errors_are_retried_with_exponential_backoff(endpoint):
    durl = new_token(endpoint, 1)
    fake = FakeEndpoint(target=endpoint, fail_first=3)
    sleeps: list[float] = []
    try:
        fdurl = fake.url + urllib.parse.urlsplit(durl).path
        d = Discovery(fdurl, member_id_for([peer(1)], fdurl), backoff_base=0.001, sleep=sleeps.append)
        assert d.join_cluster(f"a={peer(1)}") == f"a={peer(1)}"
    finally:
        fake.close()
    assert sleeps == [0.002, 0.004, 0.008]


def test_connection_errors_back_off_up_to_a_cap():
    port = free_port()  # nothing listens there
    sleeps: list[float] = []
    durl = f"http://127.0.0.1:{port}/v2/keys/_etcd/registry/t"
    d = Discovery(durl, 1, backoff_base=1e-6, max_retries=11, sleep=sleeps.append)
    with pytest.raises(DiscoveryError) as e:
        d.join_cluster(f"a={peer(1)}")
    assert reason(e) == "failed to join discovery cluster (discovery: too many retries)"
    assert sleeps == pytest.approx([1e-6 * 2 ** min(n, 8) for n in range(1, 12)])


def test_discovery_proxy_carries_every_request(endpoint):
    durl = new_token(endpoint, 1)
    proxy = FakeEndpoint(target=endpoint)
    try:
        host = urllib.parse.urlsplit(proxy.url).netloc
        d = Discovery(durl, member_id_for([peer(1)], durl), proxy=host)  # host:port means http://
        assert d.join_cluster(f"a={peer(1)}") == f"a={peer(1)}"
    finally:
        proxy.close()
    assert proxy.requests and all(path.startswith(durl) for _, path in proxy.requests)
    methods = [m for m, _ in proxy.requests]
    assert methods.count("PUT") == 1 and "prevExist=false" in proxy.requests[methods.index("PUT")][1]


# -- DNS SRV ----------------------------------------------------------------------------------


@pytest.fixture
def dns_records() -> Iterator[tuple[dict, dict[str, str]]]:
    records: dict = {"m0.example.test": [("A", "127.0.0.1")], "m1.example.test": [("A", "127.0.0.2")]}
    with DNSServer(records) as server:
        yield records, {srv.DNS_SERVER_ENV: server.address}


def srv_cfg(tmp_path, name: str, peer_url: str, *extra: str):
    return parse_config(
        ["--name", name, "--data-dir", str(tmp_path / name), "--discovery-srv", "example.test",
         "--initial-advertise-peer-urls", peer_url, "--initial-cluster-token", "t1", *extra],
        {},
    )  # fmt: skip


def test_srv_http_only_records(dns_records, tmp_path):
    records, env = dns_records
    records["_etcd-server._tcp.example.test"] = [
        ("SRV", 0, 0, 2380, "m0.example.test"),
        ("SRV", 0, 0, 2380, "m1.example.test"),
        ("SRV", 0, 0, 2390, "127.0.0.1"),
    ]
    out = srv.bootstrap_config(srv_cfg(tmp_path, "me", "http://127.0.0.2:2380"), env)
    # Placeholder names follow the answer's order, which DNS leaves open for equal priorities.
    by_url = {url: name for name, url in out.initial_cluster}
    assert len(out.initial_cluster) == 3 and by_url["http://m1.example.test:2380"] == "me"
    assert {by_url["http://m0.example.test:2380"], by_url["http://127.0.0.1:2390"]} == {"0", "1"}
    assert out.initial_cluster_token_for_ids() == "t1"


def test_srv_combines_ssl_and_plain_records_with_a_name_suffix(dns_records, tmp_path):
    records, env = dns_records
    records["_etcd-server-ssl-blue._tcp.example.test"] = [("SRV", 0, 0, 2380, "m0.example.test")]
    records["_etcd-server-blue._tcp.example.test"] = [("SRV", 0, 0, 2380, "m1.example.test")]
    records["_etcd-server._tcp.example.test"] = [("SRV", 0, 0, 9999, "m1.example.test")]  # not asked
    cfg = srv_cfg(tmp_path, "me", "http://127.0.0.2:2380", "--discovery-srv-name", "blue")
    out = srv.bootstrap_config(cfg, env)
    assert sorted(out.initial_cluster) == [
        ("0", "https://m0.example.test:2380"),
        ("me", "http://m1.example.test:2380"),
    ]


def test_srv_local_member_missing(dns_records, tmp_path):
    records, env = dns_records
    records["_etcd-server._tcp.example.test"] = [("SRV", 0, 0, 2380, "m0.example.test")]
    with pytest.raises(srv.SRVError) as e:
        srv.bootstrap_config(srv_cfg(tmp_path, "me", "http://127.0.0.2:2380"), env)
    assert (
        str(e.value) == 'error setting up initial cluster: cannot find local etcd member "me" in SRV records'
    )


def test_srv_scheme_mismatch(dns_records, tmp_path):
    records, env = dns_records
    records["_etcd-server-ssl._tcp.example.test"] = [("SRV", 0, 0, 2380, "m1.example.test")]
    with pytest.raises(srv.SRVError) as e:
        srv.bootstrap_config(srv_cfg(tmp_path, "me", "http://127.0.0.2:2380"), env)
    dns = env[srv.DNS_SERVER_ENV]
    assert str(e.value) == (
        "error setting up initial cluster: error querying DNS SRV records for _etcd-server-ssl bootstrap at "
        "https://m1.example.test:2380 from DNS for etcd-server-ssl has scheme mismatch with expected peer "
        "http://127.0.0.2:2380; error querying DNS SRV records for _etcd-server lookup "
        f"_etcd-server._tcp.example.test on {dns}: no such host"
    )


def test_srv_no_records(dns_records, tmp_path):
    _, env = dns_records
    with pytest.raises(srv.SRVError) as e:
        srv.bootstrap_config(srv_cfg(tmp_path, "me", "http://127.0.0.2:2380"), env)
    dns = env[srv.DNS_SERVER_ENV]
    assert str(e.value) == (
        "error setting up initial cluster: error querying DNS SRV records for _etcd-server-ssl lookup "
        f"_etcd-server-ssl._tcp.example.test on {dns}: no such host; error querying DNS SRV records for "
        f"_etcd-server lookup _etcd-server._tcp.example.test on {dns}: no such host"
    )


def test_srv_client_endpoints(dns_records):
    records, env = dns_records
    dns = env[srv.DNS_SERVER_ENV]
    with pytest.raises(LookupError) as e:
        srv.client_endpoints("example.test", environ=env)
    assert str(e.value) == (
        f"dns lookup errors: lookup _etcd-client-ssl._tcp.example.test on {dns}: no such host and "
        f"lookup _etcd-client._tcp.example.test on {dns}: no such host"
    )
    records["_etcd-client-ssl._tcp.example.test"] = [("SRV", 0, 0, 2379, "m0.example.test")]
    records["_etcd-client._tcp.example.test"] = [("SRV", 0, 0, 2379, "m1.example.test")]
    records["_etcd-client-ssl-blue._tcp.example.test"] = [("SRV", 0, 0, 4001, "m2.example.test")]
    warnings: list[str] = []
    # etcd's client keeps the record's final dot in the host.
    assert srv.client_endpoints("example.test", warn=warnings.append, environ=env) == [
        "https://m0.example.test.:2379"
    ]
    assert warnings == ['ignoring discovered insecure endpoint "http://m1.example.test.:2379"']
    assert srv.client_endpoints("example.test", insecure=True, environ=env) == [
        "https://m0.example.test.:2379",
        "http://m1.example.test.:2379",
    ]
    assert srv.client_endpoints("example.test", "blue", environ=env) == ["https://m2.example.test.:4001"]


@pytest.mark.parametrize(
    ("value", "server", "port"),
    [
        ("127.0.0.1:5353", "127.0.0.1", 5353),
        ("127.0.0.1", "127.0.0.1", 53),
        ("[::1]:54", "::1", 54),
        ("::1", "::1", 53),
    ],
)
def test_dns_server_variable(value, server, port):
    resolver = srv.make_resolver({srv.DNS_SERVER_ENV: value})
    assert ([str(ns) for ns in resolver.nameservers], resolver.port) == ([server], port)
