"""Server logs: one JSON object per line (etcd 3.4 zap's shape: level, ts, caller, msg, then
the event's fields), --log-level filtering, --log-outputs, quiet when idle, and the events
that matter (leader change, slow fdatasync) logged as structured lines."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastkv import logutil
from fastkv.raft.types import Entry, HardState
from fastkv.storage import wal as wal_module
from fastkv.storage.wal import WAL
from tests.support.procs import ServerProcess, start_cluster, start_server

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line parsed as a JSON object (a line that is not one fails the test)."""
    out = []
    for line in text.splitlines():
        obj = json.loads(line)
        assert isinstance(obj, dict), line
        out.append(obj)
    return out


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logutil.JSONFormatter())
    logger = logging.getLogger("fastkv.test-logutil")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, buf
    logger.removeHandler(handler)


@pytest.fixture
def workdir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="fastkv-logging-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --- the formatter ---------------------------------------------------------------------------


def test_json_lines_carry_level_ts_caller_msg_and_fields(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buf = capture
    logutil.event(logger, logging.INFO, "saved snapshot", index=12, term=3)
    logutil.event(logger, logging.WARNING, "slow fdatasync", **{"took": "1.5s", "expected-duration": "1s"})
    logger.debug("plain %s record", "printf")
    logger.error("two\nlines", extra={"fields": {"remote-peer-id": "8e9e05c52164694d", "urls": ["a", "b"]}})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 5, "one line per record, newlines escaped"
    recs = json_lines(buf.getvalue())
    for r in recs:
        assert list(r)[:4] == ["level", "ts", "caller", "msg"]
        assert TS.match(r["ts"]), r["ts"]
    assert recs[0]["level"] == "info" and recs[0]["msg"] == "saved snapshot"
    assert recs[0]["index"] == 12 and recs[0]["term"] == 3
    # event() reports the line that called it, not itself.
    assert recs[0]["caller"].startswith("server/test_logging.py:")
    assert recs[1] == recs[1] | {"level": "warn", "took": "1.5s", "expected-duration": "1s"}
    assert recs[2]["level"] == "debug" and recs[2]["msg"] == "plain printf record"
    assert recs[3]["msg"] == "two\nlines" and recs[3]["urls"] == ["a", "b"]
    assert recs[4]["level"] == "error" and "ValueError: boom" in recs[4]["error"]


def test_fields_never_replace_the_standard_keys(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buf = capture
    logutil.event(logger, logging.INFO, "real message", msg="field", level="field", obj=object())
    (rec,) = json_lines(buf.getvalue())
    assert rec["msg"] == "real message" and rec["level"] == "info"
    assert rec["field-msg"] == "field" and rec["field-level"] == "field"
    assert rec["obj"].startswith("<object object")


def test_level_names_follow_zap() -> None:
    assert [logutil.level_name(n) for n in (10, 20, 30, 40, 50)] == [
        "debug",
        "info",
        "warn",
        "error",
        "fatal",
    ]
    assert logutil.level_name(25) == "info"
    assert logutil.LEVELS["warn"] == logging.WARNING and logutil.LEVELS["panic"] == logging.CRITICAL


def test_capnslog_text_line() -> None:
    rec = logging.LogRecord("fastkv.etcdserver", logging.WARNING, __file__, 1, "slow fdatasync", None, None)
    rec.fields = {"took": "1.5s", "note": "two words"}
    line = logutil.CapnslogFormatter().format(rec)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} W \| etcdserver: slow fdatasync ", line), line
    assert line.endswith(' took=1.5s note="two words"')


def test_setup_level_and_outputs(workdir: str) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    path = os.path.join(workdir, "out.log")
    try:
        logutil.setup("warn", [path])
        log = logging.getLogger("fastkv.test-setup")
        log.info("hidden")
        logutil.event(log, logging.INFO, "hidden too")
        logutil.event(log, logging.WARNING, "shown", n=1)
        for h in root.handlers:
            h.flush()
        recs = json_lines(Path(path).read_text())
        assert [(r["level"], r["msg"], r.get("n")) for r in recs] == [("warn", "shown", 1)]
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
            h.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


# --- slow fdatasync --------------------------------------------------------------------------


def test_slow_fdatasync_is_a_structured_warning(
    workdir: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wal = WAL.create(os.path.join(workdir, "wal"), b"meta")
    try:
        with caplog.at_level(logging.WARNING, logger="fastkv.wal"):
            wal.save(HardState(1, 0, 0), [Entry(1, 1, 0, b"fast")])
            assert not [r for r in caplog.records if r.getMessage() == "slow fdatasync"]
            # Every fdatasync counts as slow with a negative threshold.
            monkeypatch.setattr(wal_module, "SLOW_FDATASYNC_S", -1.0)
            wal.save(HardState(1, 0, 0), [Entry(1, 2, 0, b"slow")])
    finally:
        wal.close()
    (rec,) = [r for r in caplog.records if r.getMessage() == "slow fdatasync"]
    assert rec.levelno == logging.WARNING
    fields = rec.fields  # type: ignore[attr-defined]
    assert set(fields) == {"took", "expected-duration"} and fields["expected-duration"] == "1s"
    assert re.match(r"^\d+\.\d{6}s$", fields["took"])
    line = json.loads(logutil.JSONFormatter().format(rec))
    assert line["caller"].startswith("storage/wal.py:") and line["took"] == fields["took"]


# --- a real server ---------------------------------------------------------------------------


def test_default_level_logs_startup_then_stays_quiet_when_idle(workdir: str) -> None:
    srv = start_server("fastkv", data_dir=workdir)
    try:
        time.sleep(0.3)  # the startup lines are written right after /health answers
        text = srv.log()
        startup = json_lines(text)
        msgs = [r["msg"] for r in startup]
        assert "serving client requests" in msgs and "ready to serve client requests" in msgs
        assert {r["level"] for r in startup} <= {"info", "warn"}
        time.sleep(2.0)
        assert srv.log() == text, f"an idle member logged:\n{srv.log()[len(text) :]}"
        assert srv.stop(signal.SIGTERM) == 0
        msgs = [r["msg"] for r in json_lines(srv.log())]
        assert msgs[-2:] == ["received signal; shutting down", "stopped"]
    finally:
        srv.stop(signal.SIGKILL)


def test_log_level_warn_silences_info(workdir: str) -> None:
    srv = start_server("fastkv", data_dir=workdir, extra=["--log-level", "warn"])
    try:
        assert srv.stop(signal.SIGTERM) == 0
        assert srv.log() == ""
    finally:
        srv.stop(signal.SIGKILL)


def test_log_level_debug_and_env(workdir: str) -> None:
    srv = start_server("fastkv", data_dir=workdir, env_extra={"ETCD_LOG_LEVEL": "debug"})
    try:
        assert srv.stop(signal.SIGTERM) == 0
        recs = json_lines(srv.log())
        assert any(r["msg"] == "recognized and used environment variable ETCD_LOG_LEVEL=debug" for r in recs)
    finally:
        srv.stop(signal.SIGKILL)


def test_log_outputs_file_and_stdout(workdir: str) -> None:
    path = os.path.join(workdir, "fastkv.log")
    srv = start_server("fastkv", data_dir=workdir, extra=["--log-outputs", path])
    try:
        assert srv.stop(signal.SIGTERM) == 0
        assert srv.log() == "", "with a file output, nothing goes to stderr"
        msgs = [r["msg"] for r in json_lines(Path(path).read_text())]
        assert "ready to serve client requests" in msgs and msgs[-1] == "stopped"
    finally:
        srv.stop(signal.SIGKILL)


def test_explicit_capnslog_logger_prints_text(workdir: str) -> None:
    srv = start_server("fastkv", data_dir=workdir, extra=["--logger", "capnslog"])
    try:
        assert srv.stop(signal.SIGTERM) == 0
        lines = srv.log().splitlines()
        assert lines and all(
            re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} [DIWEC] \| ", ln) for ln in lines
        )
        assert any(" I | main: serving client requests addresses=" in ln for ln in lines)
    finally:
        srv.stop(signal.SIGKILL)


LEADER_FIELDS = ("leader", "leader-member-id", "new-leader-member-id")


def _leader_of(r: dict[str, Any]) -> str | None:
    """The leader id a leader-change line names: in a field (the structured form) or in the
    message text ("... leader is <id> at term <n>")."""
    for key in LEADER_FIELDS:
        if isinstance(r.get(key), str):
            return str(r[key])
    found = re.search(r"leader is ([0-9a-f]+)", r["msg"])
    return found.group(1) if found else None


def _leader_lines(m: ServerProcess) -> list[dict[str, Any]]:
    return [r for r in json_lines(m.log()) if _leader_of(r)]


def test_leader_change_is_logged_as_a_structured_line(workdir: str) -> None:
    members = start_cluster(
        "fastkv", 3, base_dir=workdir, extra=["--heartbeat-interval", "50", "--election-timeout", "500"]
    )
    try:
        # Every member logs the first leader, then its readiness; heartbeats are not logged.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(
            "ready to serve client requests" in m.log() for m in members
        ):
            time.sleep(0.1)
        for m in members:
            assert _leader_lines(m) and "ready to serve client requests" in m.log(), m.log()[-2000:]
        before = {m.url: m.log() for m in members}
        time.sleep(1.5)
        for m in members:
            assert m.log() == before[m.url], (
                f"an idle healthy member logged:\n{m.log()[len(before[m.url]) :]}"
            )
        old = _leader_of(_leader_lines(members[0])[-1])
        stats = {m.url: json.loads(_get(m.url + "/v2/stats/self")) for m in members}
        leader = next(m for m in members if stats[m.url]["id"] == old)
        assert leader.stop(signal.SIGTERM) == 0
        others = [m for m in members if m is not leader]
        deadline = time.monotonic() + 15
        new: dict[str, str] = {}
        while len(new) < 2 and time.monotonic() < deadline:
            for m in others:
                for r in _leader_lines(m):
                    leader_id = _leader_of(r)
                    if leader_id is not None and leader_id != old:
                        assert r["level"] == "info" and TS.match(r["ts"])
                        new[m.url] = leader_id
            time.sleep(0.1)
        assert len(new) == 2 and len(set(new.values())) == 1, new
    finally:
        for m in members:
            m.stop(signal.SIGKILL)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        body: bytes = r.read()
    return body.decode()
