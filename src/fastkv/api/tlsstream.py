"""https client listeners: TLS on the socket itself, one call into OpenSSL per read and per write.

uvloop's TLS transport runs OpenSSL over memory buffers: every read copies the socket's bytes into
a BIO and then asks OpenSSL for records until it raises ``SSLWantReadError`` (an exception per
read), and every write goes through the BIO and back out to the socket.  All of it runs on the
event loop's thread, which is also the one serving every request, so at 64 connections TLS cost
15-20 % of the plain throughput (bench/results/optimizations.md).  Here the ``ssl.SSLSocket``
owns the socket: a readable socket is one ``recv`` (OpenSSL reads and decrypts), an answer is one
``send`` (OpenSSL encrypts and writes).

- :class:`TLSListener` accepts connections itself, runs each handshake without blocking
  (``do_handshake`` when the socket is readable or writable, bounded by a timeout), logs a failed
  one with OpenSSL's reason as etcd does ("rejected connection"), and hands the connection to a
  :class:`TLSStream` and a fresh protocol.  The context is the ServerTLS's, so certificates are
  still re-read per handshake when their files change.
- :class:`TLSStream` is the asyncio transport the protocol sees.  OpenSSL's writes are
  all-or-retry (no partial writes): a write that would block is retried later with the same
  bytes, and later writes wait behind it.  ``close`` flushes, sends close_notify (best effort) and
  closes; a TLS stream cannot half-close (``can_write_eof`` is False, as for asyncio's).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from ..logutil import event
from ..netutil import accept_ready, address_text, close_listeners, listen_sockets
from ..tls import ServerTLS, handshake_error_reason

log = logging.getLogger("fastkv.api")

# Bytes asked of OpenSSL per read: it returns at most one record, 16 KiB of plaintext, per call
# (and allocates what is asked before shrinking it to what it returns).
READ_SIZE = 16 * 1024
# At most this much is read in one readiness event before the protocol sees it.
READ_MORE_LIMIT = 256 * 1024
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
# asyncio's default for TLS servers.
HANDSHAKE_TIMEOUT_S = 60.0
LISTEN_BACKLOG = 1024


class TLSStream:
    """An asyncio transport over a non-blocking ``ssl.SSLSocket`` whose handshake is done."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket, protocol: asyncio.Protocol
    ) -> None:
        self._loop = loop
        self._sock = sock
        # The C object under the SSLSocket: its read/write/pending are the same calls without
        # ssl.py's Python frames around each (two per recv).
        self._ssl: Any = getattr(sock, "_sslobj", None) or sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._extra: dict[str, Any] = {
            "peername": sock.getpeername(),
            "sockname": sock.getsockname(),
            "ssl_object": sock,
            "sslcontext": sock.context,
            "peercert": sock.getpeercert(),
            "cipher": sock.cipher(),
            "compression": sock.compression(),
        }
        # Bytes waiting to be written; the first is being retried when _retrying is set.
        self._pending: collections.deque[bytes] = collections.deque()
        self._pending_size = 0
        self._retrying = False
        self._reading = False
        self._read_paused = False
        # A read that OpenSSL could not finish until the socket is writable (a TLS 1.3 KeyUpdate).
        self._read_wants_write = False
        # The client's EOF came right after the data just read: told once that data is delivered.
        self._eof_after_data = False
        self._writer_on = False
        self._closing = False
        self._lost = False
        self._writing_paused = False
        self._high = HIGH_WATER
        self._low = LOW_WATER

    def start(self) -> None:
        """Tells the protocol it is connected, then starts reading."""
        self._protocol.connection_made(self)  # type: ignore[arg-type]
        if not self._closing and not self._read_paused:
            self._start_reading()

    # -- reading -------------------------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_readable)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        if self._lost:
            return  # the socket is closed: its number may already be another connection's
        tls = self._ssl
        try:
            data = tls.read(READ_SIZE)
            # A whole record: more may follow in the socket (a large body).  And OpenSSL may hold
            # more of a record it already read, which no readiness event will announce.
            if len(data) == READ_SIZE or tls.pending():
                data = self._read_more(data)
        except ssl.SSLWantReadError:
            return
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            data = b""  # the client closed without (or with) close_notify
        except ssl.SSLWantWriteError:
            self._read_wants_write = True
            self._stop_reading()
            self._want_writable()
            return
        except OSError as e:  # ssl.SSLError included
            self._fatal(e)
            return
        if not data:
            self._on_eof()
            return
        self._protocol.data_received(data)
        if self._eof_after_data and not self._lost:
            self._on_eof()

    def _read_more(self, first: bytes) -> bytes:
        """``first`` and the records after it, up to READ_MORE_LIMIT bytes or until the socket
        has no whole record left."""
        tls = self._ssl
        chunks = [first]
        size = len(first)
        try:
            while size < READ_MORE_LIMIT:
                chunk = tls.read(READ_SIZE)
                if not chunk:
                    self._eof_after_data = True
                    break
                chunks.append(chunk)
                size += len(chunk)
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            self._eof_after_data = True
        return b"".join(chunks)

    def _on_eof(self) -> None:
        self._stop_reading()
        keep_open = self._protocol.eof_received()
        if not keep_open:
            self.close()

    def pause_reading(self) -> None:
        self._read_paused = True
        self._stop_reading()

    def resume_reading(self) -> None:
        if not self._read_paused:
            return
        self._read_paused = False
        if not self._closing and not self._read_wants_write:
            self._start_reading()

    def is_reading(self) -> bool:
        return self._reading

    # -- writing -------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._lost or not data:
            return
        if self._pending:
            self._pending.append(bytes(data))
            self._pending_size += len(data)
            self._check_high_water()
            return
        try:
            self._ssl.write(data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            # OpenSSL wants the same bytes again once the socket takes more.
            self._pending.append(bytes(data))
            self._pending_size += len(data)
            self._retrying = True
            self._want_writable()
            self._check_high_water()
        except OSError as e:
            self._fatal(e)

    def writelines(self, lines: list[bytes]) -> None:
        self.write(b"".join(lines))

    def _want_writable(self) -> None:
        if not self._writer_on:
            self._writer_on = True
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        if self._lost:
            return
        pending = self._pending
        tls = self._ssl
        try:
            while pending:
                head = pending[0]
                if not self._retrying and len(pending) > 1:
                    # Not yet handed to OpenSSL: the queued writes go out as one.
                    head = b"".join(pending)
                    pending.clear()
                    pending.append(head)
                self._retrying = True
                tls.write(head)
                self._retrying = False
                pending.popleft()
                self._pending_size -= len(head)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            self._check_low_water()
            return
        except OSError as e:
            self._fatal(e)
            return
        self._writer_on = False
        self._loop.remove_writer(self._fd)
        if self._read_wants_write:
            self._read_wants_write = False
            if not self._closing and not self._read_paused:
                self._start_reading()
                self._on_readable()
        self._check_low_water()
        if self._closing and not pending:
            self._finish_close(None)

    def _check_high_water(self) -> None:
        if not self._writing_paused and self._pending_size > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()

    def _check_low_water(self) -> None:
        if self._writing_paused and self._pending_size <= self._low:
            self._writing_paused = False
            self._protocol.resume_writing()

    def get_write_buffer_size(self) -> int:
        return self._pending_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = HIGH_WATER if high is None else high
        self._low = self._high // 4 if low is None else low

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("a TLS stream cannot half-close")

    # -- closing -------------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """Closes once what was written is sent."""
        if self._closing or self._lost:
            return
        self._closing = True
        self._stop_reading()
        if not self._pending:
            self._finish_close(None)

    def abort(self) -> None:
        if self._lost:
            return
        self._closing = True
        self._finish_close(None, notify=False)

    def _fatal(self, exc: BaseException) -> None:
        self._closing = True
        self._finish_close(exc if isinstance(exc, Exception) else None, notify=False)

    def _finish_close(self, exc: Exception | None, notify: bool = True) -> None:
        if self._lost:
            return
        self._lost = True
        self._stop_reading()
        if self._writer_on:
            self._writer_on = False
            self._loop.remove_writer(self._fd)
        self._pending.clear()
        self._pending_size = 0
        if notify:
            # close_notify, best effort: a client that reads to EOF gets a clean end.
            try:
                self._sock.unwrap()
            except (OSError, ValueError):
                pass
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, exc)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]


