"""Event endpoints end to end: client -> proxy app -> emulated NoETL upstream, all on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp.client_reqrep import ConnectionKey

from proxy.envelope import Engine, load_rules
from proxy.server.forward import never_sent
from tests.functional.server_support import (
    JSON,
    ServerFactory,
    Stack,
    closed_port_url,
    settings_for,
    start_proxy,
    start_stack,
    stored_body,
    wait_for,
)
from tests.samples import sample_bytes

EMIT_REQUEST = (
    b'{"execution_id":"478775660589088776","event_type":"step.exit","node_name":"fetch",'
    b'"node_type":"http","duration":0.42,"result":{"status":"ok"}}'
)

# (shape, path, body)
BODIES = [
    pytest.param(
        "executor_event",
        "/api/events",
        sample_bytes("executor_event__call_done_inline_result"),
        id="executor_event",
    ),
    pytest.param(
        "event_request",
        "/api/events",
        sample_bytes("python_event_request__py_worker_command_failed"),
        id="event_request",
    ),
    pytest.param("emit_request", "/api/events", EMIT_REQUEST, id="emit_request"),
    pytest.param(
        "worker_event",
        "/api/events",
        sample_bytes("worker_event__command_started"),
        id="worker_event",
    ),
    pytest.param(
        "batch",
        "/api/events/batch",
        sample_bytes("python_batch_event_request__py_worker"),
        id="batch_py",
    ),
    pytest.param(
        "batch",
        "/api/events/batch",
        sample_bytes("rust_batch_event_request__integer_execution_id"),
        id="batch_rust",
    ),
]

TARGET_OF_PROFILE = {
    "rust-1.0.3": "event_request",
    "rust-2.9.0": "event_request",
    "rust-2.19.1": "executor_event",
    "python": "event_request",
}

I64_MAX = 2**63 - 1
BIG_EXECUTOR_EVENT = (
    b'{"execution_id":9223372036854775807,"event_type":"command.completed","step":"s",'
    b'"status":"COMPLETED","created_at":"2026-06-05T12:00:00Z","context":{"n":9007199254740993},'
    b'"event_id":9223372036854775806}'
)


@pytest.mark.parametrize("profile", list(TARGET_OF_PROFILE))
@pytest.mark.parametrize(("shape", "path", "body"), BODIES)
async def test_every_shape_reaches_every_profile_in_its_target(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    profile: str,
    shape: str,
    path: str,
    body: bytes,
) -> None:
    """Each shape is accepted by each emulated release, which stores a body of its target."""
    stack = await start_stack(aiohttp_server, session, profile)
    target = TARGET_OF_PROFILE[profile]
    response, answer = await stack.post(path, body)
    assert 200 <= response.status < 300, answer
    assert response.headers["X-Envelope-Shape"] == shape
    assert response.headers["X-Envelope-Target"] == target

    stored = await stack.stored()
    assert stored, "the upstream stored nothing"
    forwarded = stored_body(stored[0])
    assert {row["path"] for row in stored} == {path}
    Engine(load_rules()).validate_target(target, forwarded, batch=shape == "batch")
    sent_id = orjson.loads(body)["execution_id"]
    forwarded_id = orjson.loads(forwarded)["execution_id"]
    assert forwarded_id == (str(sent_id) if target == "event_request" else int(sent_id))

    (record,) = stack.recorder.records
    assert record.outcome == "forwarded"
    assert record.shape == shape
    assert record.target == target
    assert record.path == path
    assert record.execution_id == str(sent_id)
    assert record.upstream_status == response.status
    assert record.stored_event_ids == tuple(str(row["event_id"]) for row in stored)
    assert record.body == body


async def test_ids_beyond_2_53_are_exact_in_both_directions(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """i64-max ids reach the upstream digit for digit, and its 63-bit answer id comes back exact."""
    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    response, answer = await stack.post("/api/events", BIG_EXECUTOR_EVENT)
    assert response.status == 200, answer
    (row,) = await stack.stored()
    forwarded = stored_body(row)
    assert b'"execution_id":9223372036854775807' in forwarded
    assert b'"event_id":9223372036854775806' in forwarded
    assert b'"context":{"n":9007199254740993}' in forwarded
    answered = orjson.loads(answer)["event_id"]
    assert answered == row["event_id"] == I64_MAX - 1
    assert stack.recorder.records[0].stored_event_ids == (str(I64_MAX - 1),)
    assert stack.recorder.records[0].request_event_id == str(I64_MAX - 1)


async def test_legacy_target_gets_big_ids_as_exact_strings(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """For a legacy upstream the same ids travel as decimal strings, still exact."""
    stack = await start_stack(aiohttp_server, session, "rust-2.9.0")
    response, answer = await stack.post("/api/events", BIG_EXECUTOR_EVENT)
    assert response.status == 200, answer
    (row,) = await stack.stored()
    forwarded = orjson.loads(stored_body(row))
    assert forwarded["execution_id"] == "9223372036854775807"
    assert forwarded["event_id"] == "9223372036854775806"
    minted = orjson.loads(answer)["event_id"]
    assert minted == row["event_id"]
    assert minted > 2**53
    assert stack.recorder.records[0].stored_event_ids == (str(minted),)


async def test_answer_bytes_and_content_type_are_relayed_unchanged(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """The client gets the upstream's body bytes and content type, not a re-serialised copy."""
    stack = await start_stack(aiohttp_server, session, "python")
    response, answer = await stack.post(
        "/api/events/batch", sample_bytes("python_batch_event_request__py_worker")
    )
    assert response.status == 202
    assert response.headers["Content-Type"] == "application/json"
    assert orjson.loads(answer)["status"] == "accepted"


