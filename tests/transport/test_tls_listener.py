"""The https peer listener: every handshake completes promptly, a refused one is logged with its
reason, and a certificate whose CN is not allowed never gets a frame through."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path

import pytest

from fastkv.raft.messages import MSG_APP, Message
from fastkv.tls import ServerTLS, client_context
from fastkv.transport import codec
from fastkv.transport.codec import STREAM_MESSAGE, Hello
from tests.tls.harness import PKI
from tests.transport.harness import CLUSTER, LOOPS, Node, run, stop_all, until

HANDSHAKES = 40


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI.create(tmp_path / "pki")


def _server_tls(pki: PKI, allowed_cn: str = "") -> ServerTLS:
    return ServerTLS(
        pki.server_info(trusted_ca_file=str(pki.ca.ca_file), client_cert_auth=True, allowed_cn=allowed_cn)
    )


async def _tls_node(member_id: int, pki: PKI, allowed_cn: str = "") -> Node:
    node = Node(
        member_id,
        server_tls=_server_tls(pki, allowed_cn),
        dial_ssl=client_context(pki.client_info(pki.client)),
    )
    node.port = await node.t.start("127.0.0.1", 0, tls=True)
    return node


def _handshake(port: int, ctx: ssl.SSLContext, send: bytes = b"") -> bytes:
    """A blocking client: connects, completes the handshake (raises when the server refuses it
    or does not answer within 5 s), sends ``send``, returns what the server wrote before closing."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        if send:
            s.sendall(send)
        try:
            return s.recv(1024)
        except (TimeoutError, ConnectionError, ssl.SSLError):
            return b""


@pytest.mark.parametrize("loop", LOOPS)
def test_every_handshake_completes(loop: str, pki: PKI) -> None:
    """A client that speaks as soon as it connects (its ClientHello may arrive with the accept)
    is served every time; none waits for the handshake timeout."""
    ctx = client_context(pki.client_info(pki.client))
    hello = codec.encode_hello(Hello(cluster_id=CLUSTER, frm=2, to=1, stream=STREAM_MESSAGE))

    async def scenario() -> None:
        node = await _tls_node(1, pki)
        node.t.dial_timeout_s = 2.0
        try:
            for _ in range(HANDSHAKES):
                # The listener answers a valid hello with its verdict (unknown sender: 404).
                answer = await asyncio.to_thread(_handshake, node.port, ctx, hello)
                assert answer, "the listener closed the connection without answering the hello"
        finally:
            await stop_all([node])

    run(loop, scenario, timeout=120)


@pytest.mark.parametrize("loop", LOOPS)
def test_refused_handshake_is_logged_with_its_reason(
    loop: str, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastkv.transport")
    stranger = client_context(pki.client_info(pki.stranger))

    def refused() -> list[str]:
        return [
            str(getattr(r, "fields", {}).get("error"))
            for r in caplog.records
            if r.getMessage() == "rejected connection from peer: TLS handshake failed"
        ]

    async def scenario() -> None:
        node = await _tls_node(1, pki)
        try:
            with pytest.raises((ssl.SSLError, OSError)):
                # TLS 1.3: the server's verdict on our certificate arrives with the first read.
                if not await asyncio.to_thread(_handshake, node.port, stranger, b"\x00" * 8):
                    raise ConnectionResetError("closed by the listener")
            await until(lambda: bool(refused()), what="the refusal in the log")
            # The listener still serves a member it trusts.
            peer = await _tls_node(2, pki)
            try:
                peer.t.add_peer(1, [f"https://127.0.0.1:{node.port}"])
                node.t.add_peer(2, [f"https://127.0.0.1:{peer.port}"])
                peer.t.send([Message(MSG_APP, to=1, frm=2, term=1)])
                await until(lambda: len(node.got) == 1, timeout=10, what="a message over TLS")
            finally:
                await stop_all([peer])
        finally:
            await stop_all([node])

    run(loop, scenario)
    assert any("certificate" in reason for reason in refused()), refused()


@pytest.mark.parametrize("loop", LOOPS)
def test_certificate_with_another_cn_is_closed_before_its_frames(
    loop: str, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastkv.transport")
    ctx = client_context(pki.client_info(pki.client))  # CN m1, trusted, not the allowed CN
    hello = codec.encode_hello(Hello(cluster_id=CLUSTER, frm=2, to=1, stream=STREAM_MESSAGE))
    message = codec.encode_message(Message(MSG_APP, to=1, frm=2, term=1))

    async def scenario() -> None:
        node = await _tls_node(1, pki, allowed_cn="m9")
        node.t.add_peer(2, ["https://127.0.0.1:1"])
        try:
            answer = await asyncio.to_thread(_handshake, node.port, ctx, hello + message)
            assert answer == b""
        finally:
            await stop_all([node])
        assert node.got == []

    run(loop, scenario)
    refusals = [r for r in caplog.records if r.getMessage() == "rejected connection from peer"]
    assert refusals and "m1" in str(getattr(refusals[0], "fields", {}).get("error")), refusals
