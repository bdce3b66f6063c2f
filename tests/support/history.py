"""Record real client histories against a running cluster, for tests/support/linearizability.py.

Client threads issue quorum reads (``GET ?quorum=true``), writes (``PUT value``) and
compare-and-swaps (``PUT prevValue=...``) on a few keys through random members.  Every written
value is unique, so a read names the write it saw.  Outcomes:

- 200/201: done.  412 "Compare failed" or 404 "Key not found" on a cas: definitely failed.
  404 on a read: the key is missing.
- Connection refused: the request never reached a server (the member is down), so it is
  dropped from the history: it cannot have taken effect.
- Timeout (``CLIENT_TIMEOUT_S``), reset, or any 5xx: ambiguous; it may take effect later or never.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from tests.support.linearizability import INFINITY, Operation, cas, read, write
from tests.support.procs import ServerProcess

KEYS = ("lin0", "lin1", "lin2")
CLIENT_TIMEOUT_S = 2.0


class Ambiguous(Exception):
    """The request may or may not have taken effect."""


class NotSent(Exception):
    """The request never reached a server."""


def call(
    url: str,
    method: str,
    path: str,
    form: dict[str, str] | None = None,
    timeout: float = CLIENT_TIMEOUT_S,
) -> tuple[int, Any]:
    """(status, decoded JSON body) of one request on a fresh connection; raises NotSent when the
    connection was refused, Ambiguous on a timeout, a reset or a 5xx."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    body = urllib.parse.urlencode(form) if form is not None else None
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
    try:
        conn.connect()
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        status, payload = resp.status, resp.read()
    except ConnectionRefusedError as e:  # raised by connect() only: no byte was sent
        raise NotSent from e
    except (OSError, http.client.HTTPException) as e:  # timeout, reset, closed mid-answer
        raise Ambiguous from e
    finally:
        conn.close()
    if status >= 500:
        raise Ambiguous(status)
    return status, json.loads(payload or b"null")


class Client(threading.Thread):
    """One client: random operations on ``keys`` through random ``members`` until ``stop`` is set.

    ``history``: the operations for the checker.  ``answered``: (member URL, operation) for every
    operation a member answered definitely (done, or a cas that failed its compare), to tell
    which member vouched for it."""

    def __init__(
        self,
        ident: int,
        members: Sequence[ServerProcess],
        stop: threading.Event,
        keys: Sequence[str] = KEYS,
    ) -> None:
        super().__init__(daemon=True, name=f"lin-client-{ident}")
        self.client_id = ident
        self.members = members
        self.keys = keys
        self.stop_flag = stop
        self.rng = random.Random(1000 + ident)
        self.history: list[Operation] = []
        self.answered: list[tuple[str, Operation]] = []
        self.seen: dict[str, str] = {}  # last value this client saw per key: a likely cas compare
        self.counts = {"sent": 0, "ambiguous": 0, "not-sent": 0}
        self.unexpected: list[str] = []

    def run(self) -> None:
        n = 0
        while not self.stop_flag.is_set():
            n += 1
            url = self.rng.choice(self.members).url
            key = self.rng.choice(self.keys)
            roll = self.rng.random()
            try:
                if roll < 0.4:
                    self._read(url, key)
                elif roll < 0.7:
                    self._write(url, key, f"c{self.client_id}-{n}")
                else:
                    self._cas(url, key, f"c{self.client_id}-{n}")
                self.counts["sent"] += 1
            except NotSent:
                self.counts["not-sent"] += 1
                time.sleep(0.01)

    def _read(self, url: str, key: str) -> None:
        start = time.monotonic_ns()
        try:
            status, body = call(url, "GET", f"/v2/keys/{key}?quorum=true")
        except Ambiguous:
            self.counts["ambiguous"] += 1  # an unanswered read constrains nothing
            return
        ret = time.monotonic_ns()
        if status == 200:
            value = body["node"]["value"]
            self.seen[key] = value
        elif status == 404 and body["errorCode"] == 100:
            value = None
        else:
            self.unexpected.append(f"GET {key}: {status} {body}")
            return
        op = read(key, start, ret, value, self.client_id)
        self.history.append(op)
        self.answered.append((url, op))

    def _write(self, url: str, key: str, value: str) -> None:
        start = time.monotonic_ns()
        try:
            status, body = call(url, "PUT", f"/v2/keys/{key}", {"value": value})
        except Ambiguous:
            self.counts["ambiguous"] += 1
            self.history.append(write(key, start, INFINITY, value, self.client_id))
            return
        ret = time.monotonic_ns()
        if status in (200, 201):
            self.seen[key] = value
            op = write(key, start, ret, value, self.client_id)
            self.history.append(op)
            self.answered.append((url, op))
        else:
            self.unexpected.append(f"PUT {key}={value}: {status} {body}")

    def _cas(self, url: str, key: str, new: str) -> None:
        expected = self.seen.get(key) or "never-written"
        form = {"value": new, "prevValue": expected}
        start = time.monotonic_ns()
        try:
            status, body = call(url, "PUT", f"/v2/keys/{key}", form)
        except Ambiguous:
            self.counts["ambiguous"] += 1
            self.history.append(cas(key, start, INFINITY, expected, new, None, self.client_id))
            return
        ret = time.monotonic_ns()
        if status == 200:
            self.seen[key] = new
            op = cas(key, start, ret, expected, new, True, self.client_id)
            self.history.append(op)
            self.answered.append((url, op))
        elif (status, body.get("errorCode")) in ((412, 101), (404, 100)):
            op = cas(key, start, ret, expected, new, False, self.client_id)
            self.history.append(op)
            self.answered.append((url, op))
        else:
            self.unexpected.append(f"CAS {key} {expected}->{new}: {status} {body}")


def agreed_leader(members: Sequence[ServerProcess], timeout: float = 15.0) -> ServerProcess:
    """The member of ``members`` that every one of them names as leader (by its peer URL)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            views = set()
            for m in members:
                status, body = call(m.url, "GET", "/v2/members/leader")
                views.add(body["peerURLs"][0] if status == 200 else None)
            # Survivors may still name a killed leader until they elect another: keep polling.
            agreed = next(iter(views)) if len(views) == 1 else None
            for m in members:
                if m.peer_url == agreed:
                    return m
        except (Ambiguous, NotSent, KeyError, TypeError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"no agreed leader within {timeout}s")
