"""Pass-through under slow peers: long streams, stalled bodies and clients that stop reading
hold nothing forever, and never take what event requests need."""

from __future__ import annotations

import asyncio
import base64
import socket
import time

import aiohttp
import orjson
import pytest

from tests.functional.server_support import (
    EMIT_REQUEST,
    JSON,
    ServerFactory,
    raw_exchange,
    start_stack,
    wait_for,
)

LONG_STREAM = "/api/executions/478775660589088776/stream?count=100&interval=0.2"


async def test_open_streams_do_not_take_the_connections_events_need(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """With every pass-through connection held by a stream, events still go through at
    once, and another pass-through request waits a bounded time for a connection."""
    stack = await start_stack(
        aiohttp_server,
        session,
        overrides={"upstream.pool_size": 2, "upstream.timeout_seconds": 1},
    )
    streams = [await session.get(stack.proxy + LONG_STREAM) for _ in range(2)]
    try:
        assert [stream.status for stream in streams] == [200, 200]
        started = time.monotonic()
        response, answer = await stack.post("/api/events", EMIT_REQUEST, JSON)
        assert response.status == 200, answer
        assert time.monotonic() - started < 0.5
        async with session.get(stack.proxy + "/api/health") as waiting:
            assert waiting.status == 502
            problem = orjson.loads(await waiting.read())
        assert problem["code"] == "upstream_unavailable"
        assert "no free pooled one within 1" in problem["detail"]
        assert time.monotonic() - started < 5
    finally:
        for stream in streams:
            stream.close()
    await wait_for(lambda: stack.state.inflight == 0)


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(b'Content-Length: 1000\r\n\r\n{"a":', id="content-length"),
        pytest.param(b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n', id="chunked"),
    ],
)
async def test_a_stalled_pass_through_body_is_408_and_frees_its_slot(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, framing: bytes
) -> None:
    """A client that stops sending its body mid-way is answered 408 after the body timeout;
    its in-flight slot and upstream connection are given back."""
    stack = await start_stack(
        aiohttp_server, session, overrides={"limits.body_read_timeout_seconds": 0.3}
    )
    started = time.monotonic()
    response = await raw_exchange(
        stack,
        b"POST /api/execute HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n" + framing,
    )
    assert response.startswith(b"HTTP/1.1 408 "), response[:200]
    assert b'"code":"body_timeout"' in response
    assert time.monotonic() - started < 3
    await wait_for(lambda: stack.state.inflight == 0)


async def test_a_streamed_pass_through_body_keeps_its_length_and_bytes(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """The bounded body stream still sends the client's Content-Length, not chunks."""
    stack = await start_stack(aiohttp_server, session)
    body = bytes(range(256)) * 1000
    async with session.post(
        stack.proxy + "/_emulator/echo", data=body, headers={"Content-Length": str(len(body))}
    ) as response:
        seen = orjson.loads(await response.read())
    names = {name.lower(): value for name, value in seen["headers"]}
    assert names["content-length"] == str(len(body))
    assert "transfer-encoding" not in names
    assert base64.b64decode(seen["body_b64"]) == body


async def test_a_client_that_stops_reading_is_cut_off(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A client that reads nothing of a large answer is disconnected after
    `upstream.timeout_seconds` without progress; nothing stays held."""
    stack = await start_stack(aiohttp_server, session, overrides={"upstream.timeout_seconds": 0.5})
    host, port = stack.proxy.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    body = b"x" * (32 << 20)
    writer.write(
        b"POST /api/execute HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    writer.write(body)
    await writer.drain()
    await wait_for(lambda: stack.state.inflight == 0, within=15)
    received = 0
    async with asyncio.timeout(15):
        while chunk := await reader.read(1 << 20):
            received += len(chunk)
    assert received < len(body)  # cut off: the end of the answer never came
    writer.close()