class _Handshake:
    """One accepted connection until its handshake completes, fails or times out."""

    def __init__(self, listener: TLSListener, sock: ssl.SSLSocket, remote: object) -> None:
        self.listener = listener
        self.sock = sock
        self.fd = sock.fileno()
        self.remote = remote
        self.waiting: str = ""
        loop = listener.loop
        self.timer = loop.call_later(listener.handshake_timeout_s, self._timed_out)

    def step(self) -> None:
        if self.sock.fileno() < 0:
            return  # failed, timed out or cancelled
        loop = self.listener.loop
        self._stop_waiting()
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.waiting = "r"
            loop.add_reader(self.fd, self.step)
            return
        except ssl.SSLWantWriteError:
            self.waiting = "w"
            loop.add_writer(self.fd, self.step)
            return
        except OSError as e:
            # Plain HTTP on the https port included: etcd closes without an answer too.
            self._fail(handshake_error_reason(e))
            return
        self.timer.cancel()
        self.listener.handshakes.discard(self)
        self.listener.connected(self.sock)

    def _stop_waiting(self) -> None:
        if self.waiting == "r":
            self.listener.loop.remove_reader(self.fd)
        elif self.waiting == "w":
            self.listener.loop.remove_writer(self.fd)
        self.waiting = ""

    def _timed_out(self) -> None:
        self._stop_waiting()
        self._fail("TLS handshake timed out")

    def _fail(self, reason: str) -> None:
        self.timer.cancel()
        self.listener.handshakes.discard(self)
        # What the client sent and nobody read would make the close a reset, which can destroy the
        # alert or answer just written before the client reads it.
        with contextlib.suppress(OSError):
            while socket.socket.recv(self.sock, 65536):
                pass
        self.sock.close()
        event(
            log,
            logging.WARNING,
            "rejected connection",
            **{"remote-addr": address_text(self.remote), "error": reason},
        )

    def cancel(self) -> None:
        self._stop_waiting()
        self.timer.cancel()
        self.sock.close()


