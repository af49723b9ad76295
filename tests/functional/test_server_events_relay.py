"""Event endpoints end to end, client -> proxy app -> emulated NoETL upstream on loopback:
every shape reaches every release in its target, ids stay exact, the upstream's answer is
relayed unchanged, and engine refusals never leave the proxy."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from proxy.envelope import Engine, load_rules
from tests.functional.server_support import (
    EMIT_REQUEST,
    JSON,
    ServerFactory,
    settings_for,
    start_proxy,
    start_stack,
    stored_body,
)
from tests.loopback import WireUpstream, read_body
from tests.samples import sample_bytes

RULES = load_rules()  # read once, before any event loop runs

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
    Engine(RULES).validate_target(target, forwarded, batch=shape == "batch")
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
    assert record.body == b""  # the body is kept for the shadow check only


@pytest.mark.parametrize("shadow", [True, False])
async def test_record_carries_the_body_only_for_the_shadow_check(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, shadow: bool
) -> None:
    """With `shadow: true` the record holds the body as received; otherwise no copy is kept."""
    stack = await start_stack(aiohttp_server, session, overrides={"shadow": shadow})
    response, _ = await stack.post("/api/events", EMIT_REQUEST)
    assert response.status == 200
    (record,) = stack.recorder.records
    assert record.body == (EMIT_REQUEST if shadow else b"")


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


async def test_non_json_success_is_relayed_without_ids(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A 2xx that is not JSON is relayed as is; the record simply has no stored ids."""

    async def answer(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_body(head, reader)
        writer.write(
            b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nstored"
        )
        await writer.drain()

    upstream = WireUpstream(answer)
    try:
        settings = settings_for(await upstream.start(), {"upstream.version": "v1"})
        proxy, _, _, recorder = await start_proxy(aiohttp_server, settings)
        async with session.post(proxy + "/api/events", data=EMIT_REQUEST, headers=JSON) as resp:
            assert resp.status == 201
            assert resp.headers["Content-Type"] == "text/plain"
            assert await resp.read() == b"stored"
        assert recorder.records[0].outcome == "forwarded"
        assert recorder.records[0].stored_event_ids == ()
    finally:
        await upstream.close()


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


async def test_engine_refusal_problem_names_the_batch_item(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A refused batch item is answered with the engine's code, title and the item's index."""
    stack = await start_stack(aiohttp_server, session, "rust-2.19.1")
    batch = orjson.loads(sample_bytes("python_batch_event_request__py_worker"))
    batch["events"][1]["context"] = {"also": "payload"}
    response, answer = await stack.post("/api/events/batch", orjson.dumps(batch))
    assert response.status == 422
    assert response.headers["Content-Type"] == "application/problem+json"
    assert orjson.loads(answer) == {
        "type": "urn:envelope-proxy:error:invalid_batch_item",
        "title": "A batch item is invalid",
        "status": 422,
        "detail": "events[1]: payload and context are both present; they name the same field"
        " (context)",
        "code": "invalid_batch_item",
        "index": 1,
    }
    assert await stack.upstream_requests() == 0
