"""Loopback endpoints tests make by hand: a scripted raw-socket upstream, and free ports.

`WireUpstream` runs one coroutine per request (`script`), given the request head it read,
which writes whatever bytes the test wants: a well-formed answer, a reset, half an answer,
bad framing, silence. A script that returns True keeps the connection for the next request
(keep-alive); the upstream counts the connections that carried a request, and the most open
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable

Script = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool | None]]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """The request head (request line and headers), or what came before the peer closed."""
    with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return await reader.readuntil(b"\r\n\r\n")
    return b""


async def read_body(head: bytes, reader: asyncio.StreamReader) -> bytes:
    """The request body its head announces with `Content-Length` (none: empty)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return await reader.readexactly(int(value))
    return b""


def reset(writer: asyncio.StreamWriter) -> None:
    """Reset the connection (RST). `abort()` alone only closes the socket early: the peer
    then sees a plain close (FIN), unless unread bytes were left in the socket."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _health(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    body = b'{"status":"ok","version":"2.19.1"}'
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    await writer.drain()


class WireUpstream:
    """Answers `/api/health` properly; every other request gets the current `script`."""

    def __init__(self, script: Script | None = None) -> None:
        self.script: Script = script or _health
        self.heads: list[bytes] = []
        self.connections = 0  # connections that carried a request other than the health check
        self.open = 0  # of those, how many are open now
        self.peak = 0  # and the most that were open at once
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counted = False
        try:
            while True:
                head = await read_head(reader)
                if not head:
                    return
                if head.startswith(b"GET /api/health "):
                    await _health(head, reader, writer)
                    continue
                if not counted:
                    counted = True
                    self.connections += 1
                    self.open += 1
                    self.peak = max(self.peak, self.open)
                self.heads.append(head)
                if not await self.script(head, reader, writer):
                    return
        except (ConnectionError, asyncio.CancelledError, asyncio.IncompleteReadError):
            pass
        finally:
            if counted:
                self.open -= 1
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            # Connections a script left open are closed with their writers.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)


def free_port() -> int:
    """A loopback port nothing listens on now (bound, then released), for a server that
    must be told its port before it starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
