"""Peer traffic: raft messages between members over TCP, on the event loop, without a Task per message.

Shape (etcd's rafthttp, on frames instead of HTTP):
- Each member dials one long-lived *message* connection to every peer and writes on it
  only; what a peer sends us arrives on the connection that peer dialed.  So the two
  directions never contend, and a member restarting just redials.
- ``send(messages)`` never blocks: it encodes each message into its peer's queue and
  schedules one flush per loop iteration, which writes each peer's queue with one write()
  (pipelining: nothing waits for an answer).  A queue holds at most ``max_queued_messages``;
  beyond that, while the peer's socket is paused (its kernel buffer full) or the peer is
  unreachable, messages are dropped and the peer reported unreachable: Raft retransmits
  (Raft paper §5.3), and a leader must not stall on one slow follower.
- Messages to a peer being dialed wait in the queue; to a peer in backoff they are dropped.
- A MsgSnap is streamed on its own connection in chunks, each written only after the socket
  drained below its high-water mark, so a large snapshot never delays heartbeats and never
  sits in memory twice.  The receiver acknowledges once raft has the snapshot;
  ``on_snapshot_status(peer, ok)`` reports the outcome (etcd's ReportSnapshot).
- Every connection starts with a handshake (codec.Hello).  The listener refuses, as etcd
  does: a different protocol version, cluster id or destination id (412), a removed member
  (410 "removed member"), an unknown sender (404).  The dialer logs the refusal, reports it
  through ``on_rejected`` and backs off.
- Reconnects back off exponentially from ``backoff_base_s`` to ``backoff_max_s`` with
  jitter from an injected ``random.Random`` (two members never redial in lockstep).
- The dialer pings every ``probe_interval_s``; the answer gives the round-trip time
  (``round_trip_time(peer)``), and a connection silent for ``probe_timeout_s`` is closed
  (a partitioned peer's TCP connection can stay open for minutes otherwise).

Callbacks run on the loop, synchronously: ``on_message(m)`` for every message received,
``on_unreachable(peer_id)`` (the server calls raft.report_unreachable), ``on_snapshot_status``,
``is_removed(member_id)``, ``on_rejected(peer_id, status, reason)``, and
``on_dropped_proposal(m)`` for a MsgProp dropped before any byte of it was written to a socket
(the peer unreachable, its queue full or its connection lost with the message still queued): the
leader never saw it, so the Ready loop may forward it again while its client waits.  A MsgProp
already written may or may not have arrived and is never handed back.

Non-goals: TLS (https peer URLs are refused), etcd wire compatibility (rafthttp speaks
protobuf over HTTP; fastkv members talk only to fastkv members).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

from fastkv.histogram import Histogram
from fastkv.logutil import event
from fastkv.netutil import accept_ready, address_text, close_listeners, listen_sockets
from fastkv.raft.messages import (
    MSG_BEAT,
    MSG_CHECK_QUORUM,
    MSG_HUP,
    MSG_NAMES,
    MSG_PROP,
    MSG_SNAP,
    MSG_SNAP_STATUS,
    MSG_UNREACHABLE,
    Message,
)
from fastkv.tls import ServerTLS, check_allowed_cn, handshake_error_reason

from . import codec
from .codec import (
    STREAM_MEMBERS,
    STREAM_MESSAGE,
    STREAM_SNAPSHOT,
    Decoder,
    FrameError,
    Hello,
    HelloReply,
    Ping,
    Pong,
    SnapAck,
)

log = logging.getLogger("fastkv.transport")

# Messages a member makes for itself (timers, transport reports): never accepted from the network.
LOCAL_ONLY_MESSAGES = frozenset((MSG_HUP, MSG_BEAT, MSG_UNREACHABLE, MSG_SNAP_STATUS, MSG_CHECK_QUORUM))
# Before its handshake passed, a connection may make us hold this much (a hello is ~60 bytes) ...
MAX_PREHANDSHAKE_BYTES = 64 * 1024
# ... and only so many such connections may be open at once; accepted connections in all.
MAX_PREHANDSHAKE_CONNECTIONS = 16
MAX_PEER_CONNECTIONS = 256
# Connections waiting in the kernel for an https peer listener to accept them.
PEER_LISTEN_BACKLOG = 100

STATUS_OK = 200
STATUS_NOT_FOUND = 404  # etcd: "error sender not found"
STATUS_GONE = 410  # etcd: "removed member"
STATUS_PRECONDITION_FAILED = 412  # etcd: cluster id / version / destination mismatch

#: Upper bounds of etcd's etcd_network_peer_round_trip_time_seconds buckets: 0.1 ms doubling to 3.2768 s.
RTT_BUCKETS_S = tuple(0.0001 * 2**i for i in range(16))


def parse_peer_url(url: str) -> tuple[str, int]:
    """(host, port) of an etcd peer URL such as http://127.0.0.1:2380 or https://10.0.0.1:2380."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"peer URL must be http(s)://host:port: {url!r}")
    return u.hostname, u.port or 2380


