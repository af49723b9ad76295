"""The event path's upstream connection pool against a scripted upstream on the wire.

Answers are relayed byte for byte, a connection is reused only when its answer allows it,
every broken answer becomes a clean problem, nothing that may have been written is sent
twice, and the upstream never sees more connections at once than the pool holds.

Covered elsewhere, with the emulator (tests/functional/test_server_events_upstream.py):
connection refused (one retry, then 502), silence (504, no retry), idle pooled connections
closed by the upstream's keep-alive timeout, an early 413 while the request is still being
written. (The emulator's "drop" closes the socket early, which the proxy sees as a plain
close: the resets here are real ones, see `wire.reset`.)
"""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import orjson
import pytest

from proxy.server.upstream import MAX_ANSWER_BYTES, MAX_ANSWER_HEAD_BYTES
from tests.functional.server_support import (
    EMIT_REQUEST,
    ServerFactory,
    Stack,
    settings_for,
    start_proxy,
    wait_for,
)
from tests.hostile.wire import start_wire_stack
from tests.loopback import Script, WireUpstream, read_body, reset
from tests.samples import sample_bytes

BATCH = sample_bytes("rust_batch_event_request__integer_execution_id")
# Every test's exchanges together; far above what they need, so a hang fails fast.
BOUND = 15


def _ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


OK_BODY = b'{"event_id":"1"}'
OK = _ok(OK_BODY)


