"""The load a nemesis run puts on the cluster, and what it records.

Register clients: quorum GET, PUT and compare-and-swap on a few keys through random members, every
written value unique (``c<client>-<n>``), recorded as a history for the linearizability checker.
Ack writers: PUT of a fresh key per request (``acked/...``), each acknowledged one remembered so it
can be read back through every member at the end.

Outcome of a request (tests/support/history.call):
- 2xx: done.  A cas answered 412 "Compare failed" / 404 "Key not found": definitely failed.
- Connection refused: never reached a server; dropped (it cannot have taken effect).
- Timeout or reset: unknown outcome; in the history with no return (it may apply at any point
  after its call, or never).
- Any other answer with an error status (etcd's 500 "request timed out", 503 ...): the member
  answered that the write failed.  It stays in the history as unknown (the checker must not trust
  the answer), and its value is kept in ``errored``: if it ever shows up later (a read, a final
  value, a key in the final tree) it is a *late-applied errored write*, counted apart.

Every answered request (any status the member decided on) and every success is timestamped, so
the runner can measure the longest stretch without a successful operation around each fault.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from tests.support.history import CLIENT_TIMEOUT_S, Ambiguous, NotSent
from tests.support.linearizability import INFINITY, Operation, cas, read, write

KEYS = ("r0", "r1", "r2")


class Answered5xx(Exception):
    """A member answered with a server error: ``status`` and ``body`` (a JSON error, mostly)."""

    def __init__(self, status: int, body: object) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body


def call(url: str, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, Any]:
    """tests.support.history.call, with the body of a 5xx answer kept: (status, JSON body);
    NotSent when refused, Ambiguous on a timeout or reset, Answered5xx on a server error."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=CLIENT_TIMEOUT_S)
    body = urllib.parse.urlencode(form) if form is not None else None
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
    try:
        conn.connect()
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        status, payload = resp.status, resp.read()
    except ConnectionRefusedError as e:
        raise NotSent from e
    except (OSError, http.client.HTTPException) as e:
        raise Ambiguous from e
    finally:
        conn.close()
    try:
        decoded = json.loads(payload or b"null")
    except ValueError:
        decoded = payload[:200].decode(errors="replace")
    if status >= 500:
        raise Answered5xx(status, decoded)
    return status, decoded


