"""Event endpoints when the upstream fails: what the client is answered, what is recorded,
and that only a request which provably never left is retried."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
import orjson
import pytest
from aiohttp.client_reqrep import ConnectionKey

from proxy.emulator import create_emulator_app
from proxy.server.forward import UpstreamError, never_sent
from proxy.server.upstream import request_bytes
from tests.functional.server_support import (
    EMIT_REQUEST,
    JSON,
    Recorder,
    ServerFactory,
    closed_port_url,
    settings_for,
    start_proxy,
    start_stack,
    wait_for,
)
from tests.loopback import WireUpstream


async def test_unreachable_upstream_is_502_after_one_retry(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Connection refused never reached the upstream: one retry, then 502 upstream_unavailable."""
    settings = settings_for(closed_port_url(), overrides={"upstream.version": "v2"})
    proxy, _, _, recorder = await start_proxy(aiohttp_server, settings)
    async with session.post(proxy + "/api/events", data=EMIT_REQUEST, headers=JSON) as response:
        assert response.status == 502
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.headers["X-Envelope-Target"] == "executor_event"
        assert orjson.loads(await response.read())["code"] == "upstream_unavailable"
    assert recorder.attempts == 2
    assert recorder.records[0].outcome == "upstream_failed"
    assert recorder.records[0].error_code == "upstream_unavailable"


