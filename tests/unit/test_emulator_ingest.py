"""The handlers behind the body layer: ids, claims, dedup, idempotency, database refusals."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from proxy.emulator import ingest_python, ingest_rust
from proxy.emulator.profiles import PROFILES, Decoded, Route, decode_request
from proxy.emulator.python_models import BatchEventRequest, EventRequest
from proxy.emulator.state import DbSnowflakeMinter, IngestState, Reply
from proxy.envelope.ids import SNOWFLAKE_EPOCH_MS
from tests.samples import sample_bytes


def rust(state: IngestState, content: dict[str, Any], profile: str = "rust-2.19.1") -> Reply:
    body = json.dumps(content).encode()
    route: Route = "batch" if "events" in content else "event"
    decoded = decode_request(PROFILES[profile], route, "application/json", body)
    assert isinstance(decoded, Decoded), decoded
    assert decoded.rust is not None
    if route == "batch":
        return ingest_rust.handle_batch(state, decoded.rust)
    return ingest_rust.handle_event(state, decoded.rust)


def python(state: IngestState, content: dict[str, Any], key: str | None = None) -> Reply:
    body = json.dumps(content).encode()
    route: Route = "batch" if "events" in content else "event"
    decoded = decode_request(PROFILES["python"], route, "application/json", body)
    assert isinstance(decoded, Decoded), decoded
    if isinstance(decoded.python, BatchEventRequest):
        return ingest_python.handle_batch(state, decoded.python, key)
    assert isinstance(decoded.python, EventRequest)
    return ingest_python.handle_event(state, decoded.python)


def answer(reply: Reply) -> Any:
    assert reply.content_type == "application/json"
    return json.loads(reply.body)


def sample_json(name: str) -> Any:
    return json.loads(sample_bytes(name))


def claim(worker: str | None, command: str = "42:fetch:7", **extra: Any) -> dict[str, Any]:
    content: dict[str, Any] = {
        "execution_id": "42",
        "step": "fetch",
        "event_type": "command.claimed",
        "payload": {"command_id": command},
        **extra,
    }
    if worker is not None:
        content["worker_id"] = worker
    return content


EVENT = {"execution_id": "42", "step": "s", "event_type": "step.enter"}


def test_rust_handler_errors_match_the_samples() -> None:
    """Ids the handler cannot parse as i64 get the JSON bodies of the shared samples."""
    state = IngestState()
    bad_execution = rust(state, {**EVENT, "execution_id": "x"})
    assert bad_execution.status == 422
    assert answer(bad_execution) == sample_json("rust_error__validation_invalid_execution_id")
    bad_event = rust(state, {**EVENT, "event_id": "abc"})
    assert bad_event.status == 422
    assert answer(bad_event) == sample_json("rust_error__validation_invalid_event_id")


def test_rust_parses_ids_like_rust() -> None:
    """`+5` and `-5` parse as i64 in Rust; spaces and values beyond i64 do not."""
    state = IngestState()
    assert rust(state, {**EVENT, "execution_id": "+5"}).status == 200
    assert answer(rust(state, {**EVENT, "event_id": "-5"}))["event_id"] == -5
    assert rust(state, {**EVENT, "execution_id": " 5"}).status == 422
    assert rust(state, {**EVENT, "execution_id": "9223372036854775808"}).status == 422


def test_rust_returns_the_given_event_id_or_an_app_snowflake() -> None:
    """A given event id is answered as is; otherwise a fresh app-layout snowflake."""
    state = IngestState()
    given = rust(state, {**EVENT, "event_id": 478775660589088777})
    assert answer(given) == {
        "status": "ok",
        "event_id": 478775660589088777,
        "commands_generated": 0,
    }
    minted = answer(rust(state, EVENT))["event_id"]
    assert (minted >> 12) & 0x3FF == 1023  # the emulator's machine id
    assert abs((minted >> 22) + SNOWFLAKE_EPOCH_MS - time.time() * 1000) < 60_000


def test_rust_claims() -> None:
    """Another worker's claim is 409; the same worker's repeat is the idempotent `0`."""
    state = IngestState()
    first = rust(state, claim("worker-a"))
    assert first.status == 200
    assert answer(first)["event_id"] > 0
    conflict = rust(state, claim("worker-b"))
    assert conflict.status == 409
    assert answer(conflict) == sample_json("rust_error__conflict_already_claimed")
    again = rust(state, claim("worker-a"))
    assert answer(again) == sample_json("rust_event_response__claim_idempotent")
    assert again.duplicate
    assert again.event_ids == ()
    # No worker on either side: the server cannot compare, it stores another claim.
    assert answer(rust(state, claim(None)))["event_id"] > 0
    # Another command, or the command id in meta, is its own claim.
    assert rust(state, claim("worker-b", command="42:fetch:8")).status == 200
    meta_claim = claim("worker-a", meta={"command_id": "m-1"})
    meta_claim["payload"] = {}
    assert rust(state, meta_claim).status == 200
    assert rust(state, {**meta_claim, "worker_id": "worker-c"}).status == 409


def test_rust_store_down_and_postgres_refusals() -> None:
    """Without the database events are 500 JSON; a NUL Postgres refuses is 500 as well."""
    state = IngestState(store_down=True)
    down = rust(state, EVENT)
    assert (down.status, answer(down)["status"]) == (500, 500)
    assert answer(down)["error"].startswith("Database error: ")
    # Validation still comes first.
    assert rust(state, {**EVENT, "event_id": "abc"}).status == 422
    state.store_down = False
    nul = rust(state, {**EVENT, "payload": {"text": "a\u0000b"}})
    assert answer(nul)["error"] == (
        "Database error: error returned from database: unsupported Unicode escape sequence"
    )
    assert (
        rust(state, {**EVENT, "step": "__orchestrate__", "payload": {"x": "\u0000"}}).status == 200
    )


def test_rust_batches() -> None:
    """Empty batches are ok at once; others mint one id per item after the id check."""
    state = IngestState()
    empty = rust(state, {"execution_id": "not-a-number", "events": []})
    assert answer(empty) == {"status": "ok", "event_ids": [], "commands_generated": 0}
    bad = rust(state, {"execution_id": "x", "events": [{"step": "s", "name": "e"}]})
    assert bad.status == 422
    two = answer(rust(state, {"execution_id": 7, "events": [{"step": "s", "name": "e"}] * 2}))
    assert len(set(two["event_ids"])) == 2


def test_db_snowflake_layout() -> None:
    """Python ids use the database layout: ms << 23 | shard << 18 | sequence."""
    minter = DbSnowflakeMinter(shard=3)
    first, second = minter.next(), minter.next()
    assert second > first
    assert (first >> 18) & 0x1F == 3
    assert abs((first >> 23) + SNOWFLAKE_EPOCH_MS - time.time() * 1000) < 60_000


def test_python_payload_rules_are_500() -> None:
    """The reference-only payload rules fail inside the handler, hence 500 `detail`."""
    state = IngestState()
    content = {**EVENT, "payload": {"result": {"status": "ok", "data": 1, "id": 2}}}
    reply = python(state, content)
    assert reply.status == 500
    assert answer(reply) == sample_json("python_error__500_strict_payload")
    legacy = python(state, {**EVENT, "payload": {"result": {"context": {"command_x": 1}}}})
    assert answer(legacy) == {"detail": "payload.result.context includes legacy command_* keys"}


def test_python_execution_id_is_converted_in_the_handler() -> None:
    """Any execution id validates as a string; `int()` fails later with a 500."""
    state = IngestState()
    reply = python(state, {**EVENT, "execution_id": "exec_test"})
    assert (reply.status, answer(reply)) == (
        500,
        {"detail": "invalid literal for int() with base 10: 'exec_test'"},
    )
    assert python(state, {**EVENT, "execution_id": 2**63}).status == 500
    assert python(state, {**EVENT, "execution_id": 2**63 - 1}).status == 200


def test_python_claims() -> None:
    """Python claims need a numeric command id; another worker gets the sample's 409."""
    state = IngestState()
    first = python(state, claim("worker-cpu-01", command="478775660589088790"))
    assert first.status == 200
    assert answer(first)["event_id"] > 2**53
    conflict = python(state, claim("worker-cpu-02", command="478775660589088790"))
    assert conflict.status == 409
    assert answer(conflict) == {"detail": "Command already claimed by worker-cpu-01"}
    again = python(state, claim("worker-cpu-01", command="478775660589088790"))
    assert answer(again)["event_id"] == 0
    assert again.duplicate
    # A non-numeric command id is no claim: every such event is stored.
    assert answer(python(state, claim("a", command="x:y:1")))["event_id"] > 0
    assert answer(python(state, claim("b", command="x:y:1")))["event_id"] > 0


