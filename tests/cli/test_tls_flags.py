"""--ca-file/--cert-file/--key-file and ETCDCTL_{CA,CERT,KEY}_FILE: unusable files end the command before
any request with etcdctl's message and exit code (1; 4 with "Error:  " for cluster-health).  Each case runs
through the real etcdctl and fastkvctl and the outputs must match byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.procs import have_etcd

pytestmark = pytest.mark.etcd

_PEM_CERT = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


def _run(tool: str, args: list[str], env_extra: dict[str, str]) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    env["ETCDCTL_API"] = "2"
    env.update(env_extra)
    argv = ["etcdctl"] if tool == "etcdctl" else [sys.executable, "-m", "fastkv.cli.main"]
    # An endpoint nobody listens on: a request that got through would fail differently (exit 2/4).
    argv += ["--endpoints", "http://127.0.0.1:1"]
    p = subprocess.run(argv + args, capture_output=True, text=True, env=env, timeout=30)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("tls")
    garbage = d / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cert = d / "cert.pem"
    cert.write_text(_PEM_CERT)
    return {"DIR": str(d), "GARBAGE": str(garbage), "CERT": str(cert), "MISSING": str(d / "missing.pem")}


CASES = [
    (["--ca-file", "MISSING", "ls"], {}),
    (["--ca-file", "MISSING", "get", "/k"], {}),
    (["--ca-file", "MISSING", "--no-sync", "ls"], {}),
    (["--ca-file", "MISSING", "member", "list"], {}),
    (["--ca-file", "MISSING", "watch", "/k"], {}),
    (["--ca-file", "DIR", "ls"], {}),
    (["--cert-file", "MISSING", "ls"], {}),
    (["--key-file", "MISSING", "ls"], {}),
    (["--ca-file", "MISSING", "--cert-file", "GARBAGE", "--key-file", "MISSING", "ls"], {}),
    (["--cert-file", "GARBAGE", "--key-file", "GARBAGE", "ls"], {}),
    (["--cert-file", "CERT", "--key-file", "GARBAGE", "ls"], {}),
    (["--ca-file", "MISSING", "cluster-health"], {}),
    (["--cert-file", "MISSING", "cluster-health"], {}),
    (["ls"], {"ETCDCTL_CA_FILE": "MISSING"}),
    (["ls"], {"ETCDCTL_CERT_FILE": "CERT"}),
    (["ls"], {"ETCDCTL_CERT_FILE": "GARBAGE", "ETCDCTL_KEY_FILE": "MISSING"}),
    (["--ca-file", "GARBAGE", "ls"], {"ETCDCTL_CA_FILE": "MISSING"}),
]


@pytest.mark.parametrize(("args", "env"), CASES, ids=[" ".join(a) + str(sorted(e)) for a, e in CASES])
def test_tls_file_errors_match_etcdctl(files: dict[str, str], args: list[str], env: dict[str, str]) -> None:
    if not have_etcd():
        pytest.skip("etcdctl not installed")
    args = [files.get(a, a) for a in args]
    env = {k: files.get(v, v) for k, v in env.items()}
    want = _run("etcdctl", args, env)
    got = _run("fastkvctl", args, env)
    assert got == want
    assert want[0] != 0


def test_ca_without_pem_blocks_is_accepted(files: dict[str, str]) -> None:
    """Like etcdctl, a CA file with no PEM block is no error of its own: the request is tried."""
    code, _, err = _run("fastkvctl", ["--no-sync", "--ca-file", files["GARBAGE"], "ls"], {})
    assert code == 4 and "connection refused" in err


def test_tls_files_are_checked_before_the_command(files: dict[str, str]) -> None:
    code, out, err = _run(
        "fastkvctl", ["--cert-file", files["MISSING"], "--key-file", files["CERT"], "set", "/k", "v"], {}
    )
    assert (code, out, err) == (1, "", f"open {files['MISSING']}: no such file or directory\n")
