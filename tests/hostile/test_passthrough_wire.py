"""Pass-through against an upstream that misbehaves on the wire, and paths no route may miss."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson
import pytest

from tests.functional.server_support import ServerFactory, raw_exchange, wait_for
from tests.hostile.conftest import Captured
from tests.hostile.wire import WireUpstream, start_wire_stack

INJECTED_PATH = "/api/x%0D%0AINFO%20forged%1B[31m%E2%80%A8%E2%80%A9%C2%85end"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def _answer_ok(
    head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    writer.write(OK)
    await writer.drain()


async def _reset(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()


async def test_control_characters_in_a_path_are_escaped_in_the_log(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, all_logs: Captured
) -> None:
    """A failed pass-through logs its decoded path with CR, LF, ESC, C1 and U+2028/2029
    escaped, and its detail speaks of a request, not of an event."""
    upstream = WireUpstream()
    upstream.script = _reset
    stack = await start_wire_stack(aiohttp_server, session, upstream)
    try:
        response = await raw_exchange(
            stack, f"GET {INJECTED_PATH} HTTP/1.1\r\nHost: p\r\n\r\n".encode()
        )
        assert response.startswith(b"HTTP/1.1 502 "), response[:200]
        problem = orjson.loads(response.split(b"\r\n\r\n", 1)[1])
        assert "event" not in problem["detail"]
        warnings = [r.getMessage() for r in all_logs.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, warnings
        (line,) = warnings
        assert "INFO forged" in line  # the path is there, readable
        assert "event" not in line
        for raw in ("\r", "\n", "\x1b", "\u2028", "\u2029", "\x85"):
            assert raw not in line
        assert "\\r\\nINFO forged\\x1b[31m\\u2028\\u2029\\x85end" in line
    finally:
        await upstream.close()


@pytest.mark.parametrize(
    "target",
    [
        "/api/x%0Ay",
        "/api/x%0D%0Ay",
        "/%0A",
        "/api/x%00y",
        "/api/%2F%2E%2E%2Fadmin",
        "/api/x%E2%80%A8y",
    ],
)
async def test_any_path_is_passed_through(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, target: str
) -> None:
    """Every path (encoded line feeds, NUL, encoded slashes) reaches the upstream exactly as
    sent; the proxy does not answer 404 itself."""
    upstream = WireUpstream()
    upstream.script = _answer_ok
    stack = await start_wire_stack(aiohttp_server, session, upstream)
    try:
        response = await raw_exchange(stack, f"GET {target} HTTP/1.1\r\nHost: p\r\n\r\n".encode())
        assert response.startswith(b"HTTP/1.1 200 "), response[:200]
        await wait_for(lambda: len(upstream.heads) == 1)
        assert upstream.heads[0].startswith(f"GET {target} HTTP/1.1\r\n".encode())
    finally:
        await upstream.close()
