"""TLS test plumbing: a PKI in a tmp dir, real servers on 127.0.0.1 with recorded handshakes, dialing
through uvloop or stock asyncio, and an in-memory handshake that reports both sides' errors."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from cryptography import x509

from fastkv.tls import ServerTLS, TLSInfo
from tests.support.certs import CA, Issued

LOOPS = ["uvloop", "asyncio"]


def run(loop_kind: str, scenario: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(scenario(), timeout)

    if loop_kind == "uvloop":
        return uvloop.run(main())
    return asyncio.run(main())


@dataclass
class PKI:
    """One CA with a server certificate (SAN IP 127.0.0.1, DNS localhost) and a client
    certificate (CN m1), and an unrelated CA with a client certificate of its own."""

    dir: Path
    ca: CA
    server: Issued
    client: Issued
    other_ca: CA
    stranger: Issued

    @classmethod
    def create(cls, directory: Path) -> PKI:
        ca = CA.create(directory, "ca")
        other = CA.create(directory, "other-ca", common_name="unrelated CA")
        return cls(
            dir=directory,
            ca=ca,
            server=ca.issue(directory, "server", common_name="server"),
            client=ca.issue(directory, "client", common_name="m1", ips=(), dns=()),
            other_ca=other,
            stranger=other.issue(directory, "stranger", common_name="m1", ips=(), dns=()),
        )

    def server_info(self, **kw: Any) -> TLSInfo:
        return TLSInfo(cert_file=str(self.server.cert_file), key_file=str(self.server.key_file), **kw)

    def client_info(self, cert: Issued | None = None, **kw: Any) -> TLSInfo:
        files = {"cert_file": str(cert.cert_file), "key_file": str(cert.key_file)} if cert else {}
        return TLSInfo(trusted_ca_file=str(self.ca.ca_file), **files, **kw)


@dataclass
class Server:
    """A TLS server whose protocol records each completed handshake and answers b"ok"."""

    port: int
    accepted: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[str | None] = field(default_factory=list)


@asynccontextmanager
async def serve(ctx: ssl.SSLContext, tls: ServerTLS | None = None) -> AsyncIterator[Server]:
    """With ``tls``, each connection is judged by ``tls.check_peer`` (recorded in
    ``verdicts``) and closed when it gives a reason, as a listener does."""
    rec = Server(port=0)

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            sslobj = transport.get_extra_info("ssl_object")
            rec.accepted.append(sslobj.getpeercert() or {})
            if tls is not None:
                reason = tls.check_peer(sslobj)
                rec.verdicts.append(reason)
                if reason is not None:
                    transport.close()
                    return
            transport.write(b"ok")

    server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", 0, ssl=ctx)
    rec.port = server.sockets[0].getsockname()[1]
    try:
        yield rec
    finally:
        server.close()
        await server.wait_closed()


@dataclass(frozen=True)
class Dialed:
    data: bytes  # b"ok" when the server accepted, b"" when it closed the connection
    server_cert: x509.Certificate | None


async def dial(port: int, ctx: ssl.SSLContext, server_hostname: str = "127.0.0.1") -> Dialed:
    """Connect, read the server's answer (EOF when it refused us), return what we saw."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=server_hostname), 5
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        try:
            data = await asyncio.wait_for(reader.read(2), 5)
        except (ConnectionError, ssl.SSLError):
            data = b""
        return Dialed(data, x509.load_der_x509_certificate(der) if der else None)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


@dataclass
class Handshake:
    server_error: ssl.SSLError | None
    client_error: ssl.SSLError | None
    server: ssl.SSLObject
    client: ssl.SSLObject


def memory_handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    server_hostname: str = "127.0.0.1",
    session: ssl.SSLSession | None = None,
) -> Handshake:
    """Both ends of one handshake in memory, so each side's error is seen as it raised it.
    ``session``: a session of an earlier handshake the client offers to resume."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname, session=session)
    errors: dict[str, ssl.SSLError | None] = {"s": None, "c": None}
    done = {"s": False, "c": False}

    def step(key: str, obj: ssl.SSLObject) -> None:
        if done[key] or errors[key] is not None:
            return
        try:
            obj.do_handshake()
            done[key] = True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as e:
            errors[key] = e

    for _ in range(10):
        step("c", client)
        s_in.write(c_out.read())
        step("s", server)
        c_in.write(s_out.read())
        if all(done[k] or errors[k] is not None for k in "sc"):
            break
    if done["c"] and errors["c"] is None:
        # TLS 1.3: the client is done before the server has judged its certificate; the
        # server's verdict (an alert, or nothing) arrives with the first read.
        try:
            client.read(1)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as e:
            errors["c"] = e
    return Handshake(errors["s"], errors["c"], server, client)