def is_tls_url(url: str) -> bool:
    return url.startswith("https://")


PEER_DIAL_ENV = "FASTKV_PEER_DIAL"


def parse_peer_dial(spec: str) -> dict[int, str]:
    """``FASTKV_PEER_DIAL``: a test/ops hook, ``<member-id-hex>=http://host:port,...``: dial
    that member at that address instead of its advertised peer URLs (e.g. through a
    fault-injecting proxy, one per ordered pair of members, to partition one member both ways).
    The advertised URLs stay what the membership says; only where this member dials changes."""
    out: dict[int, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        ident, sep, url = item.partition("=")
        if not sep:
            raise ValueError(f"{PEER_DIAL_ENV}: expected <member-id-hex>=<url>, got {item!r}")
        parse_peer_url(url)
        out[int(ident, 16)] = url
    return out


class PeerTLSError(ConnectionError):
    """The peer's certificate was refused after the handshake (its CN, say)."""


class _Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class _Dialer(asyncio.Protocol):
    """Our end of a connection we dialed: writes frames, reads the replies (hello reply, pongs,
    the snapshot ack)."""

    def __init__(self, t: Transport, peer: _Peer, stream: str) -> None:
        self.t = t
        self.peer = peer
        self.stream = stream
        self.transport: asyncio.Transport | None = None
        self.decoder = Decoder(t.max_frame_bytes)
        loop = t.loop
        self.accepted: asyncio.Future[HelloReply] = loop.create_future()
        self.snap_ack: asyncio.Future[SnapAck] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.paused = False
        self._drained: asyncio.Future[None] | None = None
        self.last_rx_ns = 0
        self._probe: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.last_rx_ns = self.t.clock_ns()
        hello = Hello(self.t.cluster_id, self.t.member_id, self.peer.id, self.stream)
        self.transport.write(codec.encode_hello(hello))

    def data_received(self, data: bytes) -> None:
        self.last_rx_ns = self.t.clock_ns()
        try:
            frames = self.decoder.feed(data)
        except FrameError as e:
            event(
                log,
                logging.WARNING,
                "bad frame from peer",
                **{"remote-peer-id": f"{self.peer.id:x}", "stream-type": self.stream, "error": str(e)},
            )
            self.close()
            return
        for f in frames:
            if type(f) is Pong:
                self.peer.rtt_ns = self.last_rx_ns - f.sent_ns
                self.peer.rtt.observe(self.peer.rtt_ns / 1e9)
            elif type(f) is HelloReply:
                if not self.accepted.done():
                    self.accepted.set_result(f)
            elif type(f) is SnapAck:
                if not self.snap_ack.done():
                    self.snap_ack.set_result(f)
            else:
                event(
                    log,
                    logging.WARNING,
                    "unexpected frame on a dialed connection",
                    **{"remote-peer-id": f"{self.peer.id:x}", "frame": type(f).__name__},
                )
                self.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if self._probe is not None:
            self._probe.cancel()
        for fut in (self.accepted, self.snap_ack):
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection to {self.peer.id:x} lost"))
                # Nobody may be waiting any more; mark it retrieved so asyncio does not log it.
                fut.exception()
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ConnectionError("connection lost"))
            self._drained.exception()
        if not self.closed.done():
            self.closed.set_result(None)
        self.transport = None
        self.t._dialer_lost(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self.stream == STREAM_MESSAGE:
            self.t._schedule_flush(self.peer)

    async def drain(self) -> None:
        if self.paused:
            self._drained = self.t.loop.create_future()
            await self._drained

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def start_probing(self) -> None:
        self._probe = self.t.loop.call_later(self.t.probe_interval_s, self._send_probe)

    def _send_probe(self) -> None:
        if self.transport is None:
            return
        now = self.t.clock_ns()
        if now - self.last_rx_ns > self.t.probe_timeout_s * 1e9:
            event(
                log,
                logging.WARNING,
                "peer did not answer, closing the connection",
                **{"remote-peer-id": f"{self.peer.id:x}", "timeout": f"{self.t.probe_timeout_s:.1f}s"},
            )
            self.transport.abort()
            return
        self.transport.write(codec.encode_ping(Ping(now)))
        self._probe = self.t.loop.call_later(self.t.probe_interval_s, self._send_probe)


class _TLSPeerServer:
    """An https peer listener.  It accepts sockets itself and hands each one to
    ``loop.connect_accepted_socket(ssl=...)``, so the TLS layer owns the socket before a byte of
    it is read, and a failed handshake raises here, where its reason is logged (a server made by
    ``create_server(ssl=...)`` keeps the reason to itself).  Accepting plain TCP and upgrading
    with ``start_tls`` is not an option under uvloop: the transport starts reading as soon as
    the plain protocol is connected, a ClientHello read then is lost to the TLS layer, and the
    handshake stalls until its timeout.  The peer certificate's CN is checked by the
    _Listener as it is connected, before any of the peer's data reaches it."""

    def __init__(self, t: Transport, tls: ServerTLS, sockets: list[socket.socket]) -> None:
        self.t = t
        self.tls = tls
        self.sockets = sockets
        self._refusing_logged = False
        for lsock in sockets:
            t.loop.add_reader(lsock.fileno(), self._accept, lsock)

    @classmethod
    def listen(cls, t: Transport, tls: ServerTLS, host: str, port: int) -> _TLSPeerServer:
        """Binds every address ``host`` resolves to (as create_server does); raises OSError."""
        return cls(t, tls, listen_sockets(host, port, PEER_LISTEN_BACKLOG))

    def _accept(self, lsock: socket.socket) -> None:
        try:
            for conn, remote in accept_ready(lsock, PEER_LISTEN_BACKLOG):
                self._accepted(conn, remote)
        except OSError as e:
            # Out of descriptors, say: the connection waits in the backlog for the next try.
            event(log, logging.WARNING, "cannot accept a peer connection", error=str(e))

    def _accepted(self, conn: socket.socket, remote: object) -> None:
        t = self.t
        if len(t._handshakes) >= MAX_PREHANDSHAKE_CONNECTIONS:
            if not self._refusing_logged:
                self._refusing_logged = True
                event(
                    log,
                    logging.WARNING,
                    "too many peer TLS handshakes under way, refusing new connections",
                    handshakes=len(t._handshakes),
                )
            conn.close()
            return
        self._refusing_logged = False
        task = t.loop.create_task(self._handshake(conn, remote))
        t._handshakes.add(task)
        task.add_done_callback(t._handshakes.discard)

    async def _handshake(self, conn: socket.socket, remote: object) -> None:
        try:
            await self.t.loop.connect_accepted_socket(
                lambda: _Listener(self.t, self.tls),
                conn,
                ssl=self.tls.context,
                ssl_handshake_timeout=self.t.dial_timeout_s,
            )
        except (OSError, TimeoutError, ConnectionError) as e:
            # The transport that owned the socket has closed it.
            event(
                log,
                logging.WARNING,
                "rejected connection from peer: TLS handshake failed",
                **{"remote-addr": address_text(remote), "error": handshake_error_reason(e)},
            )

    def close(self) -> None:
        close_listeners(self.sockets, self.t.loop.remove_reader)

    async def wait_closed(self) -> None:
        return None

    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])


