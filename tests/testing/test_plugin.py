"""The pytest plugin as a user meets it: loaded through its entry point in a separate pytest run
(``pytester.runpytest_subprocess``) with only the user's test file and ini."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.slow

RECORD_TEST = """
import json, os

def test_it(fastkv_{fixture}):
    target = fastkv_{fixture}
    members = list(target) if hasattr(target, "members") else [target]
    with open({record!r}, "w") as f:
        json.dump({{"pids": [m.pid for m in members], "dirs": [m.workdir for m in members],
                   "argv": members[0].argv}}, f)
    {body}
"""


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def run_user_test(pytester: pytest.Pytester, fixture: str, body: str, *args: str) -> tuple[object, dict]:
    record = str(pytester.path / "record.json")
    pytester.makepyfile(test_user=RECORD_TEST.format(fixture=fixture, record=record, body=body))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)
    with open(record) as f:
        return result, json.load(f)


def test_plugin_is_registered_through_its_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", timeout=60)
    out = result.stdout.str()
    assert "fastkv_member" in out and "fastkv_cluster" in out and "fastkv_launcher" in out
    result = pytester.runpytest_subprocess("--help", timeout=60)
    result.stdout.fnmatch_lines(["*--fastkv-binary*", "*--fastkv-args*", "*--fastkv-start-timeout*"])


def test_a_passing_cluster_test_leaves_nothing_behind(pytester: pytest.Pytester) -> None:
    body = "assert target.leader() in target.members and len(target.followers()) == 2"
    result, record = run_user_test(pytester, "cluster", body)
    result.assert_outcomes(passed=1)
    assert len(record["pids"]) == 3
    assert all(gone(pid) for pid in record["pids"])
    assert not any(os.path.exists(d) for d in record["dirs"])


def test_a_failing_test_reports_the_member_logs_and_leaves_nothing_behind(pytester: pytest.Pytester) -> None:
    result, record = run_user_test(pytester, "member", "assert False, 'on purpose'")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fastkv member m0 (http://127.0.0.1:*), last 40 log lines*"])
    assert "ready to serve client requests" in result.stdout.str()
    assert all(gone(pid) for pid in record["pids"])
    assert not any(os.path.exists(d) for d in record["dirs"])


def test_binary_and_args_options(pytester: pytest.Pytester) -> None:
    marker = pytester.path / "wrapper-ran"
    wrapper = pytester.path / "my-fastkv"
    wrapper.write_text(f'#!/bin/sh\ntouch {marker}\nexec {sys.executable} -m fastkv.cmd.server "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    result, record = run_user_test(
        pytester, "member", "pass", "--fastkv-binary", str(wrapper), "--fastkv-args=--snapshot-count 77"
    )
    result.assert_outcomes(passed=1)
    assert marker.exists() and record["argv"][0] == str(wrapper)
    assert record["argv"][-2:] == ["--snapshot-count", "77"]
    # The same through the ini file; the command line wins over it.
    pytester.makeini(f"[pytest]\nfastkv_binary = {wrapper}\nfastkv_args = --snapshot-count 88\n")
    marker.unlink()
    result, record = run_user_test(pytester, "member", "pass")
    result.assert_outcomes(passed=1)
    assert marker.exists() and record["argv"][-2:] == ["--snapshot-count", "88"]
    result, record = run_user_test(pytester, "member", "pass", "--fastkv-args=--snapshot-count 99")
    assert record["argv"][-2:] == ["--snapshot-count", "99"]


def test_a_binary_that_does_not_exist_is_a_clear_setup_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_it(fastkv_member):\n    pass\n")
    result = pytester.runpytest_subprocess("--fastkv-binary", "/nonexistent/fastkv", timeout=60)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*MemberError: cannot run *nonexistent/fastkv*No such file or directory*"])
    result = pytester.runpytest_subprocess("--fastkv-start-timeout", "0", timeout=60)
    assert result.ret != 0
    assert "fastkv_start_timeout must be positive" in result.stderr.str()
