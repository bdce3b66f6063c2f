"""`fastkv`: the server command.  Parses etcd's flags, opens the data dir, serves the v2 API.

Every startup failure (bad flag, unusable data dir, corrupt WAL, port in use) is one line
on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from urllib.parse import urlsplit

import uvloop

from ..api.protocol import serve_client
from ..logutil import event
from ..logutil import setup as setup_logging
from ..server.bootstrap import resolve_initial_cluster
from ..server.config import ConfigError, parse_config
from ..server.etcdserver import EtcdServer, StartupError
from ..server.security import MemberTLS, prepare_tls
from ..storage.wal import WALCorruptError
from ..tls import TLSError

log = logging.getLogger("fastkv.main")

# The WAL writer thread gives up the GIL around write(2)/fdatasync(2) and must take it back
# to report completion.  With CPython's default 5 ms switch interval it can wait that long
# behind the busy event loop, which delays every group commit; 0.5 ms measured +15% PUT/s
# at 64 connections with no loss at 1 connection.
GIL_SWITCH_INTERVAL_S = 0.0005

# SIGTERMs received after the data dir was opened and before _serve took over signal handling.
_early_signals: list[int] = []


def _listen_address(url: str) -> tuple[str, int]:
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname or u.port is None:
        raise StartupError(f"cannot listen on {url!r}: expected http://host:port")
    host = u.hostname
    if host == "localhost":
        host = "127.0.0.1"
    return host, u.port


async def _serve(server: EtcdServer, member_tls: MemberTLS) -> int:
    loop = asyncio.get_running_loop()
    # Handlers first: a stop asked for while the member starts is honoured once it has started.
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(sig: int) -> None:
        received.append(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    for early in _early_signals:
        on_signal(early)
    listeners: list[asyncio.AbstractServer] = []
    try:
        for url, metrics_only in [(u, False) for u in server.cfg.listen_client_urls] + [
            (u, True) for u in server.cfg.listen_metrics_urls
        ]:
            host, port = _listen_address(url)
            try:
                tls = member_tls.client if url.startswith("https://") else None
                listeners.append(
                    await serve_client(server, host, port, metrics_only, tls, server.cfg.enable_v2)
                )
            except OSError as e:
                raise StartupError(f"listen tcp {host}:{port}: {e.strerror or e}") from None
        await server.start()
    except StartupError:
        for lst in listeners:
            lst.close()
        await server.stop()
        raise
    event(log, logging.INFO, "serving client requests", addresses=server.cfg.listen_client_urls)
    # Clients are served from here on; systemd hears READY=1 only once the member has joined.
    ready = loop.create_task(_notify_when_ready(server))
    fatal = loop.create_task(server.wait_fatal())
    stopping = loop.create_task(stop.wait())
    await asyncio.wait([fatal, stopping], return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if received:
        event(log, logging.INFO, "received signal; shutting down", signal=signal.Signals(received[0]).name)
        _sd_notify(b"STOPPING=1")
    for lst in listeners:
        lst.close()
    await server.stop()
    if server.fatal_error is not None:
        print(f"fastkv: {server.fatal_error}", file=sys.stderr)
        return 1
    event(log, logging.INFO, "stopped", name=server.cfg.name)
    return 0


async def _notify_when_ready(server: EtcdServer) -> None:
    await server.wait_ready()
    event(log, logging.INFO, "ready to serve client requests", name=server.cfg.name)
    _sd_notify(b"READY=1")


def _sd_notify(state: bytes) -> None:
    """sd_notify(3) when started by systemd with Type=notify: one datagram to $NOTIFY_SOCKET
    (a path, or an abstract socket written with a leading '@').  A no-op otherwise."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    import socket

    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(state, path)
    except OSError as e:
        event(log, logging.WARNING, "failed to notify systemd", state=state.decode(), error=str(e))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = parse_config(argv, os.environ)
    except ConfigError as e:
        print(e, file=sys.stderr)
        if e.details:
            print(e.details, file=sys.stderr)
        return e.exit_code
    if cfg.show_version or cfg.show_help:
        print(cfg.output_text, end="")
        return 0
    # JSON lines unless capnslog's text format is asked for by name (etcd 3.4's default).
    text = "logger" in cfg.explicit and cfg.logger == "capnslog"
    try:
        setup_logging(cfg.log_level, cfg.log_outputs, json=not text)
    except OSError as e:
        print(f"fastkv: cannot open log output: {e}", file=sys.stderr)
        return 1
    for line in cfg.log_lines:
        log.log(line.level, "%s", line)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    # Until the event loop takes over, SIGTERM stops startup the way SIGINT does (exit 0).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        # Certificates are checked before the data dir is touched (auto TLS aside, which writes
        # its certificate under <data-dir>/fixtures as etcd does).
        member_tls = prepare_tls(cfg)
        cfg = resolve_initial_cluster(cfg)
        server = EtcdServer.open(cfg, tls=member_tls)
        # From here a KeyboardInterrupt would land inside the event loop, which uvloop cannot
        # unwind; the signal is noted instead and _serve acts on it once its handlers are in place.
        signal.signal(signal.SIGTERM, lambda sig, _frame: _early_signals.append(sig))
        return uvloop.run(_serve(server, member_tls))
    except (StartupError, WALCorruptError, TLSError) as e:
        print(f"fastkv: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