@pytest.mark.parametrize("event", sorted(ingest_python.DEDUPE_EVENT_TYPES))
def test_python_dedup(event: str) -> None:
    """A repeated lifecycle event for the same command answers the stored id."""
    state = IngestState()
    content = {**EVENT, "event_type": event, "payload": {"command_id": "77"}}
    first = python(state, content)
    again = python(state, content)
    assert answer(again)["event_id"] == answer(first)["event_id"]
    assert again.duplicate
    assert not first.duplicate
    other_step = python(state, {**content, "step": "other"})
    assert answer(other_step)["event_id"] != answer(first)["event_id"]


def test_python_store_down_is_503_with_retry_after() -> None:
    """Without the database Python answers 503 `db_unavailable` with `Retry-After`."""
    state = IngestState(store_down=True)
    for content in (EVENT, {"execution_id": "1", "events": []}):
        reply = python(state, content)
        assert reply.status == 503
        assert answer(reply) == {"detail": {"code": "db_unavailable"}}
        assert dict(reply.headers)["Retry-After"] == "1"


def test_python_batch_idempotency() -> None:
    """A replayed Idempotency-Key returns the first answer, marked as a duplicate."""
    state = IngestState()
    batch = sample_json("python_batch_event_request__py_worker")
    first = python(state, batch, key="k-1")
    assert first.status == 202
    body = answer(first)
    assert body["status"] == "accepted"
    assert body["duplicate"] is False
    assert body["idempotency_key"] == "k-1"
    assert len(body["event_ids"]) == 2
    assert body["request_id"].isdigit()
    replay = answer(python(state, batch, key="k-1"))
    assert replay == {**body, "duplicate": True}
    fresh = answer(python(state, batch, key=None))
    assert fresh["request_id"] != body["request_id"]
    assert fresh["idempotency_key"] is None


def test_python_batch_failures_are_enqueue_errors() -> None:
    """A payload rule or an unparsable id fails the whole batch with a 500 `enqueue_error`."""
    state = IngestState()
    bad_item = {
        "execution_id": "1",
        "events": [{"step": "s", "name": "e", "payload": {"_internal_data": 1}}],
    }
    reply = python(state, bad_item)
    assert reply.status == 500
    assert answer(reply) == {
        "detail": {
            "code": "enqueue_error",
            "message": "payload includes forbidden inline output keys: _internal_data",
        }
    }
    bad_id = answer(python(state, {"execution_id": "abc", "events": []}))
    assert bad_id["detail"]["message"] == "invalid literal for int() with base 10: 'abc'"


def test_idempotency_key_headers() -> None:
    """`Idempotency-Key` wins over `X-Idempotency-Key`; empty values count as absent."""
    assert ingest_python.idempotency_key({"X-Idempotency-Key": "x"}) == "x"
    assert ingest_python.idempotency_key({"Idempotency-Key": "a", "X-Idempotency-Key": "x"}) == "a"
    assert ingest_python.idempotency_key({"Idempotency-Key": ""}) is None
