"""Slow peers: a stalled body is answered 408 and its connection closed at once."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import pytest

from tests.functional.server_support import ServerFactory, open_raw, start_stack, wait_for

BODY_TIMEOUT = 0.4

STALLED = [
    pytest.param(b"POST /api/events HTTP/1.1\r\n", b"Content-Length: 1000\r\n\r\n{", id="event-cl"),
    pytest.param(
        b"POST /api/events HTTP/1.1\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n",
        id="event-chunked",
    ),
    pytest.param(
        b"POST /api/execute HTTP/1.1\r\n", b"Content-Length: 1000\r\n\r\n{", id="passthrough-cl"
    ),
    pytest.param(
        b"POST /api/execute HTTP/1.1\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n",
        id="passthrough-chunked",
    ),
]


@pytest.mark.parametrize(("line", "framing"), STALLED)
async def test_a_stalled_body_is_answered_408_and_the_socket_closed_promptly(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, line: bytes, framing: bytes
) -> None:
    """The server closes the connection right after the 408, not after draining the rest of
    a body that is not coming (aiohttp's lingering close waits 10 s for it)."""
    stack = await start_stack(
        aiohttp_server, session, overrides={"limits.body_read_timeout_seconds": BODY_TIMEOUT}
    )
    reader, writer = await open_raw(stack)
    try:
        started = time.monotonic()
        writer.write(line + b"Host: p\r\nContent-Type: application/json\r\n" + framing)
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read()  # until the server closes
        closed_after = time.monotonic() - started
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"code":"body_timeout"' in answer
    assert closed_after < BODY_TIMEOUT + 1.5, closed_after
    await wait_for(lambda: stack.state.inflight == 0)


@pytest.mark.parametrize("dribble", [False, True], ids=["stalled-head", "dribbled-head"])
async def test_a_request_head_that_never_ends_is_closed_by_the_keepalive_bound(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, dribble: bool
) -> None:
    """Slowloris: a head that stalls, or arrives a byte at a time and never ends, holds its
    connection no longer than about `limits.keepalive_timeout_seconds`."""
    stack = await start_stack(
        aiohttp_server, session, overrides={"limits.keepalive_timeout_seconds": 0.5}
    )
    reader, writer = await open_raw(stack)
    started = time.monotonic()
    writer.write(b"POST /api/events HTTP/1.1\r\nHost: p\r\n")
    await writer.drain()

    async def dribbling() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(50):
                await asyncio.sleep(0.1)
                writer.write(b"X")
                await writer.drain()

    feeder = asyncio.create_task(dribbling()) if dribble else None
    try:
        async with asyncio.timeout(4):
            assert await reader.read() == b""  # closed without an answer
    finally:
        if feeder is not None:
            feeder.cancel()
        writer.close()
    assert time.monotonic() - started < 3