async def test_upstream_refusal_is_relayed_never_turned_into_success(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A canonical body pinned at a 2.9.0 upstream is refused; its 422 text reaches the client."""
    stack = await start_stack(
        aiohttp_server, session, "rust-2.9.0", overrides={"upstream.version": "v2"}
    )
    response, answer = await stack.post("/api/events", BIG_EXECUTOR_EVENT)
    assert response.status == 422
    assert response.headers["Content-Type"].startswith("text/plain")
    assert b"execution_id" in answer
    assert response.headers["X-Envelope-Target"] == "executor_event"
    assert await stack.stored() == []
    assert stack.recorder.records[0].outcome == "upstream_rejected"
    assert stack.recorder.records[0].upstream_status == 422


async def test_upstream_503_is_relayed_with_retry_after(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A saturated upstream's 503, body and Retry-After reach the client; no proxy retry."""
    stack = await start_stack(aiohttp_server, session, "python")
    await stack.fault(status=503, retry_after=7)
    response, answer = await stack.post("/api/events", EMIT_REQUEST)
    assert response.status == 503
    assert response.headers["Retry-After"] == "7"
    assert orjson.loads(answer) == {"detail": {"code": "pool_saturated"}}
    assert await stack.upstream_requests() == 1
    assert stack.recorder.records[0].outcome == "upstream_failed"


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


async def test_over_the_inflight_limit_is_503_overloaded(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """With one slot taken by a slow request, the next gets 503 overloaded with Retry-After."""
    import asyncio

    stack = await start_stack(
        aiohttp_server, session, "rust-2.19.1", overrides={"limits.max_inflight": 1}
    )
    await stack.fault(delay_seconds=0.5)
    slow = asyncio.create_task(stack.post("/api/events", EMIT_REQUEST))
    await wait_for(lambda: stack.state.inflight == 1)
    assert stack.recorder.inflight is not None
    assert stack.recorder.inflight() == 1
    response, answer = await stack.post("/api/events", EMIT_REQUEST)
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert orjson.loads(answer)["code"] == "overloaded"
    first, _ = await slow
    assert first.status == 200
    assert await stack.upstream_requests() == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param(b'{"execution_id": 1,', 400, "invalid_json", id="truncated"),
        pytest.param(b"[]", 422, "not_an_object", id="array"),
        pytest.param(b'{"execution_id": "1"}', 422, "unknown_shape", id="near_miss"),
        pytest.param(
            sample_bytes("edge__both_payload_and_context"), 422, "conflicting_fields", id="both"
        ),
        pytest.param(
            sample_bytes("edge__float_execution_id_rejected"), 422, "invalid_id", id="float_id"
        ),
    ],
)
async def test_engine_refusals_are_problem_json_and_never_forwarded(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    body: bytes,
    status: int,
    code: str,
) -> None:
    """An engine refusal is problem+json with its status and code; the upstream sees nothing."""
    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    response, answer = await stack.post("/api/events", body)
    assert response.status == status
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = orjson.loads(answer)
    assert problem["code"] == code
    assert problem["status"] == status
    assert await stack.upstream_requests() == 0
    assert stack.recorder.records[0].outcome == "rejected"
    assert stack.recorder.records[0].error_code == code


