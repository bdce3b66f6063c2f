"""Run the client API over a FakeServer on uvloop and talk raw HTTP to it, with bounded waits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvloop

from fastkv.api.protocol import serve_client
from tests.api.fake import FakeServer
from tests.support.procs import free_port

TIMEOUT = 10.0


def run(test: Callable[[FakeServer, int], Awaitable[Any]], server: FakeServer | None = None) -> Any:
    async def main() -> Any:
        srv = server or FakeServer()
        port = free_port()
        listener = await serve_client(srv, "127.0.0.1", port)
        try:
            return await asyncio.wait_for(test(srv, port), TIMEOUT)
        finally:
            listener.close()
            await listener.wait_closed()

    return uvloop.run(main())


@dataclass
class Response:
    status_line: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    raw_head: bytes = b""

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    @property
    def names(self) -> list[str]:
        return [k for k, _ in self.headers]


async def read_response(reader: asyncio.StreamReader, head: bool = False) -> Response:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    resp = Response(lines[0], raw_head=raw)
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(": ")
            resp.headers.append((k, v))
    if head or resp.status in (204, 304):
        return resp
    te = resp.header("Transfer-Encoding")
    cl = resp.header("Content-Length")
    if te == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            if size == 0:
                await reader.readexactly(2)
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        resp.body = bytes(body)
    elif cl is not None:
        resp.body = await reader.readexactly(int(cl))
    else:
        resp.body = await reader.read()
    return resp


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, head: bool = False) -> Response:
        return await asyncio.wait_for(read_response(self.reader, head), TIMEOUT)

    async def request(self, data: bytes, head: bool = False) -> Response:
        await self.send(data)
        return await self.response(head)

    async def read_all(self) -> bytes:
        """Everything until the server closes."""
        return await asyncio.wait_for(self.reader.read(), TIMEOUT)

    async def closed_by_server(self, wait: float = 2.0) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(1), wait)
        except TimeoutError:
            return False
        return data == b""

    def close(self) -> None:
        self.writer.close()


def req(
    method: str, target: str, body: bytes = b"", form: bool = True, extra: str = "", version: str = "1.1"
) -> bytes:
    head = f"{method} {target} HTTP/{version}\r\nHost: x\r\n{extra}"
    if body or method in ("PUT", "POST"):
        if form:
            head += "Content-Type: application/x-www-form-urlencoded\r\n"
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def one(port: int, data: bytes, head: bool = False) -> Response:
    c = await Conn.open(port)
    try:
        return await c.request(data, head)
    finally:
        c.close()
