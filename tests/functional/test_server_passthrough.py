"""Pass-through: every non-event request reaches the upstream untouched and streams both ways."""

from __future__ import annotations

import asyncio
import base64
import gzip
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from proxy.emulator.routes import GZIP_PAYLOAD
from tests.functional.server_support import (
    ServerFactory,
    Stack,
    closed_port_url,
    settings_for,
    start_proxy,
    start_stack,
)
from tests.loopback import WireUpstream


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        yield client


@pytest.fixture
async def stack(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> Stack:
    return await start_stack(aiohttp_server, session, "rust-2.19.1")


async def echo(
    stack: Stack, method: str, path_qs: str, **kwargs: object
) -> tuple[int, dict[str, object]]:
    async with stack.session.request(method, stack.proxy + path_qs, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, orjson.loads(await response.read())


def header_values(seen: dict[str, object], name: str) -> list[str]:
    pairs = seen["headers"]
    assert isinstance(pairs, list)
    return [value for key, value in pairs if key.lower() == name.lower()]


async def test_method_path_and_raw_query_are_kept(stack: Stack) -> None:
    """The upstream sees the method, path and query string byte for byte (order and escapes)."""
    status, seen = await echo(
        stack, "DELETE", "/_emulator/echo/a%2Fb/c?z=1&a=%20x&a=2&empty=&flag", skip_auto_headers=()
    )
    assert status == 200
    assert seen["method"] == "DELETE"
    assert seen["path"] == "/_emulator/echo/a%2Fb/c"
    assert seen["query_string"] == "z=1&a=%20x&a=2&empty=&flag"


async def test_request_body_is_streamed_unchanged(stack: Stack) -> None:
    """Binary and chunked request bodies reach the upstream exactly, with their length."""
    body = bytes(range(256)) * 64
    status, seen = await echo(stack, "PUT", "/_emulator/echo", data=body)
    assert status == 200
    assert base64.b64decode(str(seen["body_b64"])) == body
    assert header_values(seen, "Content-Length") == [str(len(body))]

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"first,", b"second,", b"third"):
            yield part

    status, seen = await echo(stack, "POST", "/_emulator/echo", data=chunks())
    assert base64.b64decode(str(seen["body_b64"])) == b"first,second,third"


async def test_hop_by_hop_and_connection_named_headers_stop_at_the_proxy(stack: Stack) -> None:
    """Connection-listed and hop-by-hop headers are dropped; Authorization and others pass."""
    status, seen = await echo(
        stack,
        "GET",
        "/_emulator/echo",
        headers={
            "Connection": "X-Hop, keep-alive",
            "X-Hop": "secret",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic cHJveHk6cHc=",
            "Proxy-Connection": "keep-alive",
            "Trailer": "X-Sum",
            "Upgrade": "h2c",
            "Authorization": "Bearer token-123",
            "X-NoETL-Client": "ops",
            "Cookie": "a=1",
        },
    )
    assert status == 200
    names = {str(name).lower() for name, _ in seen["headers"]}  # type: ignore[attr-defined]
    dropped = {
        "x-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "trailer",
        "upgrade",
    }
    assert not names & dropped
    assert header_values(seen, "Authorization") == ["Bearer token-123"]
    assert header_values(seen, "X-NoETL-Client") == ["ops"]
    assert header_values(seen, "Cookie") == ["a=1"]
    assert header_values(seen, "Connection") in ([], ["keep-alive"])


async def test_the_proxy_adds_no_client_headers_of_its_own(stack: Stack) -> None:
    """A client that sends no User-Agent, Accept or Accept-Encoding: the upstream sees none
    either (aiohttp's client would add its own defaults)."""
    status, seen = await echo(
        stack,
        "GET",
        "/_emulator/echo",
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
    )
    assert status == 200
    names = {str(name).lower() for name, _ in seen["headers"]}  # type: ignore[attr-defined]
    assert not names & {"user-agent", "accept", "accept-encoding", "content-type"}
    status, seen = await echo(stack, "GET", "/_emulator/echo", headers={"User-Agent": "cli/1"})
    assert header_values(seen, "User-Agent") == ["cli/1"]


async def test_forwarded_headers_are_set_and_host_is_the_upstreams(stack: Stack) -> None:
    """X-Forwarded-For is appended to, -Proto and -Host describe the client's request."""
    proxy_host = stack.proxy.removeprefix("http://")
    status, seen = await echo(
        stack,
        "GET",
        "/_emulator/echo",
        headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "spoofed.example"},
    )
    assert status == 200
    assert header_values(seen, "X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]
    assert header_values(seen, "X-Forwarded-Proto") == ["http"]
    assert header_values(seen, "X-Forwarded-Host") == [proxy_host]
    assert header_values(seen, "Host") == [stack.upstream.removeprefix("http://")]


async def test_server_sent_events_arrive_one_by_one(stack: Stack) -> None:
    """Each SSE event reaches the client when the upstream sends it, not at the end."""
    started = time.monotonic()
    arrivals = []
    async with stack.session.get(
        stack.proxy + "/api/executions/478775660589088776/stream?count=3&interval=0.4"
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        buffer = b""
        async for chunk in response.content.iter_any():
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                arrivals.append((time.monotonic() - started, event))
    assert len(arrivals) == 4  # three progress events and the end marker
    assert b'"execution_id":478775660589088776' in arrivals[0][1]
    assert arrivals[0][0] < 0.3
    assert arrivals[-1][0] >= 0.8


async def test_gzip_answer_bytes_and_encoding_are_intact(stack: Stack) -> None:
    """A gzip answer arrives compressed as sent, with its Content-Encoding, and decodes right."""
    async with stack.session.get(
        stack.proxy + "/_emulator/gzip", headers={"Accept-Encoding": "gzip"}
    ) as response:
        raw = await response.read()
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Length"] == str(len(raw))
    assert raw == gzip.compress(GZIP_PAYLOAD, mtime=0)
    async with (
        aiohttp.ClientSession() as decoding,
        decoding.get(stack.proxy + "/_emulator/gzip") as response,
    ):
        assert await response.read() == GZIP_PAYLOAD


async def test_big_ids_in_pass_through_json_are_untouched(stack: Stack) -> None:
    """A JSON answer carrying an i64 id is relayed as bytes, never re-encoded."""
    async with stack.session.get(
        stack.proxy + "/api/executions/9223372036854775807/status"
    ) as response:
        assert response.status == 200
        assert b'"execution_id":9223372036854775807' in await response.read()


async def test_upstream_404_and_method_are_relayed(stack: Stack) -> None:
    """Whatever the upstream answers (here its 404 and 405) reaches the client as is."""
    async with stack.session.get(stack.proxy + "/api/nowhere") as response:
        assert response.status == 404
    async with stack.session.get(stack.proxy + "/api/events") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"


async def test_hop_by_hop_response_headers_stop_at_the_proxy(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Headers an upstream marks connection-only never reach the client; others do."""

    async def answer(_: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\n"
            b"Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-Kept: yes\r\n"
            b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok"
        )
        await writer.drain()

    upstream = WireUpstream(answer)
    try:
        settings = settings_for(await upstream.start(), {"upstream.version": "v1"})
        proxy, _, _, _ = await start_proxy(aiohttp_server, settings)
        async with session.get(proxy + "/anything") as response:
            assert await response.read() == b"ok"
            headers = response.headers
            assert "X-Secret" not in headers
            assert "Keep-Alive" not in headers
            assert "Proxy-Authenticate" not in headers
            assert headers["X-Kept"] == "yes"
            assert headers.getall("Set-Cookie") == ["a=1", "b=2"]
    finally:
        await upstream.close()


async def test_unreachable_upstream_is_502_problem(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A pass-through request to an upstream that refuses connections gets 502 problem+json."""
    settings = settings_for(closed_port_url(), {"upstream.version": "v1"})
    proxy, _, _, _ = await start_proxy(aiohttp_server, settings)
    async with session.get(proxy + "/api/health") as response:
        assert response.status == 502
        assert response.headers["Content-Type"] == "application/problem+json"
        assert orjson.loads(await response.read())["code"] == "upstream_unavailable"
