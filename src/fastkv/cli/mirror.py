"""``fastkvctl [--endpoints DEST] mirror --from URL [--finish]``: copy a running v2 server (etcd, or
fastkv) into a fresh fastkv cluster and follow it, keeping every node's indexes, until cut-over.

How (docs/migration.md, "The online path"):

1. Copy: a quorum recursive GET of the source's ``/`` at index X (plus the hidden keys, which
   listings never show: those named by ``--hidden`` and those found in the source's event history),
   written to the destination through ``POST /fastkv/mirror`` in batches of about 1 MB; the last batch
   moves the destination's store index to X.  The first batch turns the destination into a read-only
   mirror; a cluster that has taken writes of its own refuses it.
2. Follow: non-streaming recursive watches from ``waitIndex`` = last index + 1, sent on as batches of
   events (each with its own index).  An answer made live, ahead of the next index, is asked again from
   the history, which also holds the hidden keys' events that live delivery leaves out.
3. What no watch shows (refreshes of a TTL, the source's own /0 writes) leaves a gap in the indexes;
   after a gap, and when the source's index passes the last event seen, a resync compares a fresh
   listing with the destination and sends the differences (at most every ``--resync-interval``, and at
   once when the source is idle).  A history cleared past the next index (error 401) is a resync too.
4. Every ``--report-interval`` a line: source index, applied index, events and seconds behind.
   "in sync" means no index of the source is unaccounted for.
5. ``--finish`` catches up, then ends the mirror: the destination takes writes (and expires keys
   itself) from then on.  Interrupted (Ctrl-C, a lost connection), the same command resumes where the
   destination says it is.
"""

from __future__ import annotations

import http.client
import ssl
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import orjson

from fastkv.cli import flags as fl

FLAGS = [
    fl.Flag(
        ("from",),
        "string",
        "client URLs (comma-separated) of the v2 cluster to copy and follow (etcd --enable-v2)",
    ),
    fl.Flag(("finish",), "bool", "catch up, then end the mirror: the destination takes writes from then on"),
    fl.Flag(("hidden",), "string", "comma-separated hidden keys or dirs (names starting with _) to copy"),
    fl.Flag(("report-interval",), "duration", "how often to print the lag line", 5.0),
    fl.Flag(("resync-interval",), "duration", "least time between two resyncs after gaps", 10.0),
    fl.Flag(("from-ca-file",), "string", "CA bundle to verify the source's certificate (https)"),
]

BATCH_BYTES = 1 << 20
BATCH_EVENTS = 500
WATCH_TIMEOUT_S = 2.0
PROBE_KEY = "/_fastkv_mirror_probe"


class MirrorError(Exception):
    """A refusal or a failure the mirror cannot get past by retrying."""


# --- HTTP ---------------------------------------------------------------------------------------


class Endpoint:
    """Keep-alive HTTP to one base URL; a failed or timed-out exchange drops the connection."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None, headers: dict[str, str]) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise MirrorError(f"not an http(s) URL: {url!r}")
        self.url = url.rstrip("/")
        self._https = u.scheme == "https"
        self._host = u.hostname
        self._port = u.port or (443 if self._https else 80)
        self._ssl = ssl_context
        self._headers = headers
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, target: str, body: bytes | None = None, timeout: float = 30.0
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=self._ssl or ssl.create_default_context()
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        conn = self._conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            self.close()
            raise
        if resp.will_close:
            self.close()
        return resp.status, resp.headers, data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _index_header(headers: http.client.HTTPMessage) -> int:
    raw = headers.get("X-Etcd-Index")
    return int(raw) if raw else 0


def _keys_target(key: str, **params: str) -> str:
    q = urllib.parse.urlencode(params)
    return "/v2/keys" + urllib.parse.quote(key, safe="/") + ("?" + q if q else "")


# --- the data -----------------------------------------------------------------------------------


def node_record(node: dict[str, Any]) -> list[Any]:
    """[key, dir, value, createdIndex, modifiedIndex, expiration ns] of a v2 JSON node."""
    from fastkv.migrate.v2json import parse_go_time

    exp = node.get("expiration")
    return [
        node.get("key", "/"),
        bool(node.get("dir", False)),
        node.get("value", ""),
        node.get("createdIndex", 0),
        node.get("modifiedIndex", 0),
        parse_go_time(exp) if exp else 0,
    ]


def flatten(node: dict[str, Any], out: dict[str, list[Any]]) -> None:
    """Every node of a recursive listing below (and including) ``node``, parents first."""
    if node.get("key"):
        out[node["key"]] = node_record(node)
    for child in node.get("nodes") or ():
        flatten(child, out)


def event_record(ev: dict[str, Any]) -> list[Any]:
    node = node_record(ev["node"])
    prev = ev.get("prevNode")
    return [ev["action"], node, node_record(prev) if prev else None, node[4]]


def hidden_root(key: str) -> str | None:
    """The topmost hidden node on ``key``'s path (``/a/_b`` for ``/a/_b/c``), or None."""
    i = key.find("/_")
    if i < 0:
        return None
    j = key.find("/", i + 2)
    return key if j < 0 else key[:j]