class Recorder:
    """What all clients share: success times and the errored writes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.successes: list[int] = []  # monotonic ns of each successful operation's return
        self.errored: dict[str, str] = {}  # value -> "PUT key: status body" of writes answered with an error
        self.unexpected: list[str] = []

    def success(self, at_ns: int) -> None:
        with self.lock:
            self.successes.append(at_ns)

    def error(self, value: str, what: str) -> None:
        with self.lock:
            self.errored[value] = what


class RegisterClient(threading.Thread):
    def __init__(
        self, ident: int, urls: Callable[[], list[str]], stop: threading.Event, rec: Recorder, seed: int
    ) -> None:
        super().__init__(daemon=True, name=f"nemesis-client-{ident}")
        self.client_id = ident
        self.urls = urls
        self.stop_flag = stop
        self.rec = rec
        self.rng = random.Random(seed * 1000 + ident)
        self.history: list[Operation] = []
        self.seen: dict[str, str] = {}

    def run(self) -> None:
        n = 0
        while not self.stop_flag.is_set():
            n += 1
            url = self.rng.choice(self.urls())
            key = self.rng.choice(KEYS)
            roll = self.rng.random()
            try:
                if roll < 0.4:
                    self._read(url, key)
                elif roll < 0.7:
                    self._write(url, key, f"c{self.client_id}-{n}")
                else:
                    self._cas(url, key, f"c{self.client_id}-{n}")
            except NotSent:
                time.sleep(0.02)

    def _read(self, url: str, key: str) -> None:
        start = time.monotonic_ns()
        try:
            status, body = call(url, "GET", f"/v2/keys/{key}?quorum=true")
        except (Ambiguous, Answered5xx):
            return
        ret = time.monotonic_ns()
        if status == 200:
            value = body["node"]["value"]
            self.seen[key] = value
        elif status == 404 and body.get("errorCode") == 100:
            value = None
        else:
            with self.rec.lock:
                self.rec.unexpected.append(f"GET {key}: {status} {body}")
            time.sleep(0.02)
            return
        self.history.append(read(key, start, ret, value, self.client_id))
        self.rec.success(ret)

    def _write(self, url: str, key: str, value: str) -> None:
        start = time.monotonic_ns()
        try:
            status, body = call(url, "PUT", f"/v2/keys/{key}", {"value": value})
        except Ambiguous:
            self.history.append(write(key, start, INFINITY, value, self.client_id))
            return
        except Answered5xx as e:  # the member said it failed: unknown to the checker, watched
            self.history.append(write(key, start, INFINITY, value, self.client_id))
            self.rec.error(value, f"PUT {key}={value}: {e}")
            return
        ret = time.monotonic_ns()
        if status in (200, 201):
            self.seen[key] = value
            self.history.append(write(key, start, ret, value, self.client_id))
            self.rec.success(ret)
        else:
            # Answered with an error (not 2xx): unknown to the checker; applied later = caught.
            self.history.append(write(key, start, INFINITY, value, self.client_id))
            self.rec.error(value, f"PUT {key}={value}: {status} {body}")
            time.sleep(0.02)

    def _cas(self, url: str, key: str, new: str) -> None:
        expected = self.seen.get(key) or "never-written"
        start = time.monotonic_ns()
        try:
            status, body = call(url, "PUT", f"/v2/keys/{key}", {"value": new, "prevValue": expected})
        except Ambiguous:
            self.history.append(cas(key, start, INFINITY, expected, new, None, self.client_id))
            return
        except Answered5xx as e:
            self.history.append(cas(key, start, INFINITY, expected, new, None, self.client_id))
            self.rec.error(new, f"CAS {key} {expected}->{new}: {e}")
            return
        ret = time.monotonic_ns()
        if status == 200:
            self.seen[key] = new
            self.history.append(cas(key, start, ret, expected, new, True, self.client_id))
            self.rec.success(ret)
        elif (status, body.get("errorCode")) in ((412, 101), (404, 100)):
            self.history.append(cas(key, start, ret, expected, new, False, self.client_id))
            self.rec.success(ret)
        else:
            self.history.append(cas(key, start, INFINITY, expected, new, None, self.client_id))
            self.rec.error(new, f"CAS {key} {expected}->{new}: {status} {body}")
            time.sleep(0.02)


class AckWriter(threading.Thread):
    """PUTs a fresh key per request; ``acked``: key -> value of every acknowledged one."""

    def __init__(
        self, ident: int, urls: Callable[[], list[str]], stop: threading.Event, rec: Recorder
    ) -> None:
        super().__init__(daemon=True, name=f"nemesis-writer-{ident}")
        self.writer_id = ident
        self.urls = urls
        self.stop_flag = stop
        self.rec = rec
        self.acked: dict[str, str] = {}
        self.errored_keys: dict[str, str] = {}
        self.unknown = 0

    def run(self) -> None:
        n = 0
        while not self.stop_flag.is_set():
            n += 1
            urls = self.urls()
            url = urls[(self.writer_id + n) % len(urls)]
            key, value = f"acked/w{self.writer_id}-{n}", f"a{self.writer_id}-{n}"
            try:
                status, body = call(url, "PUT", f"/v2/keys/{key}", {"value": value})
            except Ambiguous:
                self.unknown += 1
                continue
            except Answered5xx as e:
                self.errored_keys[key] = str(e)
                continue
            except NotSent:
                time.sleep(0.02)
                continue
            if status in (200, 201):
                self.acked[key] = value
                self.rec.success(time.monotonic_ns())
            else:
                self.errored_keys[key] = f"{status} {body}"
                time.sleep(0.02)


class Load:
    """``clients`` register clients and ``writers`` ack writers over ``urls()``."""

    def __init__(self, urls: Callable[[], list[str]], seed: int, clients: int = 4, writers: int = 2) -> None:
        self.stop_flag = threading.Event()
        self.rec = Recorder()
        self.clients = [RegisterClient(i, urls, self.stop_flag, self.rec, seed) for i in range(clients)]
        self.writers = [AckWriter(i, urls, self.stop_flag, self.rec) for i in range(writers)]

    def start(self) -> None:
        for t in [*self.clients, *self.writers]:
            t.start()

    def stop(self) -> None:
        self.stop_flag.set()
        for t in [*self.clients, *self.writers]:
            t.join(CLIENT_TIMEOUT_S + 10)
        alive = [t.name for t in [*self.clients, *self.writers] if t.is_alive()]
        if alive:
            raise RuntimeError(f"load threads did not stop: {alive}")

    def history(self) -> list[Operation]:
        return [op for c in self.clients for op in c.history]

    def acked(self) -> dict[str, str]:
        return {k: v for w in self.writers for k, v in w.acked.items()}

    def errored_keys(self) -> dict[str, str]:
        return {k: v for w in self.writers for k, v in w.errored_keys.items()}
