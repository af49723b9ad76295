"""Pass-through under slow peers: long streams, stalled bodies and clients that stop reading
hold nothing forever, and never take what event requests need."""

from __future__ import annotations

import time

import aiohttp
import orjson

from tests.functional.server_support import (
    EMIT_REQUEST,
    JSON,
    ServerFactory,
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
