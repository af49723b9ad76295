"""Event endpoints when the upstream fails: what the client is answered, what is recorded,
and that only a request which provably never left is retried."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
import orjson
from aiohttp.client_reqrep import ConnectionKey

from proxy.server.forward import never_sent
from tests.functional.server_support import (
    EMIT_REQUEST,
    JSON,
    Recorder,
    ServerFactory,
    closed_port_url,
    settings_for,
    start_proxy,
    start_stack,
)


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

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Bad: a\rb\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    try:
        settings = settings_for(f"http://127.0.0.1:{port}", {"upstream.version": "v1"})
        proxy, _, _, _ = await start_proxy(aiohttp_server, settings)
        async with session.post(proxy + "/api/events", data=EMIT_REQUEST, headers=JSON) as resp:
            assert resp.status == 502
            assert orjson.loads(await resp.read())["code"] == "bad_upstream_response"
    finally:
        upstream.close()
        await upstream.wait_closed()


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
    """A Recorder whose client trace hook raises ValueError, as the client library does for a
    value it will not put on the wire."""

    def client_trace_configs(self) -> Sequence[aiohttp.TraceConfig]:
        async def refuse(*_: object) -> None:
            raise ValueError("a value the client library refuses")

        config = aiohttp.TraceConfig()
        config.on_request_start.append(refuse)
        return [config]


async def test_value_error_while_calling_the_upstream_is_502_never_500(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """An unexpected ValueError from the upstream request answers a 502 problem (events and
    pass-through) and records the event as upstream_failed."""
    stack = await start_stack(aiohttp_server, session, recorder=RefusingRecorder())
    response, answer = await stack.post("/api/events", EMIT_REQUEST)
    assert response.status == 502
    assert response.headers["Content-Type"] == "application/problem+json"
    assert orjson.loads(answer)["code"] == "upstream_request_failed"
    (record,) = stack.recorder.records
    assert (record.outcome, record.error_code) == ("upstream_failed", "upstream_request_failed")

    async with session.get(stack.proxy + "/api/health") as passthrough:
        assert passthrough.status == 502
        assert orjson.loads(await passthrough.read())["code"] == "upstream_request_failed"
    assert await stack.upstream_requests() == 0
