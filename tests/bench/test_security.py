"""The TLS and auth scenarios' pieces without real servers: names, server command lines, the auth
set-up against a scripted HTTP server, the credentials' way into wrk, and the report's comparison."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fastkv.bench import cli, report, servers, wrk
from fastkv.bench.certs import TLSFiles
from fastkv.bench.runner import Runner
from fastkv.bench.scenarios import (
    DEFAULT,
    GROUPS,
    SECURITY,
    RunResult,
    duration_for,
    expand,
    resolve,
    variant_base,
)

FILES = TLSFiles("/run/x/ca.pem", "/run/x/server.pem", "/run/x/server-key.pem")

# -- names ---------------------------------------------------------------------------------------


def test_security_scenarios() -> None:
    assert [s.name for s in SECURITY] == ["tls-put-64", "tls-get-64", "auth-put-64", "auth-get-64"]
    tls_put, tls_get, auth_put, auth_get = SECURITY
    for s, mode in ((tls_put, "put"), (tls_get, "get"), (auth_put, "put"), (auth_get, "get")):
        plain = resolve(f"{mode}-64")
        assert (s.kind, s.mode, s.connections, s.metric, s.members) == ("wrk", mode, 64, "rps", 1)
        assert (s.keyspace, s.preload, s.value_bytes) == (plain.keyspace, plain.preload, plain.value_bytes)
        assert s.title.startswith(plain.title + ", ")
    assert tls_put.tls and not tls_put.auth and auth_get.auth and not auth_get.tls
    assert (tls_put.min_duration_s, auth_put.min_duration_s) == (0, 10)
    assert (duration_for(tls_get, 5), duration_for(auth_get, 5), duration_for(auth_get, 12)) == (5, 10, 12)
    assert not any(s.tls or s.auth for s in DEFAULT)  # --all unchanged


def test_patterns_and_group() -> None:
    s = resolve("tls-qget-16")
    assert (s.tls, s.mode, s.connections, s.name) == (True, "qget", 16, "tls-qget-16")
    s = resolve("auth-put-4")
    assert (s.auth, s.tls, s.mode, s.connections) == (True, False, "put", 4)
    assert [s.name for s in expand("security")] == ["put-64", "get-64", *[s.name for s in SECURITY]]
    assert expand("tls-get-64") == [resolve("tls-get-64")]
    assert variant_base("tls-put-64") == ("tls", "put-64")
    assert variant_base("auth-qget-8") == ("auth", "qget-8")
    assert variant_base("put-64") is None and variant_base("cluster-put-leader-64") is None
    with pytest.raises(ValueError, match="groups: security"):
        resolve("tls-watch-100")


def test_cli_group_without_duplicates() -> None:
    a = cli.parser().parse_args(["run", "-s", "put-64", "-s", "security", "-s", "auth-put-8"])
    names = [s.name for s in cli.scenarios_from(a)]
    assert names == [
        "put-64",
        "get-64",
        "tls-put-64",
        "tls-get-64",
        "auth-put-64",
        "auth-get-64",
        "auth-put-8",
    ]
    a = cli.parser().parse_args(["run", "-s", "security", "--ca-file", "/x/ca.pem"])
    assert a.ca_file == "/x/ca.pem"


def test_list_names_the_group(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "group security (-s security): put-64 get-64 tls-put-64 tls-get-64 auth-put-64 auth-get-64" in out
    assert "tls-put-64" in out.split("not in --all:")[1]


# -- server command lines ------------------------------------------------------------------------


def _argv(kind: str, tls: TLSFiles | None, extra: list[str] | None = None) -> list[str]:
    return servers.member_argv(
        kind,
        "m0",
        "/d/data",
        "https://127.0.0.1:2379",
        "http://127.0.0.1:2380",
        "m0=http://127.0.0.1:2380",
        extra,
        tls,
    )


def test_tls_argv_is_the_same_for_both_systems() -> None:
    fk, et = _argv("fastkv", FILES), _argv("etcd", FILES)
    assert fk[:3] == [fk[0], "-m", "fastkv.cmd.server"] and et[:2] == ["etcd", "--enable-v2"]
    token = fk.index("--initial-cluster-token")
    assert (fk[token + 1], et[et.index("--initial-cluster-token") + 1]) == ("bench-fastkv", "bench-etcd")
    assert fk[3:token] + fk[token + 2 :] == et[2 : token - 1] + et[token + 1 :]  # same flags, same files
    tail = et[2:]
    i = tail.index("--cert-file")
    assert tail[i : i + 4] == ["--cert-file", FILES.cert_file, "--key-file", FILES.key_file]
    assert tail[tail.index("--listen-client-urls") + 1] == "https://127.0.0.1:2379"
    assert tail[tail.index("--advertise-client-urls") + 1] == "https://127.0.0.1:2379"
    # Server-side TLS only: wrk cannot present a client certificate.
    for flag in ("--client-cert-auth", "--trusted-ca-file", "--peer-cert-file", "--auto-tls"):
        assert flag not in tail


def test_plain_argv_has_no_tls_flags() -> None:
    argv = _argv("etcd", None, ["--snapshot-count", "10"])
    assert "--cert-file" not in argv and "--key-file" not in argv
    assert argv[-2:] == ["--snapshot-count", "10"]
    assert servers.tls_flags(None) == []


# -- auth set-up against a scripted server -------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    body: bytes


@dataclass
class Fake:
    """An HTTP server answering from ``answer(method, path, authorization) -> (status, body)``."""

    answer: Callable[[str, str, str | None], tuple[int, bytes]]
    seen: list[Seen] = field(default_factory=list)
    url: str = ""


@pytest.fixture()
def fake() -> Iterator[Fake]:
    f = Fake(lambda m, p, a: (200, b""))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            f.seen.append(Seen(self.command, self.path, self.headers.get("Authorization"), body))
            status, out = f.answer(self.command, self.path, self.headers.get("Authorization"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_PUT = do_POST = do_DELETE = _any

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    f.url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        yield f
    finally:
        srv.shutdown()
        srv.server_close()


def etcd_like(method: str, path: str, authorization: str | None) -> tuple[int, bytes]:
    """What etcd 3.4 answers to the set-up and the checks (verified against it by the live test)."""
    if path == "/v2/auth/enable" and method == "GET":
        return 200, b'{"enabled":true}\n'
    if path.startswith("/v2/auth/"):
        return (201 if path.endswith(("/root", "/bench")) and method == "PUT" else 200), b""
    user = base64.b64decode(authorization[6:]).split(b":")[0] if authorization else None
    if user == b"bench" and path.startswith("/v2/keys/bench/"):
        return (201 if method == "PUT" else 200), b"{}"
    return 401, b'{"errorCode":110,"message":"The request requires user authentication"}'


def test_auth_steps() -> None:
    steps = servers.auth_steps("rootpw", "benchpw")
    assert [(m, p, root) for m, p, _, _, root in steps] == [
        ("PUT", "/v2/auth/users/root", False),
        ("PUT", "/v2/auth/roles/bench", False),
        ("PUT", "/v2/auth/users/bench", False),
        ("PUT", "/v2/auth/enable", True),
        ("PUT", "/v2/auth/roles/guest", True),
    ]
    bodies = [b for _, _, b, _, _ in steps]
    assert bodies[0] == {"user": "root", "password": "rootpw"}
    assert bodies[1] == {
        "role": "bench",
        "permissions": {"kv": {"read": ["/bench*", "/bench/*"], "write": ["/bench*", "/bench/*"]}},
    }
    assert bodies[2] == {"user": "bench", "password": "benchpw", "roles": ["bench"]}
    assert bodies[4] == {"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}}


def test_enable_auth_sends_the_steps_and_checks(fake: Fake) -> None:
    fake.answer = etcd_like
    dep = servers.Deployment("etcd", [fake.url])
    header = servers.enable_auth(dep)
    assert dep.authorization == header and header not in repr(dep)
    user, _, bench_password = base64.b64decode(header[6:]).decode().partition(":")
    assert user == "bench" and len(bench_password) >= 20
    setup = [s for s in fake.seen if s.path.startswith("/v2/auth/") and s.method == "PUT"]
    root_password = json.loads(setup[0].body)["password"]
    assert len(root_password) >= 20 and root_password != bench_password
    root = servers.basic_authorization("root", root_password)
    assert [s.authorization for s in setup] == [None, None, None, root, root]
    assert json.loads(setup[2].body)["password"] == bench_password
    checks = [(s.method, s.path, s.authorization) for s in fake.seen[len(setup) :]]
    assert checks == [
        ("GET", "/v2/auth/enable", None),
        ("PUT", "/v2/keys/bench/auth-check", None),
        ("PUT", "/v2/keys/bench/auth-check", header),
        ("PUT", "/v2/keys/other/auth-check", header),
        ("GET", "/v2/keys/bench/auth-check", header),
    ]


def test_a_refused_step_fails_with_the_servers_answer_and_no_password(fake: Fake) -> None:
    answer = b'{"errorCode":107,"message":"Root is read only","cause":"/","index":0}'
    fake.answer = lambda m, p, a: (400, answer) if p == "/v2/auth/users/root" else (200, b"")
    with pytest.raises(servers.AuthSetupError) as e:
        servers.enable_auth(servers.Deployment("fastkv", [fake.url]))
    msg = str(e.value)
    assert msg == f"enabling auth on fastkv: PUT /v2/auth/users/root answered 400 {answer.decode()}"
    assert json.loads(fake.seen[0].body)["password"] not in msg
    assert len(fake.seen) == 1  # nothing after the failed step


def test_auth_that_does_not_hold_fails(fake: Fake) -> None:
    """A server that accepts every step but still serves requests without credentials."""

    def lax(method: str, path: str, authorization: str | None) -> tuple[int, bytes]:
        status, body = etcd_like(method, path, authorization)
        return (201, b"{}") if path.startswith("/v2/keys/") and authorization is None else (status, body)

    fake.answer = lax
    with pytest.raises(servers.AuthSetupError, match="does not hold: no credentials: PUT /v2/keys/bench/auth-check "
                       "answered 201 {}, expected 401"):  # fmt: skip
        servers.enable_auth(servers.Deployment("fastkv", [fake.url]))


def test_auth_reported_off_fails(fake: Fake) -> None:
    fake.answer = lambda m, p, a: (200, b'{"enabled":false}' if m == "GET" else b"")
    with pytest.raises(
        servers.AuthSetupError, match=r"GET /v2/auth/enable answered 200 \{\"enabled\":false\}"
    ):
        servers.enable_auth(servers.Deployment("fastkv", [fake.url]))


# -- credentials into wrk ------------------------------------------------------------------------

FAKE_WRK = """#!/bin/sh
# Stands in for wrk: 7 requests when the credentials reached it through the environment, else 3.
if [ "$FASTKV_BENCH_AUTHORIZATION" = "Basic YmVuY2g6cHc=" ]; then n=7; else n=3; fi
echo "RESULT requests=$n duration_us=1000000 non2xx=0 sockerr=0 p50_us=1 p90_us=2 p99_us=3 p999_us=4 max_us=5"
"""


@pytest.fixture()
def fake_wrk(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "wrk"
    path.write_text(FAKE_WRK)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv(wrk.AUTH_ENV, raising=False)


@pytest.mark.usefixtures("fake_wrk")
def test_wrk_gets_credentials_through_the_environment_only() -> None:
    header = servers.basic_authorization("bench", "pw")
    assert header == "Basic YmVuY2g6cHc="
    r = wrk.run("https://127.0.0.1:1", "kv.lua", 64, 1, ["put", "100", "10"], header)
    assert r["requests"] == 7 and r["non2xx"] == 0
    assert "YmVuY2g6cHc=" not in r.command and "pw" not in r.command.split()
    assert r.command.startswith(f"{wrk.AUTH_ENV}='<Basic credentials of the bench user>' wrk ")
    r = wrk.run("https://127.0.0.1:1", "kv.lua", 64, 1, ["put", "100", "10"])
    assert r["requests"] == 3 and r.command.startswith("wrk ")
    assert wrk.AUTH_ENV not in os.environ  # only the child had it


@pytest.mark.skipif(not wrk.have_wrk(), reason="wrk is not installed")
def test_kv_lua_sends_the_header_on_every_put_and_get(fake: Fake) -> None:
    """Real wrk with kv.lua against the scripted server: every PUT and GET carries the header."""
    fake.answer = lambda m, p, a: (201 if m == "PUT" else 200, b"{}")
    header = servers.basic_authorization("bench", "pw")
    for mode, method in (("put", "PUT"), ("get", "GET")):
        fake.seen.clear()
        r = wrk.run(fake.url, "kv.lua", 2, 1, [mode, "10", "50"], header)
        assert r["requests"] > 0 and r["non2xx"] == 0 and r["sockerr"] == 0
        assert fake.seen and {s.method for s in fake.seen} == {method}
        assert {s.authorization for s in fake.seen} == {header}
        assert all(s.path.startswith("/v2/keys/bench/k") for s in fake.seen)
        if method == "PUT":
            assert {s.body for s in fake.seen} == {b"value=" + b"v" * 10}
    fake.seen.clear()
    wrk.run(fake.url, "kv.lua", 1, 1, ["get", "10", "50"])
    assert fake.seen and {s.authorization for s in fake.seen} == {None}


# -- report --------------------------------------------------------------------------------------


def _runs(system: str, rps: float) -> list[RunResult]:
    lat = {"p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "p999_ms": 4.0, "max_ms": 5.0}
    return [
        RunResult(system, metrics={"rps": rps * f, **lat, "errors": 0.0}, detail={"tls": "TLSv1.3 X"})
        for f in (0.9, 1.0, 1.1)
    ]


MACHINE = {"cpus": 2, "loadavg_at_start": [1.0, 1.0, 1.0]}


def write_security(out: str, same_run: bool = True) -> None:
    r = Runner([], ["fastkv", "etcd"], 3, 5.0, out)
    figures = {"put-64": (30_000, 20_000), "tls-put-64": (24_000, 18_000), "auth-put-64": (27_000, 40)}
    for name, (fk, et) in figures.items():
        if name == "auth-put-64" and not same_run:
            r = Runner([], ["fastkv", "etcd"], 3, 5.0, out)
            r.run_id = "another invocation"
        r.write(resolve(name), {"fastkv": _runs("fastkv", fk), "etcd": _runs("etcd", et)}, MACHINE, 3)


def test_variant_rows(tmp_path) -> None:
    write_security(str(tmp_path))
    rows = {r["scenario"]: r for r in report.variant_rows(report.load(str(tmp_path)))}
    assert set(rows) == {"tls-put-64", "auth-put-64"}  # no get-64 here, so no tls-get-64 row
    tls = rows["tls-put-64"]
    assert (tls["variant"], tls["base"], tls["metric"], tls["same_run"]) == ("tls", "put-64", "rps", True)
    assert tls["fastkv"] == (30_000, 24_000, pytest.approx(0.8))
    assert tls["etcd"] == (20_000, 18_000, pytest.approx(0.9))
    plain, secured, moved = tls["fastkv_etcd"]
    assert (plain, secured, moved) == (
        pytest.approx(1.5),
        pytest.approx(24 / 18),
        pytest.approx(24 / 18 / 1.5),
    )
    auth = rows["auth-put-64"]
    assert auth["etcd"] == (20_000, 40, pytest.approx(0.002)) and auth["fastkv_etcd"][1] == pytest.approx(675)


def test_variant_rows_from_separate_invocations_say_so(tmp_path) -> None:
    write_security(str(tmp_path), same_run=False)
    rows = {r["scenario"]: r for r in report.variant_rows(report.load(str(tmp_path)))}
    assert rows["tls-put-64"]["same_run"] and not rows["auth-put-64"]["same_run"]
    text = Path(report.build(str(tmp_path), plot=False)).read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| `auth-put-64` | `put-64`"))
    assert row.endswith("| no (separate invocations) |")


def test_report_security_table(tmp_path) -> None:
    write_security(str(tmp_path))
    text = Path(report.build(str(tmp_path), plot=False)).read_text()
    assert "## TLS and auth against plain" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| `tls-put-64` | `put-64`"))
    assert row == (
        "| `tls-put-64` | `put-64` | throughput (req/s) | 30,000 -> 24,000 | 0.80 | 20,000 -> 18,000 | 0.90 "
        "| 1.50 | 1.33 | 0.89 | yes |"
    )
    row = next(ln for ln in text.splitlines() if ln.startswith("| `auth-put-64` | `put-64`"))
    assert "| 20,000 -> 40 | 0.0020 |" in row and "| 1.50 | 675.00 |" in row
    # The summary table lists the variants after the default suite, like any scenario.
    names = [d["scenario"] for d in report.load(str(tmp_path))]
    assert names == ["put-64", "tls-put-64", "auth-put-64"]
    assert "run 1: 21,600 (TLSv1.3 X)" in text  # the negotiated session per run
    assert [d["run_id"] for d in report.load(str(tmp_path))].count(None) == 0


def test_variants_are_their_own_plot_series(tmp_path) -> None:
    write_security(str(tmp_path))
    fams = {d["scenario"]: report._family(d) for d in report.load(str(tmp_path))}
    assert fams == {"put-64": "PUT", "tls-put-64": "PUT, TLS", "auth-put-64": "PUT, auth"}


def test_security_groups_only_reference_known_scenarios() -> None:
    for members in GROUPS.values():
        for sc in members:
            assert resolve(sc.name) == sc


def test_ratio_text() -> None:
    assert [report.ratio_text(v) for v in (None, 0.0, 1.234, 0.1, 0.0951, 0.0123, 0.00093)] == [
        "-",
        "0.00",
        "1.23",
        "0.10",
        "0.095",
        "0.012",
        "0.00093",
    ]
