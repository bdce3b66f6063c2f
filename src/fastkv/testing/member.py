"""One fastkv member process: start, wait until ready, stop, kill -9, pause, resume, restart.

The process writes its log to ``log_path`` (appended across restarts, so one file tells a
member's whole story).  Every wait is bounded by a timeout and polls; nothing sleeps for a
guessed time.  ``close()`` (and the module's exit hook, for members a crashed test never
closed) kills the process, so no member outlives the test process that started it normally.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastkv.client import AsyncClient, Client

POLL_INTERVAL_S = 0.05

# Members with a live process; the exit hook kills what is left in here.
_live: weakref.WeakSet[Member] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for m in list(_live):
        m.kill()


class MemberError(RuntimeError):
    """A member did not start or did not become ready; the message ends with its log's tail."""


def http_json(url: str, timeout: float = 1.0) -> tuple[int, Any]:
    """(status, decoded JSON body or None) of a GET; OSError when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def poll(what: str, check: Callable[[], Any], timeout: float, interval: float = POLL_INTERVAL_S) -> Any:
    """Call ``check`` until it returns something true, at most ``timeout`` seconds; its result.
    TimeoutError names ``what`` and the last result (or exception) seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except OSError as e:  # not answering yet
            last = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s (last: {last!r})")
        time.sleep(interval)


class Member:
    """A fastkv member started from ``argv`` with ``env``, serving clients on ``client_url``.

    ``data_dir`` is the member's ``--data-dir``; ``workdir`` holds it and the log.  State:
    ``running`` (a live process, maybe paused), ``paused`` (stopped with SIGSTOP)."""

    def __init__(
        self,
        name: str,
        client_url: str,
        peer_url: str,
        workdir: str,
        argv: list[str],
        env: Mapping[str, str],
    ) -> None:
        self.name = name
        self.client_url = client_url
        self.peer_url = peer_url
        self.workdir = workdir
        self.data_dir = os.path.join(workdir, "data")
        self.log_path = os.path.join(workdir, "member.log")
        self.argv = list(argv)
        self.env = dict(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<Member {self.name} {self.client_url} {state}>"

    # --- process control ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """The process is alive (paused counts as alive)."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def start(self) -> None:
        """Start the process (no-op when it runs) without waiting for it; see ``wait_ready``."""
        if self.running:
            return
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        self.paused = False
        _live.add(self)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll ``/health`` until the member answers healthy (it knows a leader); MemberError if
        the process exits first or the timeout passes."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise MemberError(
                    f"member {self.name} exited with {self.returncode} before it was ready\n{self.log_tail()}"
                )
            try:
                status, body = http_json(self.client_url + "/health", timeout=1.0)
                if status == 200 and isinstance(body, dict) and body.get("health") == "true":
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise MemberError(f"member {self.name} not ready within {timeout:g}s\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL_S)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (a paused member is resumed so it can act on it) and wait; SIGKILL if it has not
        exited within ``timeout``.  The exit status (negative: killed by that signal)."""
        if self.running and self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._exited()
        return self.returncode

    def kill(self) -> int | None:
        """kill -9: the process dies at once, with no chance to flush or say goodbye."""
        if self.running and self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
        self._exited()
        return self.returncode

    def restart(self, timeout: float = 30.0) -> None:
        """Stop (if running), start with the same flags and data dir, wait until ready."""
        self.stop()
        self.start()
        self.wait_ready(timeout)

    def pause(self) -> None:
        """SIGSTOP: the process stays alive but does nothing (no heartbeats, no answers) until
        ``resume``; what a long GC pause or an overloaded host looks like to the cluster."""
        if not self.running or self.proc is None:
            raise MemberError(f"member {self.name} is not running")
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        if self.running and self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def close(self) -> None:
        """Kill the process if it still runs (the data dir is the owner's to remove)."""
        self.kill()

    def _exited(self) -> None:
        self.paused = False
        _live.discard(self)

    # --- what it says ---------------------------------------------------------------------

    def stats(self, timeout: float = 1.0) -> dict[str, Any]:
        """``/v2/stats/self``: id, name, state (``StateLeader``/``StateFollower``...), leaderInfo."""
        status, body = http_json(self.client_url + "/v2/stats/self", timeout)
        if status != 200 or not isinstance(body, dict):
            raise MemberError(f"member {self.name}: /v2/stats/self answered {status}")
        return body

    @property
    def id(self) -> str:
        """The member id (hex, as the members API shows it); asks the running member."""
        return str(self.stats()["id"])

    def client(self, **kwargs: Any) -> Client:
        """A blocking ``fastkv.client.Client`` talking to this member only."""
        from fastkv.client import Client

        return Client([self.client_url], **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncClient:
        """An asyncio ``fastkv.client.AsyncClient`` talking to this member only."""
        from fastkv.client import AsyncClient

        return AsyncClient([self.client_url], **kwargs)

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        tail = self.log().splitlines()[-lines:]
        return "\n".join(f"  {self.name}| {line}" for line in tail)
