"""The bounded slice of the nemesis that runs with every `make test`: a few seeded runs of one
fault class each against a real 3-member cluster (fastkv, and etcd when installed), each judged
as `make torture` judges it.  Plus the pieces the verdicts rest on: the fault library, the gap
measure, late-write detection and the ledger."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.nemesis import faults, iptables
from tests.nemesis.checks import late_applied, longest_gap_s, lost_acknowledged
from tests.nemesis.cluster import build_fault_lib
from tests.nemesis.run import one_run, plan, update_ledger
from tests.nemesis.workload import Load
from tests.support.linearizability import read
from tests.support.procs import have_etcd

# (target, class, seed): a partition, a crash of the leader and a pause, 2 faults each.
SLICE = [
    ("fastkv", "isolate-leader", 7101),
    ("fastkv", "kill-leader", 7102),
    ("fastkv", "sigstop", 7103),
    ("etcd", "kill-leader", 7104),
]


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("target,cls,seed", SLICE, ids=[f"{t}-{c}" for t, c, _ in SLICE])
def test_nemesis_slice(tmp_path, target: str, cls: str, seed: int) -> None:
    if target == "etcd" and not have_etcd():
        pytest.skip("etcd not installed")
    lines: list[str] = []
    rec = one_run(target, cls, seed, 2, str(tmp_path), lines)
    detail = {k: rec.get(k) for k in ("error", "convergence", "lin_detail", "lost_detail", "late_detail")}
    log = "\n".join(lines)
    assert "error" not in rec, f"seed {seed}: {detail}\n{log}"
    assert rec["linearizable"] == "linearizable", f"seed {seed}: {detail}\n{log}"
    assert rec["converged"], f"seed {seed}: {detail}\n{log}"
    assert rec["lost"] == 0 and rec["late"] == 0, f"seed {seed}: {detail}\n{log}"
    assert rec["passed"]
    # The run did hurt the cluster and kept it busy: two faults, writes acknowledged around them.
    assert [f["class"] for f in rec["faults"]] == [cls, cls]
    assert rec["acked"] > 0 and rec["ops"] > 0


def test_etcd_plan_names_the_classes_it_cannot_run() -> None:
    runnable, skipped = plan("etcd", None)
    for name, c in faults.CLASSES.items():
        if c.needs in ("disk", "clock") or (c.needs == "partition" and not iptables.available()):
            assert name in skipped and name not in runnable
        else:
            assert name in runnable
    assert faults.MIXED in runnable


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_fault_library_fails_fsync_fills_the_disk_and_steps_the_clock(tmp_path) -> None:
    lib = build_fault_lib(str(tmp_path / "lib"))
    assert lib is not None
    disk, clock = tmp_path / "disk", tmp_path / "clock"
    script = textwrap.dedent(
        f"""
        import os, socket, sys, time
        def put(path, text):
            open(path, "w").write(text)  # written before the fault reaches this process
            time.sleep(0.05)  # the library re-reads its control files every 20 ms
        fd = os.open({str(tmp_path / "data")!r}, os.O_CREAT | os.O_WRONLY)
        os.write(fd, b"x"); os.fdatasync(fd)
        put({str(disk)!r}, "fsync")
        try: os.fdatasync(fd); sys.exit("fsync did not fail")
        except OSError as e: assert e.errno == 5, e
        os.write(fd, b"y")  # writes still work while only fsync fails
        put({str(disk)!r}, "enospc")
        try: os.write(fd, b"z"); sys.exit("write did not fail")
        except OSError as e: assert e.errno == 28, e
        a, b = socket.socketpair(); a.send(b"ok"); assert b.recv(2) == b"ok"  # sockets unaffected
        put({str(disk)!r}, "")
        os.write(fd, b"z"); os.fdatasync(fd)
        before_wall, before_mono = time.time(), time.monotonic()
        put({str(clock)!r}, "-7200")
        assert time.time() - before_wall < -7100, time.time() - before_wall
        assert 0 <= time.monotonic() - before_mono < 60
        put({str(clock)!r}, "0")
        assert abs(time.time() - before_wall) < 60
        """
    )
    env = {
        **os.environ,
        "LD_PRELOAD": lib,
        "NEMESIS_DISK_FAULT": str(disk),
        "NEMESIS_CLOCK_OFFSET": str(clock),
    }
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_longest_gap_counts_from_the_fault_to_the_first_success_after_recovery() -> None:
    s = 1_000_000_000
    assert longest_gap_s([int(1.2 * s), int(1.5 * s), int(4.0 * s)], 1 * s, 3 * s) == pytest.approx(2.5)
    assert longest_gap_s([int(1.1 * s)], 1 * s, 3 * s) == pytest.approx(1.9)  # none after: until the end
    assert longest_gap_s([], 1 * s, 3 * s) == pytest.approx(2.0)


def test_errored_writes_seen_later_are_late_applied_and_missing_acked_writes_lost() -> None:
    load = Load(lambda: ["http://127.0.0.1:1"], seed=1)
    load.rec.error("c0-5", "PUT r0=c0-5: 500 request timed out")
    load.rec.error("c0-9", "PUT r1=c0-9: 500 request timed out")
    load.writers[0].errored_keys["acked/w0-3"] = "500"
    history = [read("r0", 1, 2, "c0-5")]
    trees: dict[str, dict[str, str | None]] = {
        "http://a": {"acked/w0-1": "a0-1"},
        "http://b": {"acked/w0-1": "a0-1", "acked/w0-3": "a0-3"},
    }
    late = late_applied(load, history, trees)
    assert len(late) == 2 and "c0-5" in late[0] and "acked/w0-3" in late[1]
    assert lost_acknowledged({"acked/w0-1": "a0-1", "acked/w0-2": "a0-2"}, trees) == {
        "acked/w0-2": ["http://a", "http://b"]
    }


def test_ledger_adds_a_row_and_recomputes_the_totals(tmp_path) -> None:
    doc = tmp_path / "reliability.md"
    doc.write_text(
        "# x\n\nTotal: <!-- nemesis-totals -->none<!-- /nemesis-totals -->\n\n<!-- nemesis-ledger -->\n"
        "| date | target | seeds | runs | passed | classes |\n|---|---|---|---|---|---|\n"
        "| 2026-01-01 00:00 | fastkv | 1..3 | 3 | 3 | kill-all |\n\nafter\n"
    )
    recs = [{"class": "bridge", "passed": True}, {"class": "bridge", "passed": False}]
    update_ledger(str(doc), "fastkv", 10, recs)
    update_ledger(str(doc), "etcd", 20, recs[:1])
    text = doc.read_text()
    assert (
        "<!-- nemesis-totals -->etcd: 1 of 1 runs passed; fastkv: 4 of 5 runs passed<!-- /nemesis-totals -->"
        in text
    )
    rows = [line for line in text.splitlines() if line.startswith("| 20")]
    assert (
        len(rows) == 3
        and "| fastkv | 10..11 | 2 | 1 | bridge |" in rows[1]
        and "| etcd | 20..20 |" in rows[2]
    )
    assert text.endswith("\nafter\n")
