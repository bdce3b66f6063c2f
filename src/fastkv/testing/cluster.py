"""Start fastkv members and clusters on free 127.0.0.1 ports in a temporary directory.

``Launcher`` owns everything it starts: ``close()`` kills every process (kill -9: the data is
thrown away anyway) and removes the directory it made.  A cluster boots the way an operator's
static bootstrap does (every member with the same ``--initial-cluster``, all started at once) and
counts as started when every member answers ``/health``, which needs an elected leader.

A port can be taken by another process between the check in ``free_port`` and the member's own
bind; the member then exits with "address already in use" and the launcher starts the member (or
the whole cluster, whose peer URLs are in every member's flags) again on fresh ports.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fastkv.testing.member import Member, MemberError, poll
from fastkv.testing.ports import free_port

if TYPE_CHECKING:
    from fastkv.client import AsyncClient, Client

# Quick failover (etcd's ratio: an election timeout of 10 heartbeats); flags given later win.
FAST_TIMING = ("--heartbeat-interval", "50", "--election-timeout", "500")
# Members preallocate a WAL segment and a spare; etcd's 64 MiB each is more disk than a test needs.
TEST_WAL_SEGMENT_SIZE_BYTES = 4 * 1024 * 1024
START_ATTEMPTS = 3
_ADDRESS_IN_USE = "address already in use"


def default_command() -> list[str]:
    """The fastkv installed next to this module, run by the current interpreter."""
    return [sys.executable, "-m", "fastkv.cmd.server"]


def member_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without what would reconfigure a member behind the
    launcher's back (``ETCD_*`` variables, armed failpoints), plus small WAL segments unless
    the environment sets their size, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "FASTKV_FAILPOINTS"))}
    env.setdefault("FASTKV_WAL_SEGMENT_SIZE_BYTES", str(TEST_WAL_SEGMENT_SIZE_BYTES))
    env.update(extra or {})
    return env


class Cluster:
    """Members started together as one cluster; ``cluster[0]``, ``cluster.member("m1")``."""

    def __init__(self, members: list[Member]) -> None:
        self.members = members

    def __iter__(self) -> Iterator[Member]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, i: int) -> Member:
        return self.members[i]

    def __repr__(self) -> str:
        return f"<Cluster {self.members!r}>"

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def client_urls(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def endpoints(self) -> str:
        """The client URLs comma-separated, as ``fastkvctl --endpoints`` takes them."""
        return ",".join(self.client_urls)

    def up(self) -> list[Member]:
        """Members whose process runs and is not paused."""
        return [m for m in self.members if m.running and not m.paused]

    def leader(self, timeout: float = 15.0) -> Member:
        """The leader that every member up agrees on, polled until there is one (an election
        after a kill takes about one election timeout)."""

        def agreed() -> Member | None:
            stats = {}
            for m in self.up():
                try:
                    stats[m.name] = m.stats()
                except (OSError, MemberError):
                    return None
            leaders = [m for m in self.up() if stats.get(m.name, {}).get("state") == "StateLeader"]
            if len(leaders) != 1:
                return None
            lead_id = stats[leaders[0].name].get("id")
            if all(s.get("leaderInfo", {}).get("leader") == lead_id for s in stats.values()):
                return leaders[0]
            return None

        return poll("a leader all running members agree on", agreed, timeout)  # type: ignore[no-any-return]

    def followers(self, timeout: float = 15.0) -> list[Member]:
        """The members up other than the leader."""
        lead = self.leader(timeout)
        return [m for m in self.up() if m is not lead]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every member up answers ``/health`` healthy."""
        for m in self.up():
            m.wait_ready(timeout)

    def client(self, **kwargs: Any) -> Client:
        """A blocking ``fastkv.client.Client`` over every member's client URL (it fails over)."""
        from fastkv.client import Client

        return Client(self.client_urls, **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncClient:
        from fastkv.client import AsyncClient

        return AsyncClient(self.client_urls, **kwargs)

    def close(self) -> None:
        for m in self.members:
            m.close()


class Launcher:
    """Starts members and clusters under ``base_dir`` (a new temporary directory by default).

    ``command``: the fastkv to run (default: ``python -m fastkv.cmd.server`` of this interpreter);
    ``extra_args``: flags every member gets after the launcher's own (so they win);
    ``start_timeout``: seconds a member or cluster may take to become ready;
    ``port``: where ports come from (``free_port``)."""

    def __init__(
        self,
        command: Sequence[str] | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 30.0,
        base_dir: str | None = None,
        env: Mapping[str, str] | None = None,
        port: Callable[[], int] = free_port,
    ) -> None:
        self.command = list(command) if command else default_command()
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self._owns_dir = base_dir is None
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="fastkv-test-")
        self.env = dict(env or {})
        self.port = port
        self.started: list[Member] = []
        self._clusters = 0

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def member(
        self, name: str = "m0", extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> Member:
        """A one-member cluster, started and ready."""
        return self.cluster(1, extra_args, env, names=[name])[0]

    def cluster(
        self,
        size: int = 3,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        names: Sequence[str] | None = None,
        token: str | None = None,
    ) -> Cluster:
        """A ``size``-member cluster (members m0, m1, ...), started and every member ready."""
        if size < 1:
            raise ValueError("a cluster has at least one member")
        names = list(names or [f"m{i}" for i in range(size)])
        if len(names) != size or len(set(names)) != size:
            raise ValueError(f"need {size} distinct member names, got {names}")
        self._clusters += 1
        token = token or f"fastkv-test-{os.getpid()}-{self._clusters}"
        last: MemberError | None = None
        for _ in range(START_ATTEMPTS):
            members = self._spawn(names, list(extra_args), env, token)
            try:
                for m in members:
                    m.wait_ready(self.start_timeout)
                return Cluster(members)
            except MemberError as e:
                last = e
                for m in members:
                    m.kill()
                if not any(_ADDRESS_IN_USE in m.log() for m in members):
                    raise
                for m in members:  # a port was taken meanwhile: start afresh on other ports
                    shutil.rmtree(m.workdir, ignore_errors=True)
                    self.started.remove(m)
        raise MemberError(f"ports kept being taken; last attempt:\n{last}")

    def _spawn(
        self, names: list[str], extra_args: list[str], env: Mapping[str, str] | None, token: str
    ) -> list[Member]:
        ports = {n: (self.port(), self.port()) for n in names}
        initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
        menv = member_environment({**self.env, **(env or {})})
        members = []
        for n in names:
            url, peer = f"http://127.0.0.1:{ports[n][0]}", f"http://127.0.0.1:{ports[n][1]}"
            workdir = tempfile.mkdtemp(dir=self.base_dir, prefix=f"{n}-")
            argv = self.command + [
                "--name", n,
                "--data-dir", os.path.join(workdir, "data"),
                "--listen-client-urls", url, "--advertise-client-urls", url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", token,
                *FAST_TIMING, *self.extra_args, *extra_args,
            ]  # fmt: skip
            m = Member(n, url, peer, workdir, argv, menv)
            self.started.append(m)
            members.append(m)
        try:
            for m in members:
                m.start()
        except OSError as e:
            for m in members:
                m.kill()
            raise MemberError(f"cannot run {self.command!r}: {e}") from None
        return members

    def close(self) -> None:
        """Kill every member started here and remove the directory the launcher made."""
        for m in self.started:
            m.close()
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
