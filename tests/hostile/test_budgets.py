"""In-flight budgets under hostile peers: stalled bodies cost no byte budget, one address
cannot take every slot, and pass-through bodies can be capped."""

from __future__ import annotations

import asyncio
import contextlib
import re

import aiohttp
import orjson

from tests.functional.server_support import (
    EMIT_REQUEST,
    ServerFactory,
    Stack,
    open_raw,
    raw_exchange,
    start_stack,
    wait_for,
)
from tests.hostile.wire import start_wire_stack
from tests.loopback import WireUpstream

EVENT_HEAD = b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"


def event_request(body: bytes = EMIT_REQUEST) -> bytes:
    return EVENT_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def _stall(stack: Stack, start: bytes, count: int) -> list[asyncio.StreamWriter]:
    """`count` connections that sent `start` and then nothing more."""
    writers = []
    for _ in range(count):
        _, writer = await open_raw(stack)
        writer.write(start)
        await writer.drain()
        writers.append(writer)
    return writers


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_stalled_chunked_bodies_do_not_lock_out_other_events(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Chunked bodies count by the bytes that arrived: six stalled ones (which would have
    been reserved at max_body_bytes each, 6 x 4096 > 16384) leave room for every other
    event."""
    stack = await start_stack(
        aiohttp_server,
        session,
        overrides={
            "limits.max_body_bytes": 4096,
            "limits.max_inflight_bytes": 16384,
            "limits.body_read_timeout_seconds": 10,
        },
    )
    stalled = await _stall(stack, EVENT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n", 6)
    try:
        await wait_for(lambda: stack.state.inflight == 6)
        assert stack.state.inflight_bytes == 6
        for _ in range(3):
            answer = await raw_exchange(stack, event_request())
            assert _status(answer) == 200, answer[:300]
    finally:
        for writer in stalled:
            writer.close()
    await wait_for(lambda: stack.state.inflight == 0)
    assert stack.state.inflight_bytes == 0


async def test_bytes_count_as_they_arrive_and_declared_lengths_against_what_is_free(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    stack = await start_stack(
        aiohttp_server,
        session,
        overrides={"limits.max_body_bytes": 4096, "limits.max_inflight_bytes": 4096},
    )
    (writer,) = await _stall(stack, EVENT_HEAD + b"Content-Length: 4000\r\n\r\n" + b" " * 3000, 1)
    try:
        await wait_for(lambda: stack.state.inflight_bytes == 3000)
        big = EMIT_REQUEST[:-1] + b" " * 1500 + b"}"
        answer = await raw_exchange(stack, event_request(big))
        assert _status(answer) == 503, answer[:300]
        assert b'"code":"overloaded"' in answer
        answer = await raw_exchange(stack, event_request())
        assert _status(answer) == 200, answer[:300]
    finally:
        writer.close()
    await wait_for(lambda: stack.state.inflight_bytes == 0)


async def test_one_address_cannot_take_every_slot(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """With `limits.max_inflight_per_peer: 2`, a third request from the same address is 503
    (events and pass-through alike) while another address is still served."""
    stack = await start_stack(
        aiohttp_server, session, overrides={"limits.max_inflight_per_peer": 2}
    )
    stalled = await _stall(stack, EVENT_HEAD + b"Content-Length: 100\r\n\r\n{", 2)
    try:
        await wait_for(lambda: stack.state.inflight == 2)
        answer = await raw_exchange(stack, event_request())
        assert _status(answer) == 503, answer[:300]
        problem = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert problem["code"] == "overloaded"
        assert "this client" in problem["detail"]
        answer = await raw_exchange(stack, b"GET /api/health HTTP/1.1\r\nHost: p\r\n\r\n")
        assert _status(answer) == 503, answer[:300]

        host, port = stack.proxy.removeprefix("http://").rsplit(":", 1)
        reader, other = await asyncio.open_connection(host, int(port), local_addr=("127.0.0.2", 0))
        other.write(event_request())
        await other.drain()
        async with asyncio.timeout(5):
            answer = await reader.read(65536)
        other.close()
        assert _status(answer) == 200, answer[:300]
    finally:
        for writer in stalled:
            writer.close()
    await wait_for(lambda: stack.state.inflight == 0)


async def _read_then_ok(
    head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Read the whole request body (either framing), then answer 200."""
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    with contextlib.suppress(asyncio.IncompleteReadError):
        if length is not None:
            await reader.readexactly(int(length.group(1)))
        else:
            await reader.readuntil(b"0\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()


async def test_the_optional_pass_through_body_cap(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """`limits.max_passthrough_body_bytes`: over it, 413 (declared: before anything is sent
    upstream; chunked: the upstream request is cut short); within it, passed through."""
    upstream = WireUpstream(_read_then_ok)
    stack = await start_wire_stack(
        aiohttp_server, session, upstream, {"limits.max_passthrough_body_bytes": 100}
    )
    start = b"POST /api/execute HTTP/1.1\r\nHost: p\r\n"
    try:
        answer = await raw_exchange(stack, start + b"Content-Length: 200\r\n\r\n" + b"x" * 200)
        assert _status(answer) == 413, answer[:300]
        assert b'"code":"body_too_large"' in answer
        assert upstream.heads == []

        chunks = b"".join(b"32\r\n" + b"y" * 50 + b"\r\n" for _ in range(4)) + b"0\r\n\r\n"
        answer = await raw_exchange(stack, start + b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
        assert _status(answer) == 413, answer[:300]

        answer = await raw_exchange(stack, start + b"Content-Length: 100\r\n\r\n" + b"z" * 100)
        assert _status(answer) == 200, answer[:300]
        answer = await raw_exchange(
            stack,
            start + b"Transfer-Encoding: chunked\r\n\r\n32\r\n" + b"w" * 50 + b"\r\n0\r\n\r\n",
        )
        assert _status(answer) == 200, answer[:300]
    finally:
        await upstream.close()
    await wait_for(lambda: stack.state.inflight == 0)


async def test_a_chunked_body_that_outgrows_the_free_budget_is_refused_mid_read(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Counted as it arrives: once a chunked body's bytes no longer fit next to what is in
    flight, it is answered 503 and its connection closed, and nothing was forwarded."""
    stack = await start_stack(
        aiohttp_server,
        session,
        overrides={"limits.max_body_bytes": 4096, "limits.max_inflight_bytes": 4096},
    )
    (writer,) = await _stall(stack, EVENT_HEAD + b"Content-Length: 4000\r\n\r\n" + b" " * 3000, 1)
    try:
        await wait_for(lambda: stack.state.inflight_bytes == 3000)
        chunk = b" " * 1500
        answer = await raw_exchange(
            stack,
            EVENT_HEAD
            + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(chunk)
            + chunk
            + b"\r\n0\r\n\r\n",
        )
        assert _status(answer) == 503, answer[:300]
        assert b"\r\nConnection: close" in answer
        assert await stack.upstream_requests() == 0
    finally:
        writer.close()
    await wait_for(lambda: stack.state.inflight_bytes == 0)