def _chunks(records: list[list[Any]]) -> Iterator[list[list[Any]]]:
    chunk: list[list[Any]] = []
    size = 0
    for rec in records:
        chunk.append(rec)
        size += 80 + len(rec[0]) + len(rec[2])
        if size >= BATCH_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def diff(src: dict[str, list[Any]], dst: dict[str, list[Any]]) -> tuple[list[str], list[list[Any]]]:
    """(topmost paths to remove, records to put in order) that turn ``dst`` into ``src``."""
    removes = []
    for key in dst:
        if key not in src:
            parent = key.rsplit("/", 1)[0]
            if not parent or parent in src:
                removes.append(key)
    puts = [rec for key, rec in src.items() if dst.get(key) != rec]
    return removes, puts


# --- the mirror ---------------------------------------------------------------------------------


class Mirror:
    def __init__(
        self,
        sources: list[Endpoint],
        dest: list[Endpoint],
        out: TextIO,
        hidden: list[str] | None = None,
        report_interval: float = 5.0,
        resync_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_outage_s: float = 300.0,
    ) -> None:
        self.sources = sources  # one source cluster's members (--from): the next is tried when one fails
        self._source_at = 0
        self.dest = dest
        self.out = out
        self.hidden: set[str] = set(hidden or ())
        self.report_interval = report_interval
        self.resync_interval = resync_interval
        self.clock = clock
        self.name = ",".join(ep.url for ep in sources)  # the source as the destination records it
        self.applied = 0  # the destination's store index as the mirror left it
        self.next = 0  # the next index to ask the source's history for
        self.source_index = 0  # the highest X-Etcd-Index the source answered
        self.behind_since: float | None = None
        self.gaps = False  # indexes skipped since the last resync (refreshes, /0 writes)
        self.last_resync = -1e18
        self.last_report = clock()
        self.stopping = False
        self._dest_at = 0  # the destination endpoint that answered last
        self._reported_in_sync = False  # what the last lag line said (a change is reported at once)
        self.hidden_scanned = 0  # the source's history was scanned for hidden keys up to this index
        self.max_outage_s = max_outage_s

    # -- output

    def say(self, line: str) -> None:
        self.out.write(f"mirror: {line}\n")
        self.out.flush()

    def in_sync(self) -> bool:
        return not self.gaps and self.applied >= self.source_index

    def report(self, force: bool = False) -> None:
        now = self.clock()
        in_sync = self.in_sync()
        if not force and now - self.last_report < self.report_interval and in_sync == self._reported_in_sync:
            return
        self.last_report = now
        self._reported_in_sync = in_sync
        behind = max(0, self.source_index - self.applied)
        if self.in_sync():
            self.behind_since = None
        elif self.behind_since is None:
            self.behind_since = now
        seconds = 0.0 if self.behind_since is None else now - self.behind_since
        gaps = "; unverified gaps, resync pending" if self.gaps else ""
        state = "in sync" if self.in_sync() else "catching up"
        self.say(
            f"source index {self.source_index}, applied index {self.applied}, "
            f"{behind} events behind, {seconds:.1f} s behind{gaps} ({state})"
        )

    def _saw_source_index(self, index: int) -> None:
        if index > self.source_index:
            self.source_index = index
        if self.behind_since is None and not self.in_sync():
            self.behind_since = self.clock()

    # -- the destination

    def _outage(self, what: str, since: float | None, err: object) -> float:
        """Note a failed exchange; raise once the outage has lasted ``max_outage_s``.  Returns when the
        outage started (to pass back in)."""
        now = self.clock()
        if since is None:
            self.say(f"{what} failed ({err}); retrying")
            return now
        if now - since > self.max_outage_s:
            raise MirrorError(f"{what}: no answer for {self.max_outage_s:.0f}s: {err}")
        time.sleep(min(1.0, 0.1 + (now - since) / 10))
        return since

    def _dest_call(self, method: str, body: bytes | None) -> dict[str, Any]:
        """One exchange with ``/fastkv/mirror`` on the destination, trying each endpoint in turn while
        none answers (up to ``max_outage_s``).  A batch that timed out inside the cluster (errors 300,
        301) raises _Uncertain: it may have been applied."""
        down_since: float | None = None
        attempt = 0
        while True:
            ep = self.dest[(self._dest_at + attempt) % len(self.dest)]
            attempt += 1
            try:
                status, _, data = ep.request(method, "/fastkv/mirror", body, timeout=60.0)
            except (OSError, http.client.HTTPException) as err:
                down_since = self._outage(f"destination {ep.url}", down_since, err)
                continue
            try:
                answer = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise MirrorError(f"{ep.url}/fastkv/mirror answered {status}: {data[:200]!r}") from None
            if status == 200:
                self._dest_at = self.dest.index(ep)
                return answer
            if status == 404:
                raise MirrorError(f"{ep.url} is not a fastkv member with the mirror endpoint (404)")
            code = answer.get("errorCode") if isinstance(answer, dict) else None
            if code in (300, 301):
                raise _Uncertain(f"{ep.url}: {answer.get('message')} {answer.get('cause', '')}")
            cause = answer.get("cause") if isinstance(answer, dict) else None
            message = answer.get("message") if isinstance(answer, dict) else answer
            raise MirrorError(f"{ep.url} refused: {message}" + (f": {cause}" if cause else ""))

    def status(self) -> dict[str, Any]:
        while True:
            try:
                return self._dest_call("GET", None)
            except _Uncertain:
                time.sleep(0.2)

    def send(self, batch: dict[str, Any]) -> None:
        """Apply a batch on the destination.  A batch whose fate is unknown is looked up in the
        destination's state before it is sent again (events are not idempotent: their indexes must
        increase)."""
        batch["source"] = self.name
        body = orjson.dumps(batch)
        expect = max([e[3] for e in batch.get("events", ())] + [batch.get("index", 0)])
        since: float | None = None
        while True:
            try:
                state = self._dest_call("POST", body)
                break
            except _Uncertain as err:
                st = self.status()
                if expect and st.get("index", 0) >= expect and st.get("source") == self.name:
                    state = st
                    break
                since = self._outage("a batch", since, err)
        self.applied = state["index"]

    # -- the source

    @property
    def source(self) -> Endpoint:
        return self.sources[self._source_at]

    def _source_get(
        self, key: str, timeout: float = 120.0, watch: bool = False, **params: str
    ) -> tuple[int, int, Any]:
        """A GET on the source, trying each --from URL in turn while none answers or etcd answers 5xx
        (up to ``max_outage_s``).  With ``watch``, a timeout is raised (TimeoutError: nothing new)."""
        target = _keys_target(key, **params)
        down_since: float | None = None
        while True:
            ep = self.source
            try:
                status, headers, data = ep.request("GET", target, timeout=timeout)
            except TimeoutError:
                ep.close()
                if watch:
                    raise
                down_since = self._outage(f"source {ep.url}", down_since, "timed out")
                self._source_at = (self._source_at + 1) % len(self.sources)
                continue
            except (OSError, http.client.HTTPException) as err:
                down_since = self._outage(f"source {ep.url}", down_since, err)
                self._source_at = (self._source_at + 1) % len(self.sources)
                continue
            if status >= 500:
                down_since = self._outage(f"source {ep.url}", down_since, f"{status} {data[:200]!r}")
                self._source_at = (self._source_at + 1) % len(self.sources)
                continue
            break
        index = _index_header(headers)
        self._saw_source_index(index)
        try:
            body = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            raise MirrorError(f"{ep.url} answered {status}: {data[:200]!r}") from None
        return status, index, body

    def probe(self) -> int:
        """The source's current index (a read of a key that does not exist answers it)."""
        _, index, _ = self._source_get(PROBE_KEY)
        return index

    def listing(self, ep: Endpoint | None) -> tuple[int, dict[str, list[Any]]]:
        """(index, records) of a quorum recursive listing of ``/`` and of the known hidden keys, from the
        source (``ep`` None) or a destination endpoint."""
        out: dict[str, list[Any]] = {}
        top = 0
        for key in ["/", *sorted(self.hidden)]:
            if ep is None:
                status, index, body = self._source_get(key, recursive="true", sorted="true", quorum="true")
            else:
                status, headers, data = ep.request("GET", _keys_target(key, recursive="true", sorted="true"))
                index, body = _index_header(headers), orjson.loads(data)
            if status == 404:
                continue
            if status != 200:
                raise MirrorError(f"listing {key}: {status} {body}")
            top = top or index
            flatten(body["node"], out)
        return top, out

    def discover_hidden(self, upto: int) -> None:
        """Hidden keys written within the source's history (the last 1000 indexes up to ``upto``, less
        what an earlier scan covered)."""
        since = max(1, upto - 999, self.hidden_scanned + 1)
        self.hidden_scanned = max(self.hidden_scanned, upto)
        while since <= upto:
            try:
                status, _, body = self._source_get(
                    "/", WATCH_TIMEOUT_S, True, wait="true", recursive="true", waitIndex=str(since)
                )
            except TimeoutError:
                return  # nothing at or after ``since`` that a watch shows
            if status != 200:
                cleared = _cleared_start(body)
                if not cleared or cleared <= since:
                    return
                since = cleared
                continue
            rec = event_record(body)
            root = hidden_root(rec[1][0])
            if root is not None:
                self.hidden.add(root)
            since = rec[3] + 1

    # -- copy and resync

    def copy(self, begin: bool) -> None:
        """Make the destination equal to a fresh listing of the source (all of it at the start, the
        differences in a resync), its index the listing's."""
        started = self.clock()
        known = len(self.hidden)
        index, src = self.listing(None)
        self.discover_hidden(index)
        if len(self.hidden) > known:
            index, src = self.listing(None)
        if begin:
            removes: list[str] = []
            puts = list(src.values())
        else:
            _, dst = self.listing(self.dest[self._dest_at])
            removes, puts = diff(src, dst)
        first: dict[str, Any] = {"begin": True} if begin else {}
        if removes:
            first["remove"] = removes
        for chunk in _chunks(puts):
            self.send({**first, "nodes": chunk, "parent_index": index})
            first = {}
        self.send({**first, "index": index})
        self.next = index + 1
        self.gaps = False
        self.last_resync = self.clock()
        what = "copied" if begin else "resync:"
        self.say(
            f"{what} {len(puts)} nodes put, {len(removes)} removed, at source index {index} "
            f"in {self.clock() - started:.2f}s ({len(src)} nodes, {len(self.hidden)} hidden roots)"
        )

    # -- follow

    def start(self) -> None:
        self.probe()
        st = self.status()
        state = st.get("state")
        if state == "finished":
            raise MirrorError(
                f"the destination finished mirroring {st.get('source')}; it takes its own writes"
            )
        if state == "following" and st.get("source") != self.name:
            raise MirrorError(f"the destination mirrors {st.get('source')}, not {self.name}")
        if state == "following":
            self.applied = st["index"]
            self.next = self.applied + 1
            self.say(f"resuming {self.name} at index {self.next}")
        else:
            self.copy(begin=True)
        self.report(force=True)

    def _flush(self, pending: list[list[Any]]) -> None:
        if pending:
            self.send({"events": pending[:]})
            pending.clear()

    def idle(self, resync_now: bool = False) -> None:
        """Nothing new from the watch: account for indexes no watch shows (refreshes, the source's
        own writes), with a resync at most every ``resync_interval`` (unless ``resync_now``)."""
        if self.probe() >= self.next:
            self.gaps = True
        if self.gaps and (resync_now or self.clock() - self.last_resync >= self.resync_interval):
            self.copy(begin=False)

    def follow(self, until_in_sync: bool = False) -> None:
        """Follow the source; with ``until_in_sync``, return once every index of the source is
        accounted for (resyncing at once when needed)."""
        pending: list[list[Any]] = []
        while not self.stopping:
            if until_in_sync and not pending and self.in_sync():
                self.report(force=True)
                return
            if self._step(pending):
                self._flush(pending)
                self.idle(resync_now=until_in_sync)
            self.report()

    def _step(self, pending: list[list[Any]]) -> bool:
        """One watch from the next index; True when the source had nothing to tell (idle)."""
        try:
            status, index, body = self._source_get(
                "/", 0.3 if pending else min(WATCH_TIMEOUT_S, max(0.2, self.report_interval)), True,
                wait="true", recursive="true", waitIndex=str(self.next),
            )  # fmt: skip
        except TimeoutError:
            return True
        if status != 200:
            if _cleared_start(body) is not None:
                self._flush(pending)
                self.say(f"the source's history no longer holds index {self.next}: resync")
                self.copy(begin=False)
                return False
            raise MirrorError(f"watch: {status} {body}")
        rec = event_record(body)
        ev_index = rec[3]
        self._saw_source_index(ev_index)
        live = index < ev_index  # registered before the event: hidden keys' events were left out
        if live and ev_index > self.next:
            return False  # ask again: the history answers now, hidden events included
        if ev_index > self.next:
            self.gaps = True
        root = hidden_root(rec[1][0])
        if root is not None:
            self.hidden.add(root)
        pending.append(rec)
        self.next = ev_index + 1
        if live or len(pending) >= BATCH_EVENTS or ev_index >= index:
            self._flush(pending)
        return False

    def finish(self) -> None:
        """Catch up, end the mirror, then check that the source took no write meanwhile (a writer
        that was not stopped): such writes are not on the destination, and that is said loudly."""
        self.follow(until_in_sync=True)
        self.send({"finish": True})
        self.say(
            f"finished: the destination holds the source as of index {self.applied} and takes writes now"
        )
        late = self.probe() - self.applied
        if late > 0:
            self.say(
                f"WARNING: the source moved {late} indexes past {self.applied} during the cut-over; "
                "writes made on it since are not on the destination"
            )


