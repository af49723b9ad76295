"""Event endpoints under limits and bad framing: what is refused before the upstream is
called (in-flight requests and bytes, content type, size, time, framing), and how a client
that leaves early or idles on a keep-alive connection is treated."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from tests.functional.server_support import (
    EMIT_REQUEST,
    JSON,
    ServerFactory,
    eventually,
    open_raw,
    raw_exchange,
    start_stack,
    wait_for,
)


async def test_over_the_inflight_limit_is_503_overloaded(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """With one slot taken by a slow request, the next gets 503 overloaded with Retry-After."""
    stack = await start_stack(
        aiohttp_server, session, "rust-2.19.1", overrides={"limits.max_inflight": 1}
    )
    await stack.fault(delay_seconds=1.5)  # wide: the next request must find the slot taken
    slow = asyncio.create_task(stack.post("/api/events", EMIT_REQUEST))
    await wait_for(lambda: stack.state.inflight == 1)
    assert stack.recorder.view is not None
    assert stack.recorder.view.inflight == 1
    response, answer = await stack.post("/api/events", EMIT_REQUEST)
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert orjson.loads(answer)["code"] == "overloaded"
    first, _ = await slow
    assert first.status == 200
    assert await stack.upstream_requests() == 1


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/cloudevents+json", True),
        ("text/plain", False),
        ("application/json; charset=latin-1", False),
        ("application/x-www-form-urlencoded", False),
    ],
)
async def test_json_content_type_is_required(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    content_type: str,
    accepted: bool,
) -> None:
    """Like the Rust server: JSON media types (UTF-8) pass, anything else is 415."""
    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    response, answer = await stack.post(
        "/api/events", EMIT_REQUEST, headers={"Content-Type": content_type}
    )
    if accepted:
        assert response.status == 200, answer
    else:
        assert response.status == 415
        assert orjson.loads(answer)["code"] == "unsupported_media_type"
        assert await stack.upstream_requests() == 0


async def test_missing_content_type_is_415(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A body without any Content-Type is refused, never sniffed."""
    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    response = await raw_exchange(
        stack,
        b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Length: %d\r\n\r\n%s"
        % (len(EMIT_REQUEST), EMIT_REQUEST),
    )
    assert response.startswith(b"HTTP/1.1 415 ")


