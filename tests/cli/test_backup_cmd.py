"""``fastkvctl backup``: etcdctl's flags and help, silent on success, one log line and exit 1 on refusal;
the backup it writes starts a member that serves the keys with their indexes."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastkv.cli.main import run
from tests.support.procs import have_etcd, start_server

pytestmark = pytest.mark.slow

# capnslog's line, as etcdctl backup logs: "2026-11-21 00:26:34.435505 I | <message>"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} I \| (.*)$")


def fastkvctl(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(args), stdin=io.StringIO(""), stdout=out, stderr=err, env={})
    return code, out.getvalue(), err.getvalue()


def put(url: str, key: str, value: str) -> int:
    req = urllib.request.Request(
        f"{url}/v2/keys{key}",
        data=f"value={value}".encode(),
        method="PUT",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return int(json.loads(r.read())["node"]["modifiedIndex"])


def get(url: str, key: str) -> tuple[str, int]:
    with urllib.request.urlopen(f"{url}/v2/keys{key}", timeout=5) as r:
        node = json.loads(r.read())["node"]
    return node["value"], node["modifiedIndex"]


def one_log_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    m = LOG_LINE.match(lines[0])
    assert m, lines[0]
    return m.group(1)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Iterator[tuple[str, dict[str, int]]]:
    """A stopped member's data dir (snapshots taken) and the index of each key written."""
    root = tmp_path_factory.mktemp("src")
    srv = start_server("fastkv", data_dir=str(root), extra=["--snapshot-count", "50"])
    try:
        written = {f"/cli/{i}": put(srv.url, f"/cli/{i}", f"v{i}") for i in range(70)}
    finally:
        srv.stop()
    yield os.path.join(str(root), "data"), written


def test_help_lists_etcdctls_flags():
    code, out, err = fastkvctl("backup", "--help")
    assert code == 0 and err == ""
    assert out == (
        "NAME:\n"
        "   fastkvctl backup - backup an etcd directory\n"
        "\n"
        "USAGE:\n"
        "   fastkvctl backup [command options]  \n"
        "\n"
        "OPTIONS:\n"
        "   --data-dir value        Path to the etcd data dir\n"
        "   --wal-dir value         Path to the etcd wal dir\n"
        "   --backup-dir value      Path to the backup dir\n"
        "   --backup-wal-dir value  Path to the backup wal dir\n"
        "   --with-v3               Backup v3 backend data\n"
        "   \n"
    )


@pytest.mark.etcd
def test_help_is_etcdctls():
    if not have_etcd():
        pytest.skip("etcd not installed")
    env = {**os.environ, "ETCDCTL_API": "2"}
    real = subprocess.run(
        ["etcdctl", "backup", "--help"], capture_output=True, text=True, env=env, timeout=10
    )
    assert fastkvctl("backup", "--help")[1] == real.stdout.replace("etcdctl", "fastkvctl")


def test_backup_is_silent_and_the_member_starts_from_it(tmp_path, source):
    data_dir, written = source
    backup_root = tmp_path / "restored"
    code, out, err = fastkvctl("backup", "--data-dir", data_dir, "--backup-dir", str(backup_root / "data"))
    assert (code, out, err) == (0, "", "")
    assert sorted(os.listdir(backup_root / "data" / "member")) == ["kv", "snap", "wal"]
    srv = start_server("fastkv", data_dir=str(backup_root))
    try:
        for key, index in written.items():
            assert get(srv.url, key) == (f"v{key.rsplit('/', 1)[1]}", index)
    finally:
        srv.stop()


def test_separate_wal_dirs(tmp_path, source):
    data_dir, written = source
    backup_root = tmp_path / "restored"
    backup_wal = tmp_path / "restored-wal"
    code, out, err = fastkvctl(
        "backup",
        "--data-dir",
        data_dir,
        "--wal-dir",
        os.path.join(data_dir, "member", "wal"),
        "--backup-dir",
        str(backup_root / "data"),
        "--backup-wal-dir",
        str(backup_wal),
    )
    assert (code, out, err) == (0, "", "")
    assert sorted(os.listdir(backup_root / "data" / "member")) == ["kv", "snap"]
    assert [n for n in os.listdir(backup_wal) if n.endswith(".wal")]
    srv = start_server("fastkv", data_dir=str(backup_root), extra=["--wal-dir", str(backup_wal)])
    try:
        key, index = next(iter(written.items()))
        assert get(srv.url, key) == ("v0", index)
    finally:
        srv.stop()


def test_refuses_a_dir_that_is_not_a_data_dir(tmp_path: Path):
    code, out, err = fastkvctl("backup", "--data-dir", str(tmp_path), "--backup-dir", str(tmp_path / "b"))
    assert code == 1 and out == ""
    assert one_log_line(err) == f"{str(tmp_path)!r} is not a fastkv data dir: no 'member/kv'"
    assert not (tmp_path / "b").exists()


def test_refuses_without_flags(tmp_path: Path, monkeypatch):
    # No --data-dir means the current directory, as for etcdctl.
    monkeypatch.chdir(tmp_path)
    code, out, err = fastkvctl("backup")
    assert code == 1 and out == ""
    assert "is not a fastkv data dir" in one_log_line(err)
    assert os.listdir(tmp_path) == []


def test_refuses_a_backup_dir_that_is_not_empty(tmp_path, source):
    data_dir, _ = source
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "old").write_text("")
    code, out, err = fastkvctl("backup", "--data-dir", data_dir, "--backup-dir", str(tmp_path / "b"))
    assert code == 1 and out == ""
    assert one_log_line(err) == f"backup dir {str(tmp_path / 'b')!r} is not empty"
    assert os.listdir(tmp_path / "b") == ["old"]


def test_refuses_a_backup_dir_below_a_file(tmp_path, source):
    data_dir, _ = source
    (tmp_path / "f").write_text("")
    target = str(tmp_path / "f" / "b")
    code, out, err = fastkvctl("backup", "--data-dir", data_dir, "--backup-dir", target)
    assert code == 1 and out == ""
    assert one_log_line(err) == f"backup dir {target!r} cannot be used: Not a directory"


def test_fastkvctl_program(tmp_path, source):
    data_dir, _ = source
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastkv.cli.main",
            "backup",
            "--data-dir",
            data_dir,
            "--backup-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastkv.cli.main",
            "backup",
            "--data-dir",
            data_dir,
            "--backup-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and r.stdout == ""
    assert one_log_line(r.stderr).endswith("is not empty")