async def test_timeout_after_the_request_was_written_is_504_without_retry(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """An upstream that read the request but never answers is called once; the client gets 504."""
    stack = await start_stack(
        aiohttp_server, session, "rust-2.19.1", overrides={"upstream.timeout_seconds": 0.5}
    )
    await stack.fault(hang=True)
    response, answer = await stack.post("/api/events", EMIT_REQUEST)
    assert response.status == 504
    assert orjson.loads(answer)["code"] == "upstream_timeout"
    assert await stack.upstream_requests() == 1
    assert stack.recorder.attempts == 1


async def test_connection_dropped_after_read_is_502_without_retry(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """The upstream may have stored an event it read before dropping: no second call, 502."""
    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    await stack.fault(drop_after_read=1.0, store_before_drop=True)
    response, answer = await stack.post("/api/events", EMIT_REQUEST)
    assert response.status == 502
    assert orjson.loads(answer)["code"] == "upstream_disconnected"
    assert await stack.upstream_requests() == 1
    assert len(await stack.stored()) == 1
    assert stack.recorder.attempts == 1


async def test_malformed_upstream_answer_is_502(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """An answer that is not valid HTTP (a header with a bare CR) becomes 502, never a 500."""

    async def answer(_: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nX-Bad: a\rb\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()

    upstream = WireUpstream(answer)
    try:
        settings = settings_for(await upstream.start(), {"upstream.version": "v1"})
        proxy, _, _, _ = await start_proxy(aiohttp_server, settings)
        async with session.post(proxy + "/api/events", data=EMIT_REQUEST, headers=JSON) as resp:
            assert resp.status == 502
            assert orjson.loads(await resp.read())["code"] == "bad_upstream_response"
    finally:
        await upstream.close()


def test_only_requests_that_never_left_count_as_retryable() -> None:
    """Refused connections and writes refused by a closing pooled socket are retryable;
    a reset or timeout after writing is not."""
    key = ConnectionKey("127.0.0.1", 1, False, True, None, None, None, None)
    refused = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))
    assert never_sent(refused)
    unwritten = aiohttp.ClientOSError(None, "Can not write request body")
    unwritten.__cause__ = aiohttp.ClientConnectionResetError("Cannot write to closing transport")
    assert never_sent(unwritten)
    lost = aiohttp.ClientOSError(None, "Can not write request body")
    lost.__cause__ = aiohttp.ClientConnectionResetError("Connection lost")
    assert not never_sent(lost)
    assert not never_sent(aiohttp.ServerDisconnectedError())
    assert not never_sent(aiohttp.SocketTimeoutError("read"))
    assert not never_sent(aiohttp.ConnectionTimeoutError("connect"))


class RefusingRecorder(Recorder):
    """A Recorder whose pass-through client trace hook raises ValueError, as the client
    library does for a value it will not put on the wire."""

    def client_trace_configs(self) -> Sequence[aiohttp.TraceConfig]:
        async def refuse(*_: object) -> None:
            raise ValueError("a value the client library refuses")

        config = aiohttp.TraceConfig()
        config.on_request_start.append(refuse)
        return [config]


async def test_value_error_while_calling_the_upstream_is_502_never_500(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """An unexpected ValueError from the pass-through client answers a 502 problem."""
    stack = await start_stack(aiohttp_server, session, recorder=RefusingRecorder())
    async with session.get(stack.proxy + "/api/health") as passthrough:
        assert passthrough.status == 502
        assert orjson.loads(await passthrough.read())["code"] == "upstream_request_failed"
    assert await stack.upstream_requests() == 0


def test_a_header_the_wire_cannot_carry_is_refused_before_sending() -> None:
    """The event client refuses to put a line break into a request head: nothing is sent,
    and the client is told so (upstream_request_failed)."""
    for name, value in ((b"X-Team", b"a\r\nX-Injected: 1"), (b"X-Bad\n", b"v")):
        with pytest.raises(UpstreamError) as refused:
            request_bytes(b"POST", b"/api/events", b"up", [(name, value)], b"{}")
        assert refused.value.problem.code == "upstream_request_failed"
        assert "not sent" in refused.value.detail
    head = request_bytes(b"POST", b"/api/events", b"up:1", [(b"X-Team", b"t")], b"{}")
    assert head == (
        b"POST /api/events HTTP/1.1\r\nHost: up:1\r\nX-Team: t\r\nContent-Length: 2\r\n\r\n{}"
    )


def _early_413_upstream(closed: list[bool]) -> WireUpstream:
    """An upstream that answers 413 after the request head, before reading any body byte.

    Like a real server, it then stops writing and discards what still arrives (a lingering
    close), so the answer is not lost to a reset. `closed` gets an entry once the proxy
    has closed its side of the connection.
    """

    async def answer(_: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b'{"detail":"payload too large"}'
        writer.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.write_eof()
        while await reader.read(1 << 16):
            pass
        closed.append(True)

    return WireUpstream(answer)


async def test_upstream_answering_before_reading_the_body_is_relayed(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """An early 413 from the upstream reaches the client, for an event and a pass-through
    body alike, while the proxy is still writing several megabytes; nothing hangs."""
    closed: list[bool] = []
    upstream = _early_413_upstream(closed)
    big = b"x" * (8 << 20)
    event = EMIT_REQUEST[:-1] + b',"context":{"blob":"' + big + b'"}}'
    try:
        settings = settings_for(
            await upstream.start(),
            {"upstream.version": "v1", "limits.max_body_bytes": 16 << 20},
        )
        proxy, _, _, recorder = await start_proxy(aiohttp_server, settings)
        async with asyncio.timeout(20):
            for path, body in (("/api/events", event), ("/api/other", big)):
                async with session.post(proxy + path, data=body, headers=JSON) as response:
                    assert response.status == 413, path
                    assert await response.read() == b'{"detail":"payload too large"}'
        assert [head.split(b" ", 2)[1] for head in upstream.heads] == [
            b"/api/events",
            b"/api/other",
        ]
        assert recorder.records[0].outcome == "upstream_rejected"
        assert recorder.records[0].upstream_status == 413
        await wait_for(lambda: len(closed) == 2)  # no upstream connection is left behind
    finally:
        await upstream.close()


async def test_upstream_closing_idle_pooled_connections_loses_nothing(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """An upstream that closes keep-alive connections left idle (a short keep-alive timeout,
    a restart of its load balancer) costs the next event nothing: it goes out on a fresh
    connection, is stored once, and the pool does not hand out the dead one."""
    app = create_emulator_app("rust-2.19.1", fast=True)
    upstream = await aiohttp_server(app, keepalive_timeout=0.2)
    settings = settings_for(str(upstream.make_url("")).rstrip("/"), {"upstream.version": "v2"})
    proxy, _, _, recorder = await start_proxy(aiohttp_server, settings)
    for _ in range(3):
        async with session.post(proxy + "/api/events", data=EMIT_REQUEST, headers=JSON) as resp:
            assert resp.status == 200, await resp.text()
        await asyncio.sleep(0.5)  # the upstream closes the pooled connection meanwhile
    assert recorder.attempts == 3
    assert recorder.connections == 3  # each event found its pooled connection closed
    async with session.get(str(upstream.make_url("/_emulator/events"))) as response:
        assert len(orjson.loads(await response.read())) == 3