async def test_declared_oversize_body_is_413_before_it_is_sent(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A Content-Length over the limit is answered 413 without waiting for a single body byte."""
    stack = await start_stack(
        aiohttp_server, session, "rust-2.19.1", overrides={"limits.max_body_bytes": 64}
    )
    response = await raw_exchange(
        stack,
        b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
        b"Content-Length: 65\r\n\r\n",
    )
    assert response.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in response
    assert b'"code":"body_too_large"' in response


async def test_exactly_the_limit_is_accepted_and_chunked_growth_past_it_is_413(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A body of exactly `max_body_bytes` passes; a chunked body growing past it is refused."""
    limit = len(EMIT_REQUEST)
    stack = await start_stack(
        aiohttp_server, session, "rust-2.19.1", overrides={"limits.max_body_bytes": limit}
    )
    response, answer = await stack.post("/api/events", EMIT_REQUEST)
    assert response.status == 200, answer

    async def chunks() -> AsyncIterator[bytes]:
        yield EMIT_REQUEST[:-1]
        yield b" " * 10 + b"}"

    async with session.post(stack.proxy + "/api/events", data=chunks(), headers=JSON) as resp:
        assert resp.status == 413
        assert orjson.loads(await resp.read())["code"] == "body_too_large"
    assert await stack.upstream_requests() == 1

    async def within_limit() -> AsyncIterator[bytes]:
        yield EMIT_REQUEST[:10]
        yield EMIT_REQUEST[10:]

    async with session.post(stack.proxy + "/api/events", data=within_limit(), headers=JSON) as resp:
        assert resp.status == 200
    assert await stack.upstream_requests() == 2
    assert len(await stack.stored()) == 2


async def test_expect_100_continue_with_oversize_body_is_refused_before_sending(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A client asking `Expect: 100-continue` for a too-large body gets 413, not 100."""
    stack = await start_stack(
        aiohttp_server, session, "rust-2.19.1", overrides={"limits.max_body_bytes": 64}
    )
    response = await raw_exchange(
        stack,
        b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
    )
    assert response.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in response


async def test_expect_100_continue_refused_is_answered_recorded_and_closed_at_once(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A wrong content type is refused before the body is sent (415, not 100); the refusal
    is recorded like any other, and the connection closes at once instead of waiting for a
    body that is not coming."""
    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    reader, writer = await open_raw(stack)
    writer.write(
        b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n"
    )
    started = asyncio.get_running_loop().time()
    try:
        async with asyncio.timeout(5):
            answer = await reader.read()  # to the end: the proxy closes the connection
    finally:
        writer.close()
    assert asyncio.get_running_loop().time() - started < 2
    assert answer.startswith(b"HTTP/1.1 415 ")
    assert b"100 Continue" not in answer
    [record] = stack.recorder.records
    assert (record.outcome, record.error_code) == ("rejected", "unsupported_media_type")
    assert await stack.upstream_requests() == 0


async def test_client_gone_mid_body_forwards_nothing(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A client that disconnects before its body is complete causes no upstream call."""
    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    _, writer = await open_raw(stack)
    writer.write(
        b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"execution_id":'
    )
    await writer.drain()
    await wait_for(lambda: stack.state.inflight == 1)  # the handler is reading the body
    writer.close()
    await wait_for(lambda: bool(stack.recorder.records))
    assert stack.recorder.records[0].error_code == "client_aborted"
    assert await stack.upstream_requests() == 0


async def test_stalled_body_is_408(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Headers sent, body stalls: the proxy answers 408 after the body timeout and closes."""
    stack = await start_stack(
        aiohttp_server, session, "rust-2.19.1", overrides={"limits.body_read_timeout_seconds": 0.3}
    )
    response = await raw_exchange(
        stack,
        b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
        b'Content-Length: 50\r\n\r\n{"execution_id"',
    )
    assert response.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"body_timeout"' in response
    assert await stack.upstream_requests() == 0


async def test_ambiguous_framing_is_400_and_never_forwarded(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Content-Length together with chunked encoding (a smuggling vector) is refused."""
    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    response = await raw_exchange(
        stack,
        b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    assert response.startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 "))
    assert await stack.upstream_requests() == 0


async def test_client_leaving_after_the_body_does_not_cancel_forwarding(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """The event is still delivered and recorded after the client hung up waiting for it."""
    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    await stack.fault(delay_seconds=2.0)  # the emulator stores the event, then waits
    _, writer = await open_raw(stack)
    writer.write(
        b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(EMIT_REQUEST), EMIT_REQUEST)
    )
    await writer.drain()

    async def upstream_has_it() -> bool:
        return await stack.upstream_requests() == 1

    await eventually(upstream_has_it)
    assert not stack.recorder.records  # the upstream has not answered: the client leaves first
    writer.close()
    await wait_for(lambda: bool(stack.recorder.records))
    assert [r.outcome for r in stack.recorder.records] == ["forwarded"]
    assert len(await stack.stored()) == 1
    assert stack.state.inflight == 0


async def test_over_the_inflight_bytes_limit_is_503_overloaded(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Bodies in flight count by the bytes received (a declared Content-Length is checked
    against what is free); a request that would pass `limits.max_inflight_bytes` gets 503
    overloaded, a small chunked one still fits, and the bytes are free again once the
    exchange is over."""
    limit = 4096
    stack = await start_stack(
        aiohttp_server,
        session,
        overrides={"limits.max_body_bytes": limit, "limits.max_inflight_bytes": limit},
    )
    await stack.fault(delay_seconds=1.0)
    slow = asyncio.create_task(stack.post("/api/events", EMIT_REQUEST))
    await wait_for(lambda: stack.state.inflight == 1)
    _, ready = await stack.readyz()
    assert ready["inflight_bytes"] == len(EMIT_REQUEST)

    largest = EMIT_REQUEST[:-1] + b" " * (limit - len(EMIT_REQUEST)) + b"}"
    assert len(largest) == limit
    response, answer = await stack.post("/api/events", largest)
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert orjson.loads(answer)["code"] == "overloaded"

    async def chunked() -> AsyncIterator[bytes]:
        yield EMIT_REQUEST

    async with session.post(stack.proxy + "/api/events", data=chunked(), headers=JSON) as resp:
        assert resp.status == 200
    assert [r.error_code for r in stack.recorder.records].count("overloaded") == 1

    first, _ = await slow
    assert first.status == 200
    assert stack.state.inflight_bytes == 0
    await stack.fault()  # no more delay
    response, answer = await stack.post("/api/events", largest)
    assert response.status == 200, answer
    assert len(await stack.stored()) == 3


async def test_expect_100_continue_over_the_inflight_bytes_budget_is_503_before_sending(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """With the in-flight byte budget taken, `Expect: 100-continue` gets 503 overloaded and no
    `100 Continue`: the client keeps its body; once the budget is free it gets 100."""
    limit = 4096
    stack = await start_stack(
        aiohttp_server,
        session,
        overrides={"limits.max_body_bytes": limit, "limits.max_inflight_bytes": limit},
    )
    expect_full_body = (
        b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % limit
    )
    await stack.fault(delay_seconds=1.0)
    slow = asyncio.create_task(stack.post("/api/events", EMIT_REQUEST))
    await wait_for(lambda: stack.state.inflight == 1)
    response = await raw_exchange(stack, expect_full_body)
    assert response.startswith(b"HTTP/1.1 503 ")
    assert b"100 Continue" not in response
    assert b'"code":"overloaded"' in response
    assert b"Retry-After: 1" in response

    first, _ = await slow
    assert first.status == 200
    reader, writer = await open_raw(stack)
    writer.write(expect_full_body)
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.close()
    assert await stack.upstream_requests() == 1


async def test_chunked_body_counts_at_its_size_once_read(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A chunked body reserves max_body_bytes while it arrives and only its size afterwards."""
    stack = await start_stack(aiohttp_server, session)
    await stack.fault(delay_seconds=1.0)

    async def chunked() -> AsyncIterator[bytes]:
        yield EMIT_REQUEST[:10]
        yield EMIT_REQUEST[10:]

    async def post_chunked() -> int:
        async with session.post(stack.proxy + "/api/events", data=chunked(), headers=JSON) as r:
            return r.status

    slow = asyncio.create_task(post_chunked())

    async def upstream_has_it() -> bool:
        return await stack.upstream_requests() == 1

    await eventually(upstream_has_it)
    _, ready = await stack.readyz()
    assert (ready["inflight"], ready["inflight_bytes"]) == (1, len(EMIT_REQUEST))
    assert await slow == 200
    _, ready = await stack.readyz()
    assert (ready["inflight"], ready["inflight_bytes"]) == (0, 0)


async def test_idle_keep_alive_connection_is_closed_after_the_timeout(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A keep-alive connection left idle is closed after `limits.keepalive_timeout_seconds`
    (not aiohttp's 75 s), while the answer itself kept the connection open."""
    stack = await start_stack(
        aiohttp_server, session, overrides={"limits.keepalive_timeout_seconds": 0.5}
    )
    reader, writer = await open_raw(stack)
    try:
        writer.write(b"GET /api/health HTTP/1.1\r\nHost: p\r\n\r\n")
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        assert head.startswith(b"http/1.1 200 ")
        assert b"connection: close" not in head
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        loop = asyncio.get_running_loop()
        idle_since = loop.time()
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # closed by the proxy
        assert loop.time() - idle_since >= 0.3
    finally:
        writer.close()


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(b"Content-Length: 4\r\nContent-Length: 5\r\n", id="two-lengths"),
        pytest.param(b"Content-Length: 4, 5\r\n", id="list-of-lengths"),
        pytest.param(b"Content-Length: +4\r\n", id="signed-length"),
    ],
)
async def test_ambiguous_content_length_is_400_and_never_forwarded(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, framing: bytes
) -> None:
    """A body length a front proxy and the upstream could read differently is refused."""
    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    response = await raw_exchange(
        stack,
        b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
        + framing
        + b"\r\n{}\r\n\r\n",
    )
    assert response.startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 "))
    assert await stack.upstream_requests() == 0


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(b"X-Big: " + b"a" * 8200 + b"\r\n", id="header-over-8190-bytes"),
        pytest.param(b"".join(b"X-H%d: v\r\n" % i for i in range(130)), id="over-128-headers"),
        pytest.param(b"", id="request-line-over-8190-bytes"),
    ],
)
async def test_oversized_request_head_is_400_and_never_forwarded(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, headers: bytes
) -> None:
    """Header lines over 8190 bytes or more than 128 headers are refused by the HTTP layer."""
    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    path = b"/api/events" if headers else b"/api/events?q=" + b"a" * 8200
    response = await raw_exchange(
        stack,
        b"POST "
        + path
        + b" HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
        + headers
        + b"Content-Length: %d\r\n\r\n%s" % (len(EMIT_REQUEST), EMIT_REQUEST),
    )
    assert response.startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 ")), response[:200]
    assert await stack.upstream_requests() == 0


async def test_request_head_just_within_the_limits_is_forwarded(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """The same limits are not refusing what they should allow: 8000-byte headers, 100 of them."""
    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    headers = {**JSON, "X-Big": "a" * 8000, **{f"X-H{i}": "v" for i in range(100)}}
    response, answer = await stack.post("/api/events", EMIT_REQUEST, headers)
    assert response.status == 200, answer
    assert len(await stack.stored()) == 1


async def test_all_upstream_connections_busy_is_503_never_sent(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """An event that finds every pooled upstream connection busy for the connect timeout is
    answered 503 overloaded, and provably never sent; the busy one completes normally."""
    stack = await start_stack(
        aiohttp_server,
        session,
        overrides={"upstream.pool_size": 1, "upstream.connect_timeout_seconds": 0.3},
    )
    await stack.fault(delay_seconds=1.5)
    first = asyncio.create_task(stack.post("/api/events", EMIT_REQUEST))
    await wait_for(lambda: stack.recorder.attempts == 1)
    started = time.monotonic()
    response, answer = await stack.post("/api/events", EMIT_REQUEST)
    assert response.status == 503, answer
    assert response.headers["Retry-After"] == "1"
    problem = orjson.loads(answer)
    assert problem["code"] == "overloaded"
    assert problem["detail"].endswith("the event was not sent")
    assert time.monotonic() - started < 1.2
    response, answer = await first
    assert response.status == 200, answer
    assert stack.recorder.attempts == 1
    assert await stack.upstream_requests() == 1
    assert [r.error_code for r in stack.recorder.records].count("overloaded") == 1


async def test_an_event_waiting_for_a_busy_connection_keeps_its_time_budget(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """An event that waits for a pooled connection goes out when one frees up, with the
    time it waited taken from its upstream budget, not added to it."""
    stack = await start_stack(
        aiohttp_server,
        session,
        overrides={
            "upstream.pool_size": 1,
            "upstream.connect_timeout_seconds": 2,
            "upstream.timeout_seconds": 1.2,
        },
    )
    await stack.fault(delay_seconds=0.7)
    first = asyncio.create_task(stack.post("/api/events", EMIT_REQUEST))
    await wait_for(lambda: stack.recorder.attempts == 1)
    # Waits ~0.7 s for the connection, then needs 0.7 s more: past its 1.2 s budget.
    response, answer = await stack.post("/api/events", EMIT_REQUEST)
    assert response.status == 504, answer
    assert orjson.loads(answer)["code"] == "upstream_timeout"
    response, answer = await first
    assert response.status == 200, answer
    await stack.fault(delay_seconds=0.3)
    first = asyncio.create_task(stack.post("/api/events", EMIT_REQUEST))
    await wait_for(lambda: stack.recorder.attempts == 3)
    response, answer = await stack.post("/api/events", EMIT_REQUEST)  # ~0.3 + 0.3 s
    assert response.status == 200, answer
    assert (await first)[0].status == 200


async def test_while_draining_every_answer_closes_its_connection(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Draining sends keep-alive clients elsewhere: a forwarded event, a refused one, an
    unknown `Expect` and a pass-through answer all carry `Connection: close`; before
    draining none does."""
    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")

    async def connection_headers() -> list[str | None]:
        seen = []
        for path, body, headers in (
            ("/api/events", EMIT_REQUEST, None),
            ("/api/events", EMIT_REQUEST, {"Content-Type": "text/plain"}),
            ("/api/events", EMIT_REQUEST, {**JSON, "Expect": "something-else"}),
        ):
            response, _ = await stack.post(path, body, headers=headers)
            seen.append(response.headers.get("Connection"))
        async with session.get(stack.proxy + "/api/health") as response:
            await response.read()
            seen.append(response.headers.get("Connection"))
        return seen

    assert await connection_headers() == [None, None, None, None]
    stack.state.draining = True
    assert await connection_headers() == ["close", "close", "close", "close"]
