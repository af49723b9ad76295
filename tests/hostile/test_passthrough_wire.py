"""Pass-through against an upstream that misbehaves on the wire, and paths no route may miss."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson
import pytest

from tests.functional.server_support import ServerFactory, raw_exchange, wait_for
from tests.hostile.conftest import Captured
from tests.hostile.wire import start_wire_stack
from tests.loopback import Script, WireUpstream

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
    upstream = WireUpstream(_reset)
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
    upstream = WireUpstream(_answer_ok)
    stack = await start_wire_stack(aiohttp_server, session, upstream)
    try:
        response = await raw_exchange(stack, f"GET {target} HTTP/1.1\r\nHost: p\r\n\r\n".encode())
        assert response.startswith(b"HTTP/1.1 200 "), response[:200]
        await wait_for(lambda: len(upstream.heads) == 1)
        assert upstream.heads[0].startswith(f"GET {target} HTTP/1.1\r\n".encode())
    finally:
        await upstream.close()


def _sends(*parts: bytes, then_wait: float = 0.0) -> Script:
    """Write each part, with a short pause between them, then wait `then_wait` seconds."""

    async def script(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        for index, part in enumerate(parts):
            if index:
                await asyncio.sleep(0.1)
            writer.write(part)
            await writer.drain()
        if then_wait:
            await asyncio.sleep(then_wait)

    return script


# (what the upstream sends, the status the client must see, the problem code)
BROKEN_ANSWERS = [
    pytest.param(b"", 502, "upstream_disconnected", id="closes-at-once"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Le", 502, None, id="half-a-head"),
    pytest.param(b"HTTP/1.1 2x0 OK\r\n\r\n", 502, "bad_upstream_response", id="bad-status"),
    pytest.param(b"HTTTP/1.1 200 OK\r\n\r\n", 502, "bad_upstream_response", id="bad-version"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nX-A: a\rInjected: 1\r\nContent-Length: 0\r\n\r\n",
        502,
        "bad_upstream_response",
        id="bare-cr-in-header",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        502,
        "bad_upstream_response",
        id="cl-and-te",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        502,
        "bad_upstream_response",
        id="two-cl",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        502,
        "bad_upstream_response",
        id="oversized-header",
    ),
    pytest.param(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: Upgrade\r\n\r\nraw",
        502,
        "bad_upstream_response",
        id="unasked-101",
    ),
]


@pytest.mark.parametrize(("sent", "status", "code"), BROKEN_ANSWERS)
async def test_a_broken_upstream_answer_is_a_clean_502(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    sent: bytes,
    status: int,
    code: str | None,
) -> None:
    upstream = WireUpstream(_sends(sent))
    stack = await start_wire_stack(aiohttp_server, session, upstream)
    try:
        answer = await raw_exchange(stack, b"GET /api/x HTTP/1.1\r\nHost: p\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:300]
        problem = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])
        if code is not None:
            assert problem["code"] == code, problem
        assert b"\r\nInjected" not in answer  # never a header of the client's answer
        await wait_for(lambda: stack.state.inflight == 0)
    finally:
        await upstream.close()


async def test_a_silent_upstream_is_504_within_the_timeout(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    upstream = WireUpstream(_sends(b"", then_wait=5))
    stack = await start_wire_stack(
        aiohttp_server, session, upstream, {"upstream.timeout_seconds": 0.5}
    )
    try:
        started = asyncio.get_running_loop().time()
        answer = await raw_exchange(stack, b"GET /api/x HTTP/1.1\r\nHost: p\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 504 "), answer[:300]
        assert asyncio.get_running_loop().time() - started < 3
    finally:
        await upstream.close()


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(
            (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", b"only-this"), id="short-body"
        ),
        pytest.param(
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                b"zz\r\n",
            ),
            id="bad-chunk-mid-body",
        ),
    ],
)
async def test_an_answer_cut_mid_body_cuts_the_client_off(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, sent: tuple[bytes, ...]
) -> None:
    """Once the answer started, a broken body is not papered over: the client's connection
    is cut, so it sees the truncation instead of a complete-looking answer."""
    upstream = WireUpstream(_sends(*sent))
    stack = await start_wire_stack(aiohttp_server, session, upstream)
    try:
        async with session.get(stack.proxy + "/api/x") as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        await wait_for(lambda: stack.state.inflight == 0)
    finally:
        await upstream.close()
