"""pytest plugin: fixtures that run real fastkv members, registered as the ``pytest11`` entry point
``fastkv``, so ``pip install fastkv pytest`` is all a user needs.

Fixtures (each test gets its own processes; all are killed and their directory removed when the
test ends, whether it passed or not):

- ``fastkv_member``: a one-member cluster, ready (``.client_url``, ``.client()``, ``.kill()``...);
- ``fastkv_cluster``: a three-member cluster, ready (``.leader()``, ``.followers()``, ``.client()``);
- ``fastkv_launcher``: a ``fastkv.testing.Launcher`` for anything else
  (``fastkv_launcher.cluster(5, extra_args=["--snapshot-count", "100"])``).

Options (command line, or the ini key in brackets): ``--fastkv-binary`` [fastkv_binary], the command
that runs fastkv (default: this interpreter's ``-m fastkv.cmd.server``); ``--fastkv-args``
[fastkv_args], flags added to every member; ``--fastkv-start-timeout`` [fastkv_start_timeout],
seconds a member or cluster may take to become ready (default 30).  When a test fails, the tail of
each of its members' logs is added to the report.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from fastkv.testing.cluster import Cluster, Launcher, default_command
from fastkv.testing.member import Member

LOG_TAIL_LINES = 40


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fastkv", "fastkv members for tests")
    group.addoption(
        "--fastkv-binary",
        dest="fastkv_binary",
        default=None,
        help="command that runs fastkv, e.g. /usr/local/bin/fastkv (default: this Python's -m fastkv.cmd.server)",
    )
    group.addoption("--fastkv-args", dest="fastkv_args", default=None, help="flags added to every member")
    group.addoption(
        "--fastkv-start-timeout",
        dest="fastkv_start_timeout",
        default=None,
        type=float,
        help="seconds a member or cluster may take to become ready (default 30)",
    )
    parser.addini("fastkv_binary", "command that runs fastkv", default="")
    parser.addini("fastkv_args", "flags added to every fastkv member", default="")
    parser.addini(
        "fastkv_start_timeout", "seconds a member or cluster may take to become ready", default="30"
    )


def _setting(config: pytest.Config, name: str) -> str:
    value = config.getoption(name)
    return str(value if value is not None else config.getini(name))


def launcher_options(config: pytest.Config) -> dict[str, Any]:
    """The Launcher arguments the options and ini keys give."""
    binary = shlex.split(_setting(config, "fastkv_binary"))
    raw_timeout = _setting(config, "fastkv_start_timeout")
    try:
        timeout = float(raw_timeout)
    except ValueError:
        raise pytest.UsageError(f"fastkv_start_timeout: not a number of seconds: {raw_timeout!r}") from None
    if timeout <= 0:
        raise pytest.UsageError(f"fastkv_start_timeout must be positive, not {raw_timeout}")
    return {
        "command": binary or default_command(),
        "extra_args": shlex.split(_setting(config, "fastkv_args")),
        "start_timeout": timeout,
    }


def pytest_configure(config: pytest.Config) -> None:
    launcher_options(config)  # a bad option is a usage error at startup, not one error per test


@pytest.fixture
def fastkv_launcher(request: pytest.FixtureRequest) -> Iterator[Launcher]:
    """Starts members and clusters for this test; everything is killed and removed afterwards."""
    launcher = Launcher(**launcher_options(request.config))
    try:
        yield launcher
    finally:
        launcher.close()


@pytest.fixture
def fastkv_member(fastkv_launcher: Launcher) -> Member:
    """A running one-member fastkv cluster."""
    return fastkv_launcher.member()


@pytest.fixture
def fastkv_cluster(fastkv_launcher: Launcher) -> Cluster:
    """A running three-member fastkv cluster with an elected leader."""
    return fastkv_launcher.cluster(3)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.when == "teardown":
        return
    launcher = getattr(item, "funcargs", {}).get("fastkv_launcher")
    if not isinstance(launcher, Launcher):
        return
    for m in launcher.started:
        report.sections.append(
            (
                f"fastkv member {m.name} ({m.client_url}), last {LOG_TAIL_LINES} log lines",
                m.log_tail(LOG_TAIL_LINES),
            )
        )