class _Uncertain(Exception):
    """The destination timed out on a batch: it may or may not have been applied."""


def _cleared_start(body: Any) -> int | None:
    """For a 401 "history cleared" answer, the oldest index the history still holds."""
    if not isinstance(body, dict) or body.get("errorCode") != 401:
        return None
    cause = body.get("cause", "")
    try:
        return int(cause[cause.rindex("[") + 1 : cause.rindex("/")])
    except ValueError:
        return 0


# --- the command --------------------------------------------------------------------------------


def run(ctx: Any) -> int:
    flags = ctx.flags
    urls = [u for u in (flags["from"] or "").split(",") if u]
    if not urls:
        ctx.stderr.write("Error:  --from is required (the source's client URLs)\n")
        return 1
    from fastkv.cli import auth as auth_cli

    dest_urls = ctx.endpoints()
    dest_hosts = {urllib.parse.urlsplit(d).netloc for d in dest_urls}
    if any(urllib.parse.urlsplit(u).netloc in dest_hosts for u in urls):
        ctx.stderr.write("Error:  the source is one of the destination endpoints\n")
        return 1
    src_ctx = ssl.create_default_context(cafile=flags["from-ca-file"]) if flags["from-ca-file"] else None
    dest_ctx = ctx.tls_context()
    headers = auth_cli.credentials_headers(ctx)
    try:
        mirror = Mirror(
            [Endpoint(u, src_ctx, {}) for u in urls],
            [Endpoint(d, dest_ctx, headers) for d in dest_urls],
            ctx.stdout,
            [h for h in (flags["hidden"] or "").split(",") if h],
            report_interval=flags["report-interval"],
            resync_interval=flags["resync-interval"],
        )
        mirror.start()
        if flags["finish"]:
            mirror.finish()
        else:
            mirror.follow()
    except KeyboardInterrupt:
        ctx.stdout.write("mirror: interrupted; run the same command to resume\n")
        return 130
    except (MirrorError, OSError, http.client.HTTPException) as err:
        ctx.stderr.write(f"Error:  {err}\n")
        return 1
    return 0


def action(ctx: Any) -> None:
    """The Command action for fastkv.cli.main: its ``Exit`` is taken from the module that made ``ctx``
    (``__main__`` under ``python -m fastkv.cli.main``, where importing fastkv.cli.main gives another class)."""
    code = run(ctx)
    if code:
        raise sys.modules[type(ctx).__module__].Exit(code)