async def test_batch_over_the_item_cap_is_413(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A batch with more items than `limits.batch_max_items` is refused whole."""
    stack = await start_stack(
        aiohttp_server, session, "rust-2.19.1", overrides={"limits.batch_max_items": 1}
    )
    response, answer = await stack.post(
        "/api/events/batch", sample_bytes("python_batch_event_request__py_worker")
    )
    assert response.status == 413
    assert orjson.loads(answer)["code"] == "batch_too_large"
    assert await stack.upstream_requests() == 0


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
    response = await _raw(
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
    response = await _raw(
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
    response = await _raw(
        stack,
        b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
    )
    assert response.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in response


async def test_client_gone_mid_body_forwards_nothing(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A client that disconnects before its body is complete causes no upstream call."""
    import asyncio

    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    host, port = stack.proxy.removeprefix("http://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"execution_id":'
    )
    await writer.drain()
    await asyncio.sleep(0.1)
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
    response = await _raw(
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
    response = await _raw(
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
    import asyncio

    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    await stack.fault(delay_seconds=0.5)
    with pytest.raises(TimeoutError):
        async with session.post(
            stack.proxy + "/api/events",
            data=EMIT_REQUEST,
            headers=JSON,
            timeout=aiohttp.ClientTimeout(total=0.1),
        ):
            pass
    for _ in range(100):
        if stack.recorder.records:
            break
        await asyncio.sleep(0.02)
    assert [r.outcome for r in stack.recorder.records] == ["forwarded"]
    assert len(await stack.stored()) == 1
    assert stack.state.inflight == 0


async def test_non_json_success_is_relayed_without_ids(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A 2xx that is not JSON is relayed as is; the record simply has no stored ids."""
    import asyncio

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nstored"
        )
        await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    try:
        settings = settings_for(f"http://127.0.0.1:{port}", {"upstream.version": "v1"})
        proxy, _, _, recorder = await start_proxy(aiohttp_server, settings)
        async with session.post(proxy + "/api/events", data=EMIT_REQUEST, headers=JSON) as resp:
            assert resp.status == 201
            assert resp.headers["Content-Type"] == "text/plain"
            assert await resp.read() == b"stored"
        assert recorder.records[0].outcome == "forwarded"
        assert recorder.records[0].stored_event_ids == ()
    finally:
        upstream.close()
        await upstream.wait_closed()


async def test_malformed_upstream_answer_is_502(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """An answer that is not valid HTTP (a header with a bare CR) becomes 502, never a 500."""
    import asyncio

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


async def test_record_carries_client_hints_and_ids(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """The EventRecord names the client header, user agent, peer, worker and minted event id."""
    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    response, _ = await stack.post(
        "/api/events",
        sample_bytes("worker_event__command_started"),
        headers={**JSON, "X-NoETL-Client": "billing-worker", "User-Agent": "noetl-worker/2.1"},
    )
    assert response.status == 200
    (record,) = stack.recorder.records
    assert record.hints.header == "billing-worker"
    assert record.hints.user_agent == "noetl-worker/2.1"
    assert record.hints.peer == "127.0.0.1"
    assert record.worker_id == "worker-rust-pool-0"
    assert record.request_event_id is not None
    assert int(record.request_event_id) > 2**53
    assert record.upstream_version == "2.19.1"
    assert record.upstream_seconds is not None
    assert record.upstream_seconds >= 0


async def _raw(stack: Stack, request: bytes) -> bytes:
    """Send raw bytes to the proxy and return what it answers before closing or 5 s."""
    import asyncio

    host, port = stack.proxy.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    try:
        async with asyncio.timeout(5):
            data = await reader.read(65536)
    finally:
        writer.close()
    return data