class _Listener(asyncio.Protocol):
    """Our end of a connection a peer dialed: checks its handshake, then hands every message
    to raft and answers pings (and, on a snapshot stream, acknowledges the snapshot)."""

    def __init__(self, t: Transport, tls: ServerTLS | None = None) -> None:
        self.t = t
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.decoder = Decoder(t.max_frame_bytes, t.max_snapshot_bytes)
        self.hello: Hello | None = None
        self.last_rx_ns = 0
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        t = self.t
        if self.tls is not None:
            reason = self.tls.check_peer(transport.get_extra_info("ssl_object"))
            if reason is not None:
                event(
                    log,
                    logging.WARNING,
                    "rejected connection from peer",
                    **{"remote-addr": address_text(transport.get_extra_info("peername")), "error": reason},
                )
                transport.close()
                return
        self.transport = cast(asyncio.Transport, transport)
        unverified = sum(1 for lst in t._listeners if lst.hello is None)
        if len(t._listeners) >= MAX_PEER_CONNECTIONS or unverified >= MAX_PREHANDSHAKE_CONNECTIONS:
            if not t._overload_logged:
                t._overload_logged = True
                event(
                    log,
                    logging.WARNING,
                    "too many peer connections, refusing new ones",
                    connections=len(t._listeners),
                    unverified=unverified,
                )
            self.transport.abort()
            self.transport = None
            return
        t._overload_logged = False
        self.t._listeners.add(self)
        if not self.t._receiving:
            self.transport.pause_reading()
        self.last_rx_ns = self.t.clock_ns()
        self._idle = self.t.loop.call_later(self.t.probe_timeout_s, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self.transport = None
        self.t._listeners.discard(self)

    def _check_idle(self) -> None:
        # A snapshot stream is quiet only while the sender waits for us; pings keep message
        # streams busy.  Silence beyond the timeout means the dialer is gone.
        if self.transport is None:
            return
        if not self.t._receiving:
            # Our own doing (pause_receiving): silence proves nothing about the dialer.
            self.last_rx_ns = self.t.clock_ns()
        idle_s = (self.t.clock_ns() - self.last_rx_ns) / 1e9
        if idle_s >= self.t.probe_timeout_s:
            event(log, logging.INFO, "peer connection idle, closing", idle=f"{idle_s:.1f}s")
            self.transport.abort()
            return
        self._idle = self.t.loop.call_later(self.t.probe_timeout_s - idle_s, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return  # refused as it connected (certificate, overload), or closed
        self.last_rx_ns = self.t.clock_ns()
        if self.hello is None and self.decoder.buffered + len(data) > MAX_PREHANDSHAKE_BYTES:
            event(
                log,
                logging.WARNING,
                "peer connection sent too much before its handshake, closing it",
                bytes=self.decoder.buffered + len(data),
            )
            self.close()
            return
        try:
            frames = self.decoder.feed(data)
        except FrameError as e:
            event(log, logging.WARNING, "bad frame from a peer, closing the connection", error=str(e))
            self.close()
            return
        on_message = self.t.on_message
        for f in frames:
            if self.hello is None:
                # Nothing is answered, let alone delivered, before the handshake passed.
                if type(f) is not Hello or not self._accept(f):
                    self.close()
                    return
            elif type(f) is Message:
                if f.type in LOCAL_ONLY_MESSAGES or f.frm != self.hello.frm or f.to != self.t.member_id:
                    # Only the member itself makes these, and a peer speaks only for itself.
                    event(
                        log,
                        logging.WARNING,
                        "refused a message from a peer, closing the connection",
                        **{
                            "remote-peer-id": f"{self.hello.frm:x}",
                            "message-type": MSG_NAMES.get(f.type, str(f.type)),
                            "from": f"{f.frm:x}",
                            "to": f"{f.to:x}",
                        },
                    )
                    self.close()
                    return
                self.t.received += 1
                try:
                    on_message(f)
                except Exception:
                    log.exception("on_message failed for %r", f)
                if self.hello.stream == STREAM_SNAPSHOT and f.type == MSG_SNAP:
                    self.write(codec.encode_snap_ack(SnapAck(True)))
            elif type(f) is Ping:
                self.write(codec.encode_pong(Pong(f.sent_ns)))
            else:
                event(
                    log,
                    logging.WARNING,
                    "unexpected frame from a peer, closing the connection",
                    frame=type(f).__name__,
                )
                self.close()
                return
        if self.hello is not None:
            received = self.t.received_bytes
            received[self.hello.frm] = received.get(self.hello.frm, 0) + len(data)

    def _accept(self, h: Hello) -> bool:
        t = self.t
        status, reason = STATUS_OK, ""
        if h.stream == STREAM_MEMBERS and h.version == codec.PROTOCOL_VERSION:
            # A member joining with --initial-cluster-state existing asks who is in the cluster
            # (etcd's GET /members on the peer port); the answer rides in the reply's reason.
            info = t.cluster_info() if t.cluster_info is not None else ""
            self.write(
                codec.encode_hello_reply(
                    HelloReply(STATUS_OK if info else STATUS_NOT_FOUND, info, t.member_id)
                )
            )
            self.close()
            return False
        if h.version != codec.PROTOCOL_VERSION:
            status, reason = STATUS_PRECONDITION_FAILED, f"incompatible peer protocol version {h.version}"
        elif h.cluster_id != t.cluster_id:
            status, reason = STATUS_PRECONDITION_FAILED, "cluster ID mismatch"
        elif t.is_removed is not None and t.is_removed(h.frm):
            status, reason = STATUS_GONE, "removed member"
        elif h.frm not in t._peers:
            status, reason = STATUS_NOT_FOUND, "error sender not found"
        elif h.to != t.member_id:
            status, reason = STATUS_PRECONDITION_FAILED, "to field mismatch"
        elif h.stream not in (STREAM_MESSAGE, STREAM_SNAPSHOT):
            status, reason = STATUS_PRECONDITION_FAILED, f"unknown stream {h.stream!r}"
        self.write(codec.encode_hello_reply(HelloReply(status, reason, t.member_id)))
        if status != STATUS_OK:
            fields = {"remote-peer-id": f"{h.frm:x}", "cluster-id": f"{h.cluster_id:x}", "to": f"{h.to:x}"}
            event(log, logging.WARNING, "refused a peer connection", status=status, reason=reason, **fields)
            self.close()
            return False
        self.hello = h
        return True

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Peer:
    __slots__ = (
        "id",
        "urls",
        "url_index",
        "conn",
        "dialing",
        "queue",
        "queued_props",
        "queued_dirty",
        "attempt",
        "task",
        "snapshot_task",
        "rtt_ns",
        "active_since_ns",
        "reported",
        "sent",
        "dropped",
        "refusal",
        "sent_bytes",
        "rtt",
    )

    def __init__(self, peer_id: int, urls: list[str]) -> None:
        self.id = peer_id
        self.urls = urls
        self.url_index = 0
        self.conn: _Dialer | None = None  # the message connection, once its handshake passed
        self.dialing = False
        self.queue: list[bytes] = []
        # The MsgProps among the queued frames: handed back if the queue is dropped unwritten.
        self.queued_props: list[Message] = []
        self.queued_dirty = False
        self.attempt = 0
        self.task: asyncio.Task[None] | None = None
        self.snapshot_task: asyncio.Task[None] | None = None
        self.rtt_ns: int | None = None
        self.active_since_ns = 0
        # on_unreachable was called since the last successful handshake: say it once per outage.
        self.reported = False
        self.sent = 0
        self.dropped = 0
        self.refusal = 0  # the last handshake refusal status, 0 once accepted
        # For /metrics: bytes written on the message and snapshot connections, and the probes'
        # round-trip times.
        self.sent_bytes = 0
        self.rtt = Histogram(RTT_BUCKETS_S)

    def next_url(self) -> str:
        url = self.urls[self.url_index % len(self.urls)]
        self.url_index += 1
        return url


class Transport:
    def __init__(
        self,
        member_id: int,
        cluster_id: int,
        on_message: Callable[[Message], None],
        loop: asyncio.AbstractEventLoop,
        *,
        on_unreachable: Callable[[int], None] | None = None,
        on_snapshot_status: Callable[[int, bool], None] | None = None,
        is_removed: Callable[[int], bool] | None = None,
        on_rejected: Callable[[int, int, str], None] | None = None,
        on_dropped_proposal: Callable[[Message], None] | None = None,
        cluster_info: Callable[[], str] | None = None,
        rng: random.Random | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        backoff_base_s: float = 0.05,
        backoff_max_s: float = 2.0,
        dial_timeout_s: float = 2.0,
        probe_interval_s: float = 1.0,
        probe_timeout_s: float = 5.0,
        snapshot_timeout_s: float = 30.0,
        snapshot_chunk_bytes: int = codec.DEFAULT_SNAPSHOT_CHUNK_BYTES,
        max_queued_messages: int = 4096,
        max_frame_bytes: int = codec.DEFAULT_MAX_FRAME_BYTES,
        max_snapshot_bytes: int = codec.DEFAULT_MAX_SNAPSHOT_BYTES,
        dial_override: dict[int, str] | None = None,
        server_tls: ServerTLS | None = None,
        dial_ssl: ssl.SSLContext | None = None,
        allowed_cn: str = "",
    ) -> None:
        """``dial_override`` (default: parsed from ``$FASTKV_PEER_DIAL``, see parse_peer_dial):
        peer id -> the URL to dial it at instead of its advertised ones.

        TLS (etcd's --peer-* flags): ``server_tls`` serves the https listeners (the peer's
        certificate is verified in the handshake when client certificate auth is on, and its CN
        checked against ``--peer-cert-allowed-cn``); ``dial_ssl`` dials https peers, presenting
        this member's certificate; ``allowed_cn`` is checked on the certificate of the peer dialed
        too, as etcd's shared TLS config does."""
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.on_message = on_message
        self.loop = loop
        self.on_unreachable = on_unreachable
        self.on_snapshot_status = on_snapshot_status
        self.is_removed = is_removed
        self.on_rejected = on_rejected
        self.on_dropped_proposal = on_dropped_proposal
        self.cluster_info = cluster_info
        self.rng = rng if rng is not None else random.Random()
        self.clock_ns = clock_ns
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.dial_timeout_s = dial_timeout_s
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.snapshot_timeout_s = snapshot_timeout_s
        self.snapshot_chunk_bytes = snapshot_chunk_bytes
        self.max_queued_messages = max_queued_messages
        self.max_frame_bytes = max_frame_bytes
        self.max_snapshot_bytes = max_snapshot_bytes
        if dial_override is None:
            dial_override = parse_peer_dial(os.environ.get(PEER_DIAL_ENV, ""))
        self.dial_override = dial_override
        self.server_tls = server_tls
        self.dial_ssl = dial_ssl
        self.allowed_cn = allowed_cn
        self._handshakes: set[asyncio.Task[None]] = set()
        self._overload_logged = False
        self._peers: dict[int, _Peer] = {}
        self._servers: list[asyncio.Server | _TLSPeerServer] = []
        self._listeners: set[_Listener] = set()
        self._dialers: set[_Dialer] = set()
        self._dirty: list[_Peer] = []
        self._flush_scheduled = False
        self._stopped = False
        self._receiving = True
        self.received = 0
        #: Bytes received per sending member once its handshake passed (for /metrics).
        self.received_bytes: dict[int, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, listen_host: str, port: int, tls: bool = False) -> int:
        """Listens for peers on (host, port), with TLS when ``tls`` (an https peer URL); returns the
        bound port (useful with port 0).  May be called once per --listen-peer-urls entry."""
        if tls:
            if self.server_tls is None:
                raise ValueError("an https peer listener needs the peer TLS settings")
            tls_server = _TLSPeerServer.listen(self, self.server_tls, listen_host, port)
            self._servers.append(tls_server)
            return tls_server.port()
        server = await self.loop.create_server(lambda: _Listener(self), listen_host, port, reuse_address=True)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Closes the listeners and every connection and stops redialing."""
        self._stopped = True
        tasks: list[asyncio.Task[None]] = []
        for peer in list(self._peers.values()):
            tasks.extend(self._forget(peer))
        for server in self._servers:
            server.close()
        for listener in list(self._listeners):
            listener.close()
        for d in list(self._dialers):
            d.close()
        for handshake in list(self._handshakes):
            handshake.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    def pause_receiving(self) -> None:
        """Stops reading from every peer connection (the kernel buffers fill and TCP flow
        control slows the senders): for when raft's inbox falls behind."""
        self._receiving = False
        for listener in self._listeners:
            if listener.transport is not None:
                listener.transport.pause_reading()

    def resume_receiving(self) -> None:
        self._receiving = True
        for listener in self._listeners:
            if listener.transport is not None:
                listener.transport.resume_reading()

    # -- membership --------------------------------------------------------------------------

    def add_peer(self, peer_id: int, urls: list[str]) -> None:
        if peer_id in self._peers or peer_id == self.member_id:
            return
        for url in urls:
            parse_peer_url(url)
        if not urls:
            raise ValueError(f"peer {peer_id:x} has no URLs")
        peer = _Peer(peer_id, list(urls))
        self._peers[peer_id] = peer
        if not self._stopped:
            # Messages sent before the first dial even started wait for it.
            peer.dialing = True
            peer.task = self.loop.create_task(self._run_peer(peer))

    def remove_peer(self, peer_id: int) -> None:
        """Forget a peer: our connection to it closes, and so do the ones it dialed to us, so a
        removed member redials and hears 410 from the handshake."""
        peer = self._peers.pop(peer_id, None)
        if peer is not None:
            self._forget(peer)
        for lst in list(self._listeners):
            if lst.hello is not None and lst.hello.frm == peer_id:
                lst.close()

    def update_peer(self, peer_id: int, urls: list[str]) -> None:
        """New URLs take effect from the next dial: the current connection is closed."""
        peer = self._peers.get(peer_id)
        if peer is None:
            self.add_peer(peer_id, urls)
            return
        for url in urls:
            parse_peer_url(url)
        if not urls:
            raise ValueError(f"peer {peer_id:x} has no URLs")
        if urls == peer.urls:
            return
        peer.urls = list(urls)
        peer.url_index = 0
        peer.attempt = 0
        if peer.conn is not None:
            peer.conn.close()

    def peers(self) -> list[int]:
        return list(self._peers)

    def _forget(self, peer: _Peer) -> list[asyncio.Task[None]]:
        tasks = [t for t in (peer.task, peer.snapshot_task) if t is not None]
        for task in tasks:
            task.cancel()
        if peer.conn is not None:
            peer.conn.close()
        self._drop_queue(peer)
        return tasks

    # -- state -------------------------------------------------------------------------------

    def is_active(self, peer_id: int) -> bool:
        peer = self._peers.get(peer_id)
        return peer is not None and peer.conn is not None

    def active_since_ns(self, peer_id: int) -> int:
        """clock_ns() when the current message connection was established, 0 if none."""
        peer = self._peers.get(peer_id)
        return peer.active_since_ns if peer is not None and peer.conn is not None else 0

    def round_trip_time(self, peer_id: int) -> float | None:
        """Seconds, from the last ping answered on the message connection (or its handshake)."""
        peer = self._peers.get(peer_id)
        if peer is None or peer.rtt_ns is None:
            return None
        return peer.rtt_ns / 1e9

    def stats(self, peer_id: int) -> dict[str, int]:
        peer = self._peers[peer_id]
        return {"sent": peer.sent, "dropped": peer.dropped, "queued": len(peer.queue)}

    def sent_bytes(self, peer_id: int) -> int:
        """Bytes written to peer_id on message and snapshot connections (handshakes and probes aside)."""
        return self._peers[peer_id].sent_bytes

    def rtt_histogram(self, peer_id: int) -> tuple[list[int], float]:
        """The probes' round-trip times to peer_id: counts per RTT_BUCKETS_S bucket (+Inf last,
        not cumulative) and their sum in seconds."""
        peer = self._peers[peer_id]
        return list(peer.rtt.counts), peer.rtt.sum

    # -- sending -----------------------------------------------------------------------------

    def send(self, messages: list[Message]) -> None:
        peers = self._peers
        for m in messages:
            peer = peers.get(m.to)
            if peer is None:
                event(log, logging.DEBUG, "dropping a message to an unknown peer", message=repr(m))
                continue
            if m.type == MSG_SNAP:
                self._send_snapshot(peer, m)
                continue
            conn = peer.conn
            if (conn is None and not peer.dialing) or len(peer.queue) >= self.max_queued_messages:
                peer.dropped += 1
                self._report_unreachable(peer)
                if m.type == MSG_PROP:
                    self._hand_back([m])
                continue
            peer.queue.append(codec.encode_message(m))
            if m.type == MSG_PROP:
                peer.queued_props.append(m)
            if not peer.queued_dirty:
                peer.queued_dirty = True
                self._dirty.append(peer)
        if self._dirty and not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def flush(self) -> None:
        """Write what send() queued now instead of at the next loop iteration: the Ready loop
        calls it so appends and acknowledgements leave before the WAL writer thread competes
        for the GIL."""
        if self._dirty:
            self._flush()

    def _schedule_flush(self, peer: _Peer) -> None:
        if peer.queue and not peer.queued_dirty:
            peer.queued_dirty = True
            self._dirty.append(peer)
        if self._dirty and not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty = self._dirty
        self._dirty = []
        for peer in dirty:
            peer.queued_dirty = False
            conn = peer.conn
            # A paused socket keeps its queue (bounded in send()) until resume_writing.
            if conn is None or conn.paused or not peer.queue:
                continue
            queue = peer.queue
            peer.sent += len(queue)
            data = queue[0] if len(queue) == 1 else b"".join(queue)
            peer.sent_bytes += len(data)
            conn.write(data)
            queue.clear()
            peer.queued_props.clear()
            # Congestion is over: the next drop is news again.
            peer.reported = False

    def _report_unreachable(self, peer: _Peer) -> None:
        if peer.reported:
            return
        peer.reported = True
        if self.on_unreachable is not None:
            try:
                self.on_unreachable(peer.id)
            except Exception:
                log.exception("on_unreachable failed")

    # -- dialing -----------------------------------------------------------------------------

    def _backoff_s(self, peer: _Peer) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * (2 ** min(peer.attempt, 30)))
        peer.attempt += 1
        # Equal jitter: at least half the delay, so a dead peer is never hammered.
        return delay / 2 + self.rng.random() * delay / 2

    async def _dial(self, peer: _Peer, stream: str) -> _Dialer:
        """A connection to peer whose handshake passed; raises OSError, TimeoutError or _Rejected."""
        advertised = peer.next_url()
        url = self.dial_override.get(peer.id) or advertised
        host, port = parse_peer_url(url)
        conn: _Dialer | None = None
        ctx = None
        if is_tls_url(advertised):
            ctx = self.dial_ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout(self.dial_timeout_s):
                sent_ns = self.clock_ns()
                if ctx is not None:
                    # The certificate is checked against the advertised host, not the address a
                    # test proxy (FASTKV_PEER_DIAL) makes us dial.
                    transport, proto = await self.loop.create_connection(
                        lambda: _Dialer(self, peer, stream),
                        host,
                        port,
                        ssl=ctx,
                        server_hostname=parse_peer_url(advertised)[0],
                    )
                    if self.allowed_cn:
                        reason = check_allowed_cn(
                            transport.get_extra_info("ssl_object").getpeercert(), self.allowed_cn
                        )
                        if reason is not None:
                            proto.close()
                            raise PeerTLSError(reason)
                else:
                    _, proto = await self.loop.create_connection(
                        lambda: _Dialer(self, peer, stream), host, port
                    )
                conn = proto
                self._dialers.add(conn)
                reply = await conn.accepted
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        if reply.status != STATUS_OK:
            conn.close()
            raise _Rejected(reply.status, reply.reason)
        if stream == STREAM_MESSAGE:
            peer.rtt_ns = self.clock_ns() - sent_ns
        return conn

    def _dialer_lost(self, conn: _Dialer) -> None:
        self._dialers.discard(conn)

    async def _run_peer(self, peer: _Peer) -> None:
        """Keeps one message connection to peer open for as long as it is a peer."""
        while not self._stopped:
            peer.dialing = True
            try:
                conn = await self._dial(peer, STREAM_MESSAGE)
            except _Rejected as e:
                peer.dialing = False
                self._drop_queue(peer)
                self._rejected(peer, e)
                if e.status != STATUS_NOT_FOUND:
                    # Only "sender not found" may change soon (our conf change is not applied
                    # there yet); a removed member stays removed, a cluster id stays different.
                    peer.attempt = max(peer.attempt, 30)
            except (OSError, TimeoutError, ConnectionError) as e:
                peer.dialing = False
                self._drop_queue(peer)
                if not peer.reported:
                    if isinstance(e, ssl.SSLError | PeerTLSError):
                        # A certificate problem will not heal by itself: say so loudly.
                        event(
                            log,
                            logging.WARNING,
                            "peer refused: TLS",
                            **{"remote-peer-id": f"{peer.id:x}", "error": handshake_error_reason(e)},
                        )
                    else:
                        event(
                            log,
                            logging.INFO,
                            "peer unreachable",
                            **{"remote-peer-id": f"{peer.id:x}", "error": str(e or type(e).__name__)},
                        )
                self._report_unreachable(peer)
            else:
                peer.dialing = False
                peer.attempt = 0
                peer.reported = False
                peer.refusal = 0
                peer.conn = conn
                peer.active_since_ns = self.clock_ns()
                event(
                    log,
                    logging.INFO,
                    "peer became active",
                    **{"remote-peer-id": f"{peer.id:x}", "stream-type": "message"},
                )
                conn.start_probing()
                self._schedule_flush(peer)
                try:
                    await conn.closed
                finally:
                    peer.conn = None
                    peer.active_since_ns = 0
                    self._drop_queue(peer)
                if self._stopped:
                    return
                event(log, logging.INFO, "peer became inactive", **{"remote-peer-id": f"{peer.id:x}"})
                self._report_unreachable(peer)
            await asyncio.sleep(self._backoff_s(peer))

    def _drop_queue(self, peer: _Peer) -> None:
        peer.dropped += len(peer.queue)
        peer.queue.clear()
        if peer.queued_props:
            props, peer.queued_props = peer.queued_props, []
            self._hand_back(props)

    def _hand_back(self, props: list[Message]) -> None:
        """Proposals that never left this member, back to the Ready loop (see on_dropped_proposal)."""
        if self.on_dropped_proposal is None:
            return
        for m in props:
            try:
                self.on_dropped_proposal(m)
            except Exception:
                log.exception("on_dropped_proposal failed")

    def _rejected(self, peer: _Peer, e: _Rejected) -> None:
        # Said once per kind of refusal: redials repeat it every backoff_max_s.
        level = logging.DEBUG if peer.refusal == e.status else logging.ERROR
        peer.refusal = e.status
        event(
            log,
            level,
            "peer refused our connection",
            status=e.status,
            reason=e.reason,
            **{"remote-peer-id": f"{peer.id:x}"},
        )
        if self.on_rejected is not None:
            try:
                self.on_rejected(peer.id, e.status, e.reason)
            except Exception:
                log.exception("on_rejected failed")

    # -- snapshots ---------------------------------------------------------------------------

    def _send_snapshot(self, peer: _Peer, m: Message) -> None:
        if peer.snapshot_task is not None and not peer.snapshot_task.done():
            # Raft sends the next MsgSnap only after a status report for this one.
            event(
                log,
                logging.WARNING,
                "a snapshot is already in flight, dropping the next",
                **{"remote-peer-id": f"{peer.id:x}", "message": repr(m)},
            )
            return
        peer.snapshot_task = self.loop.create_task(self._stream_snapshot(peer, m))

    async def _stream_snapshot(self, peer: _Peer, m: Message) -> None:
        ok = False
        conn: _Dialer | None = None
        assert m.snapshot is not None
        index, size = m.snapshot.meta.index, len(m.snapshot.data)
        try:
            conn = await self._dial(peer, STREAM_SNAPSHOT)
            for frame in codec.encode_snapshot(m, self.snapshot_chunk_bytes):
                conn.write(frame)
                peer.sent_bytes += len(frame)
                if conn.paused:
                    # Progress, not total time, is bounded: a big snapshot may take long.
                    async with asyncio.timeout(self.snapshot_timeout_s):
                        await conn.drain()
                if conn.transport is None:
                    raise ConnectionError("snapshot connection lost")
            async with asyncio.timeout(self.snapshot_timeout_s):
                ack = await conn.snap_ack
            ok = ack.ok
            if ok:
                event(
                    log,
                    logging.INFO,
                    "sent database snapshot",
                    index=index,
                    size=size,
                    **{"remote-peer-id": f"{peer.id:x}"},
                )
            else:
                event(
                    log,
                    logging.WARNING,
                    "peer refused the snapshot",
                    reason=ack.reason,
                    **{"remote-peer-id": f"{peer.id:x}"},
                )
        except asyncio.CancelledError:
            raise
        except _Rejected as e:
            self._rejected(peer, e)
        except (OSError, TimeoutError, ConnectionError, FrameError) as e:
            event(
                log,
                logging.WARNING,
                "failed to send database snapshot",
                **{"remote-peer-id": f"{peer.id:x}", "error": str(e or type(e).__name__)},
            )
        finally:
            if conn is not None:
                conn.close()
        if not ok and self.on_unreachable is not None:
            # etcd reports both: the follower goes back to probing and raft may retry.
            try:
                self.on_unreachable(peer.id)
            except Exception:
                log.exception("on_unreachable failed")
        if self.on_snapshot_status is not None:
            try:
                self.on_snapshot_status(peer.id, ok)
            except Exception:
                log.exception("on_snapshot_status failed")


def fetch_cluster_info(url: str, timeout_s: float = 2.0, ssl_context: ssl.SSLContext | None = None) -> str:
    """Ask the member listening at peer URL ``url`` for its cluster id and members (blocking;
    used before the event loop runs, by a member joining an existing cluster).  Returns the
    JSON text the member's ``cluster_info`` callback produced; raises OSError on failure."""
    import socket

    host, port = parse_peer_url(url)
    decoder = Decoder(codec.DEFAULT_MAX_FRAME_BYTES, codec.DEFAULT_MAX_SNAPSHOT_BYTES)
    raw = socket.create_connection((host, port), timeout=timeout_s)
    if is_tls_url(url):
        try:
            raw = (ssl_context or ssl.create_default_context()).wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
    with raw as s:
        s.settimeout(timeout_s)
        s.sendall(codec.encode_hello(Hello(0, 0, 0, STREAM_MEMBERS)))
        while True:
            data = s.recv(65536)
            if not data:
                raise ConnectionError(f"{url} closed the connection without an answer")
            try:
                frames = decoder.feed(data)
            except FrameError as e:
                raise ConnectionError(f"{url} answered with a bad frame: {e}") from None
            for f in frames:
                if type(f) is HelloReply:
                    if f.status != STATUS_OK:
                        raise ConnectionError(f"{url} refused: {f.status} {f.reason}")
                    return f.reason