def _answers(*parts: bytes, keep: bool = True, pause: float = 0.0) -> Script:
    """Read the request's body, write each part (`pause` seconds apart), then keep the
    connection for the next request (`keep`) or close it."""

    async def script(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        await read_body(head, reader)
        for index, part in enumerate(parts):
            if index and pause:
                await asyncio.sleep(pause)
            writer.write(part)
            await writer.drain()
        return keep

    return script


def _resets(*parts: bytes) -> Script:
    """Read the request's body, write `parts`, then reset the connection."""

    async def script(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        await read_body(head, reader)
        for part in parts:
            writer.write(part)
            await writer.drain()
        reset(writer)
        return False

    return script


async def _stack(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    upstream: WireUpstream,
    **overrides: float,
) -> Stack:
    return await start_wire_stack(
        aiohttp_server,
        session,
        upstream,
        {f"upstream.{name}": value for name, value in overrides.items()},
    )


async def _post(stack: Stack, path: str = "/api/events") -> tuple[aiohttp.ClientResponse, bytes]:
    return await stack.post(path, BATCH if path.endswith("/batch") else EMIT_REQUEST)


def _problem(answer: bytes) -> dict[str, str]:
    problem: dict[str, str] = orjson.loads(answer)
    return problem


BINARY = bytes(range(256)) * 4 + b"\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
CHUNKED = b"".join(
    [
        b"HTTP/1.1 201 Created\r\nContent-Type: application/octet-stream\r\n",
        b"Retry-After: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"400;ext=1\r\n",
        BINARY[:1024],
        b"\r\n%x\r\n" % (len(BINARY) - 1024),
        BINARY[1024:],
        b"\r\n0\r\nX-Trailer: t\r\n\r\n",
    ]
)


def _chunked_at_the_cap() -> bytes:
    body = b"c" * MAX_ANSWER_BYTES
    chunks = b"".join(b"1000\r\n" + body[i : i + 4096] + b"\r\n" for i in range(0, len(body), 4096))
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"


# (what the upstream answers, in parts; the status and body the client must get)
RELAYED = [
    pytest.param(
        (
            b"HTTP/1.1 201 Created\r\nContent-Type: application/octet-stream\r\n"
            b"Retry-After: 3\r\nContent-Length: %d\r\n\r\n" % len(BINARY) + BINARY,
        ),
        201,
        BINARY,
        id="content-length",
    ),
    pytest.param((CHUNKED,), 201, BINARY, id="chunked"),
    pytest.param(
        (CHUNKED[:70], CHUNKED[70:700], CHUNKED[700:-3], CHUNKED[-3:]),
        201,
        BINARY,
        id="chunked-in-pieces",
    ),
    pytest.param((_ok(b"a" * MAX_ANSWER_BYTES),), 200, b"a" * MAX_ANSWER_BYTES, id="cl-at-the-cap"),
    pytest.param((_chunked_at_the_cap(),), 200, b"c" * MAX_ANSWER_BYTES, id="chunked-at-the-cap"),
]


@pytest.mark.parametrize("path", ["/api/events", "/api/events/batch"])
@pytest.mark.parametrize(("parts", "status", "body"), RELAYED)
async def test_an_answer_is_relayed_byte_exact_and_its_connection_reused(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    path: str,
    parts: tuple[bytes, ...],
    status: int,
    body: bytes,
) -> None:
    upstream = WireUpstream(_answers(*parts, pause=0.02))
    stack = await _stack(aiohttp_server, session, upstream)
    try:
        async with asyncio.timeout(BOUND):
            for _ in range(2):
                response, answer = await _post(stack, path)
                assert response.status == status, answer[:300]
                assert answer == body
                if status == 201:
                    assert response.headers["Content-Type"] == "application/octet-stream"
                    assert response.headers["Retry-After"] == "3"
                assert "X-Trailer" not in response.headers
        assert len(upstream.heads) == 2
        assert upstream.connections == 1  # kept alive: the second event went on the same one
        assert stack.recorder.connections == 1
        assert [r.outcome for r in stack.recorder.records] == ["forwarded"] * 2
    finally:
        await upstream.close()


async def test_trailer_fields_do_not_change_the_relayed_answer(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Fields in a chunked answer's trailer are not its head: they change neither the
    content type, nor the encoding, nor Retry-After."""
    upstream = WireUpstream()
    upstream.script = _answers(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n%x\r\n%s\r\n0\r\n" % (len(OK_BODY), OK_BODY),
        b"Content-Type: text/html\r\nContent-Encoding: gzip\r\nRetry-After: 99\r\n\r\n",
    )
    stack = await _stack(aiohttp_server, session, upstream)
    try:
        async with asyncio.timeout(BOUND):
            response, answer = await _post(stack)
        assert response.status == 200, answer[:300]
        assert answer == OK_BODY
        assert response.headers["Content-Type"] == "application/json"
        assert "Content-Encoding" not in response.headers
        assert "Retry-After" not in response.headers
        assert stack.recorder.records[0].stored_event_ids == ("1",)
    finally:
        await upstream.close()


# (the answer, in parts; whether the upstream closes its side after it)
NOT_REUSED = [
    pytest.param(
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",),
        False,
        id="connection-close-upstream-stays",
    ),
    pytest.param(
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",),
        True,
        id="connection-close-upstream-closes",
    ),
    pytest.param((b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",), False, id="http-1.0-length"),
    pytest.param((b"HTTP/1.0 200 OK\r\n\r\n", b"o", b"k"), True, id="http-1.0-until-close"),
    pytest.param((b"HTTP/1.1 200 OK\r\n\r\n", b"ok"), True, id="http-1.1-until-close"),
]


@pytest.mark.parametrize(("parts", "closes"), NOT_REUSED)
async def test_an_answer_that_ends_its_connection_is_not_reused(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    parts: tuple[bytes, ...],
    closes: bool,
) -> None:
    """`Connection: close`, HTTP/1.0, an answer delimited by the close: the answer is
    relayed, the proxy closes that connection itself, and the next event opens a new one."""
    upstream = WireUpstream(_answers(*parts, keep=not closes, pause=0.05))
    stack = await _stack(aiohttp_server, session, upstream)
    try:
        async with asyncio.timeout(BOUND):
            for sent in (1, 2):
                response, answer = await _post(stack)
                assert response.status == 200, answer[:300]
                assert answer == b"ok"
                assert upstream.connections == sent
                await wait_for(lambda: upstream.open == 0, within=5)  # none left open
        assert len(upstream.heads) == 2
        assert stack.recorder.connections == 2
    finally:
        await upstream.close()


@pytest.mark.parametrize("pause", [0.0, 0.05], ids=["one-write", "apart"])
async def test_interim_answers_are_skipped(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, pause: float
) -> None:
    """100 Continue and 103 Early Hints before the final answer: the client gets the final
    one only, and the connection stays in the pool."""
    upstream = WireUpstream()
    upstream.script = _answers(
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        OK,
        pause=pause,
    )
    stack = await _stack(aiohttp_server, session, upstream)
    try:
        async with asyncio.timeout(BOUND):
            for _ in range(2):
                response, answer = await _post(stack)
                assert response.status == 200, answer[:300]
                assert answer == OK_BODY
                assert "Link" not in response.headers
        assert upstream.connections == 1
    finally:
        await upstream.close()


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Le"
BIG = MAX_ANSWER_BYTES + 1

# (the upstream's script, the problem code the client must get)
BROKEN = [
    pytest.param(
        _answers(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"),
        "bad_upstream_response",
        id="101",
    ),
    pytest.param(_answers(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), "bad_upstream_response", id="garbage"),
    pytest.param(
        _answers(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        "bad_upstream_response",
        id="tls-bytes",
    ),
    pytest.param(_answers(keep=False), "upstream_disconnected", id="closes-without-answer"),
    pytest.param(_resets(), "upstream_disconnected", id="reset-without-answer"),
    pytest.param(_resets(HEAD), "upstream_disconnected", id="reset-mid-head"),
    pytest.param(_answers(HEAD, keep=False), "upstream_disconnected", id="closes-mid-head"),
    pytest.param(
        _answers(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-this", keep=False),
        "upstream_disconnected",
        id="short-body-then-close",
    ),
    pytest.param(
        _resets(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-this"),
        "upstream_disconnected",
        id="short-body-then-reset",
    ),
    pytest.param(
        _answers(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", keep=False
        ),
        "upstream_disconnected",
        id="chunked-cut-then-close",
    ),
    pytest.param(
        _resets(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n", b'{"event_id":'),
        "upstream_disconnected",
        id="until-close-then-reset",
    ),
    pytest.param(
        _answers(b"HTTP/1.1 100 Continue\r\n\r\n", keep=False),
        "upstream_disconnected",
        id="interim-then-close",
    ),
    pytest.param(
        _answers(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG),
        "bad_upstream_response",
        id="declared-over-the-cap",
    ),
    pytest.param(
        _answers(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % BIG, b"b" * BIG),
        "bad_upstream_response",
        id="chunked-over-the-cap",
    ),
    pytest.param(
        _answers(b"HTTP/1.1 200 OK\r\n\r\n", b"b" * BIG, keep=False),
        "bad_upstream_response",
        id="until-close-over-the-cap",
    ),
    pytest.param(
        _answers(b"HTTP/1.1 200 OK\r\nX-Big: " + b"h" * MAX_ANSWER_HEAD_BYTES + b"\r\n\r\n"),
        "bad_upstream_response",
        id="head-over-the-cap",
    ),
]


@pytest.mark.parametrize(("script", "code"), BROKEN)
async def test_a_broken_answer_is_a_502_not_retried_and_the_pool_recovers(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, script: Script, code: str
) -> None:
    """The upstream saw the request once; the client gets a 502 problem (not half an
    answer); the next event goes out on a fresh connection and succeeds."""
    upstream = WireUpstream(script)
    stack = await _stack(aiohttp_server, session, upstream)
    try:
        async with asyncio.timeout(BOUND):
            response, answer = await _post(stack)
            assert response.status == 502, answer[:300]
            assert response.headers["Content-Type"] == "application/problem+json"
            assert _problem(answer)["code"] == code
            assert len(upstream.heads) == 1
            assert stack.recorder.attempts == 1
            record = stack.recorder.records[0]
            assert (record.outcome, record.error_code) == ("upstream_failed", code)
            await wait_for(lambda: upstream.open == 0, within=5)  # the proxy let it go

            upstream.script = _answers(OK)
            response, answer = await _post(stack)
            assert response.status == 200, answer[:300]
            assert answer == OK_BODY
        assert len(upstream.heads) == 2
        assert upstream.connections == 2
    finally:
        await upstream.close()


@pytest.mark.parametrize(
    ("first", "drip"),
    [
        pytest.param(b"", b"", id="silent"),
        pytest.param(b"HTTP/1.1 200 OK\r\n", b"X-A: b\r\n", id="head-a-line-at-a-time"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n", b"x", id="body-drip"),
    ],
)
async def test_no_whole_answer_in_time_is_504_at_the_timeout_and_the_connection_dropped(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, first: bytes, drip: bytes
) -> None:
    """An upstream that reads the event and then is silent, or sends its answer a few bytes
    at a time: 504 once `timeout_seconds` has passed (the deadline is for the whole answer,
    not for each read), the proxy closes that connection, and does not send again."""
    closed_after: list[float] = []

    async def stalls(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        await read_body(head, reader)
        started = time.monotonic()
        writer.write(first)
        while not (reader.at_eof() or writer.is_closing()) and time.monotonic() - started < 5:
            await asyncio.sleep(0.05)
            writer.write(drip)
        closed_after.append(time.monotonic() - started)
        return False

    upstream = WireUpstream(stalls)
    stack = await _stack(aiohttp_server, session, upstream, timeout_seconds=0.5)
    try:
        async with asyncio.timeout(BOUND):
            started = time.monotonic()
            response, answer = await _post(stack)
            took = time.monotonic() - started
            assert response.status == 504, answer[:300]
            assert _problem(answer)["code"] == "upstream_timeout"
            assert 0.45 <= took < 1.5, took
            await wait_for(lambda: bool(closed_after), within=6)
            assert closed_after[0] < 1.5  # the proxy closed it at the timeout
            assert len(upstream.heads) == 1
            upstream.script = _answers(OK)
            response, _ = await _post(stack)
            assert response.status == 200
        assert upstream.connections == 2
    finally:
        await upstream.close()


async def test_a_reused_connection_times_out_at_its_own_exchanges_deadline(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A connection keeps one deadline timer across its exchanges: an exchange that starts
    while the timer of an earlier, answered one is still pending (armed for that earlier
    deadline) still gets its whole `timeout_seconds`, then 504, on the same connection."""

    async def answers_then_stalls(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        await read_body(head, reader)
        if len(upstream.heads) == 1:
            writer.write(OK)
            return True
        await reader.read()  # silent until the proxy gives up and closes
        return False

    upstream = WireUpstream(answers_then_stalls)
    stack = await _stack(aiohttp_server, session, upstream, timeout_seconds=0.6)
    try:
        async with asyncio.timeout(BOUND):
            response, _ = await _post(stack)
            assert response.status == 200
            await asyncio.sleep(0.3)  # the first exchange's timer is still pending
            started = time.monotonic()
            response, answer = await _post(stack)
            took = time.monotonic() - started
            assert response.status == 504, answer[:300]
            assert 0.55 <= took < 1.5, took
            assert upstream.connections == 1
    finally:
        await upstream.close()


def _then(after: float, act: str, first: bytes = OK) -> Script:
    """Answer the first request with `first`, keeping the connection, then `after` seconds
    later `act` on it while it sits idle in the proxy's pool ("close", "reset", "junk");
    later requests (on any connection) get their own answer."""
    answered = 0

    async def script(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        nonlocal answered
        await read_body(head, reader)
        answered += 1
        if answered > 1:
            writer.write(_ok(b'{"event_id":"2"}'))
            await writer.drain()
            return True
        writer.write(first)
        await writer.drain()
        await asyncio.sleep(after)
        if act == "reset":
            reset(writer)
            return False
        if act == "junk":
            writer.write(_ok(b'{"event_id":"forged"}'))
            await writer.drain()
            return True  # the proxy must not keep it: its framing is lost
        return act != "close"

    return script


IDLE = [
    pytest.param(_then(0.0, "close"), id="closed-right-after-the-answer"),
    pytest.param(_then(0.05, "reset"), id="reset-while-idle"),
    pytest.param(_then(0.0, "reset"), id="reset-right-after-the-answer"),
    pytest.param(_then(0.05, "junk"), id="unasked-bytes-while-idle"),
    pytest.param(_then(0.0, "keep", OK + _ok(b'{"event_id":"forged"}')), id="a-second-answer"),
]


@pytest.mark.parametrize("script", IDLE)
async def test_an_idle_connection_the_upstream_broke_is_never_used(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, script: Script
) -> None:
    """A pooled connection the upstream closed, reset or wrote to while idle is dropped
    when that arrives: the next event goes out on a new connection, once, and gets its own
    answer (never bytes the upstream sent before it was asked)."""
    upstream = WireUpstream(script)
    stack = await _stack(aiohttp_server, session, upstream)
    try:
        async with asyncio.timeout(BOUND):
            response, answer = await _post(stack)
            assert response.status == 200, answer[:300]
            assert answer == OK_BODY
            await asyncio.sleep(0.3)  # what the upstream did has reached the proxy
            response, answer = await _post(stack)
            assert response.status == 200, answer[:300]
            assert answer == b'{"event_id":"2"}'
        assert len(upstream.heads) == 2  # each event reached the upstream exactly once
        assert upstream.connections == 2
        assert stack.recorder.attempts == 2
        assert [r.stored_event_ids for r in stack.recorder.records] == [("1",), ("2",)]
    finally:
        await upstream.close()


def _slow(seconds: float, busy: list[int], most: list[int]) -> Script:
    """Answer every request after `seconds`, keeping the connection; count the requests
    the upstream holds at once."""

    async def script(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        await read_body(head, reader)
        busy[0] += 1
        most[0] = max(most[0], busy[0])
        try:
            await asyncio.sleep(seconds)
        finally:
            busy[0] -= 1
        writer.write(OK)
        await writer.drain()
        return True

    return script


async def test_more_events_than_pool_slots_wait_and_go_out_on_the_pooled_connections(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Ten events and batches at once over a pool of two: each waits for a free
    connection and succeeds; the upstream never sees a third connection."""
    busy, most = [0], [0]
    upstream = WireUpstream(_slow(0.05, busy, most))
    stack = await _stack(aiohttp_server, session, upstream, pool_size=2, connect_timeout_seconds=2)
    try:
        async with asyncio.timeout(BOUND):
            paths = ["/api/events", "/api/events/batch"] * 5
            results = await asyncio.gather(*(_post(stack, path) for path in paths))
        assert [response.status for response, _ in results] == [200] * 10
        assert len(upstream.heads) == 10
        assert upstream.peak == 2
        assert upstream.connections == 2
        assert most[0] == 2
    finally:
        await upstream.close()


async def test_events_that_wait_past_the_connect_timeout_are_503_and_never_sent(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Six events at once over a pool of two held by a slow upstream: two are answered,
    four are shed with 503 overloaded after `connect_timeout_seconds` and never reach the
    upstream, which never sees more than two connections."""
    busy, most = [0], [0]
    upstream = WireUpstream(_slow(1.5, busy, most))
    stack = await _stack(
        aiohttp_server, session, upstream, pool_size=2, connect_timeout_seconds=0.4
    )

    async def timed() -> tuple[int, bytes, float]:
        started = time.monotonic()
        response, answer = await _post(stack)
        return response.status, answer, time.monotonic() - started

    try:
        async with asyncio.timeout(BOUND):
            results = await asyncio.gather(*(timed() for _ in range(6)))
        assert sorted(status for status, _, _ in results) == [200, 200, 503, 503, 503, 503]
        for status, answer, took in results:
            if status == 503:
                problem = _problem(answer)
                assert problem["code"] == "overloaded"
                assert problem["detail"].endswith("the event was not sent")
                assert 0.35 <= took < 1.2, took
        assert len(upstream.heads) == 2
        assert upstream.peak == 2
        assert most[0] == 2
        assert stack.recorder.attempts == 2
    finally:
        await upstream.close()


async def test_an_upstream_that_never_accepts_is_502_after_the_connect_timeout(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A listener whose accept queue is full drops the proxy's SYN: each event is answered
    502 upstream_unavailable once `connect_timeout_seconds` has passed, not retried (it
    would only double the wait), and gives its pool slot back for the next one."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # one queued connection fills it; nothing is ever accepted
        filler.connect(listener.getsockname())
        host, port = listener.getsockname()
        settings = settings_for(
            f"http://{host}:{port}",
            {
                "upstream.version": "2.19.1",
                "upstream.pool_size": 1,
                "upstream.connect_timeout_seconds": 0.3,
            },
        )
        proxy, admin, state, recorder = await start_proxy(aiohttp_server, settings)
        stack = Stack(f"http://{host}:{port}", proxy, admin, state, recorder, session)
        async with asyncio.timeout(BOUND):
            for sent in (1, 2):
                started = time.monotonic()
                response, answer = await _post(stack)
                took = time.monotonic() - started
                assert response.status == 502, answer[:300]
                problem = _problem(answer)
                assert problem["code"] == "upstream_unavailable"
                assert "within 0.3 s" in problem["detail"]
                assert 0.25 <= took < 1.3, took
                assert recorder.attempts == sent
        assert recorder.connections == 0