class TLSListener(asyncio.AbstractServer):
    """An https client listener (see the module docstring); ``close`` stops accepting and drops
    the handshakes under way (served connections belong to their protocols)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tls: ServerTLS,
        protocol_factory: Callable[[], asyncio.Protocol],
        sockets: list[socket.socket],
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
    ) -> None:
        self.loop = loop
        self.tls = tls
        self.protocol_factory = protocol_factory
        self.sockets = sockets
        self.handshake_timeout_s = handshake_timeout_s
        self.handshakes: set[_Handshake] = set()
        self._closed = asyncio.Event()
        for lsock in sockets:
            loop.add_reader(lsock.fileno(), self._accept, lsock)

    @classmethod
    def listen(
        cls,
        loop: asyncio.AbstractEventLoop,
        tls: ServerTLS,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str,
        port: int,
    ) -> TLSListener:
        """Binds every address ``host`` resolves to (as create_server does); raises OSError."""
        return cls(loop, tls, protocol_factory, listen_sockets(host, port, LISTEN_BACKLOG))

    def _accept(self, lsock: socket.socket) -> None:
        try:
            for conn, remote in accept_ready(lsock, LISTEN_BACKLOG):
                self._accepted(conn, remote)
        except OSError as e:
            # Out of descriptors, say: the connection waits in the backlog for the next try.
            event(log, logging.WARNING, "cannot accept a client connection", error=str(e))

    def _accepted(self, conn: socket.socket, remote: object) -> None:
        try:
            sock = self.tls.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        except OSError as e:
            conn.close()
            event(
                log,
                logging.WARNING,
                "rejected connection",
                **{"remote-addr": address_text(remote), "error": str(e)},
            )
            return
        handshake = _Handshake(self, sock, remote)
        self.handshakes.add(handshake)
        handshake.step()

    def connected(self, sock: ssl.SSLSocket) -> None:
        try:
            stream = TLSStream(self.loop, sock, self.protocol_factory())
        except OSError:
            sock.close()  # gone between the handshake and now (getpeername fails)
            return
        stream.start()

    # asyncio.AbstractServer

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.loop

    def is_serving(self) -> bool:
        return not self._closed.is_set()

    def close(self) -> None:
        close_listeners(self.sockets, self.loop.remove_reader)
        for handshake in list(self.handshakes):
            handshake.cancel()
        self.handshakes.clear()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])
