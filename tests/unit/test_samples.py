"""Every shared request sample: its shape (or refusal) and its conversion to both targets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.envelope import TARGETS, Engine, EnvelopeError, load_rules
from tests.samples import SAMPLES_DIR, sample_bytes

# (sample, expected shape, expected error code when the engine refuses it)
SAMPLES: list[tuple[str, str | None, str | None]] = [
    ("edge__both_payload_and_context", "event_request", "conflicting_fields"),
    ("edge__float_execution_id_rejected", "event_request", "invalid_id"),
    ("edge__rust_event_request_u64_overflow_id", "event_request", "invalid_id"),
    ("edge__status_mixed_error_completed_name", "event_request", None),
    ("edge__unicode_step_and_payload", "event_request", None),
    ("edge__unknown_extra_fields", "event_request", None),
    ("executor_event__call_done_container_poll", "executor_event", None),
    ("executor_event__call_done_inline_result", "executor_event", None),
    ("executor_event__call_done_reference_result", "executor_event", None),
    ("executor_event__command_completed_full", "executor_event", None),
    ("executor_event__command_completed_pending_callback", "executor_event", None),
    ("executor_event__command_completed_tool_status_success", "executor_event", None),
    ("executor_event__command_started_worker_test", "executor_event", None),
    ("executor_event__payload_alias", "executor_event", None),
    ("executor_event__step_exit_case_status", "executor_event", None),
    ("executor_event__subscription_rate_limited", "executor_event", None),
    ("executor_event__v0_1_string_execution_id_historic", "event_request", "invalid_id"),
    ("python_batch_event_request__py_worker", "batch", None),
    ("python_event_emit_request__full_executor_shape", "event_request", None),
    ("python_event_emit_request__legacy_worker_shape", "event_request", None),
    ("python_event_emit_request__minimal", None, "unknown_shape"),
    ("python_event_request__executor_envelope_int_id", "event_request", None),
    ("python_event_request__legacy_worker", "event_request", None),
    ("python_event_request__py_worker_call_done_with_correlation", "event_request", None),
    ("python_event_request__py_worker_command_failed", "event_request", None),
    ("rust_batch_event_item__legacy_name", None, "unknown_shape"),
    ("rust_batch_event_request__integer_execution_id", "batch", None),
    ("rust_event_request__INVALID_array_execution_id", "event_request", "invalid_id"),
    ("rust_event_request__INVALID_object_execution_id", "event_request", "invalid_id"),
    ("rust_event_request__context_alias", "event_request", None),
    ("rust_event_request__event_id_null", "event_request", None),
    ("rust_event_request__executor_shape_string_ids", "event_request", None),
    ("rust_event_request__integer_event_id", "event_request", None),
    ("rust_event_request__integer_execution_id", "event_request", None),
    ("rust_event_request__legacy_name_alias", "event_request", None),
    ("rust_event_request__minimal_defaults", "event_request", None),
    ("rust_event_request__null_payload", "event_request", None),
    ("rust_event_request__result_kind_ref", "event_request", None),
    ("rust_event_request__result_kind_refs", "event_request", None),
    ("rust_event_request__serialized_from_executor_event", "event_request", None),
    ("rust_event_request__string_execution_id", "event_request", None),
    ("rust_event_request__v1_legacy_full", "event_request", None),
    ("worker_event__call_done", "worker_event", None),
    ("worker_event__call_error", "worker_event", None),
    ("worker_event__command_claimed", "worker_event", None),
    ("worker_event__command_completed", "worker_event", None),
    ("worker_event__command_failed", "worker_event", None),
    ("worker_event__command_started", "worker_event", None),
    ("worker_event__command_started_test", "worker_event", None),
]

ENGINE = Engine(load_rules())
_NOT_REQUESTS = ("_response__", "_error__", "_health__")


def _loads(body: bytes) -> Any:
    return json.loads(body)  # the stdlib keeps big integers exact


def test_table_covers_every_request_sample() -> None:
    """The table names every request body in the shared samples, so none goes untested."""
    on_disk = {
        path.stem
        for path in SAMPLES_DIR.glob("*.json")
        if not any(marker in path.name for marker in _NOT_REQUESTS)
    }
    assert on_disk == {name for name, _, _ in SAMPLES}


@pytest.mark.parametrize(("name", "shape", "error"), [pytest.param(*s, id=s[0]) for s in SAMPLES])
def test_sample_detects_and_converts(name: str, shape: str | None, error: str | None) -> None:
    """A sample is detected as its shape and converts to both targets, or is refused by code."""
    body = sample_bytes(name)
    if shape is None:
        with pytest.raises(EnvelopeError) as refused:
            ENGINE.detect(body)
        assert refused.value.code == error
        return
    assert ENGINE.detect(body).shape == shape
    for target in TARGETS:
        if error is not None:
            with pytest.raises(EnvelopeError) as refused:
                ENGINE.convert(body, target)
            assert refused.value.code == error
            continue
        conversion = ENGINE.convert(body, target)
        is_batch = shape == "batch"
        ENGINE.validate_target(target, conversion.body, batch=is_batch)
        _check_values_kept(_loads(body), _loads(conversion.body), target, is_batch)


def _check_values_kept(
    source: dict[str, Any], out: dict[str, Any], target: str, batch: bool
) -> None:
    """Ids stay exact, and values the target does not rename arrive unchanged."""
    execution_id = source["execution_id"]
    if target == "executor_event":
        assert out["execution_id"] == int(execution_id)
    else:
        assert out["execution_id"] == str(execution_id)
    if batch:
        assert len(out["events"]) == len(source["events"])
        return
    context_key = "context" if target == "executor_event" else "payload"
    for alias in ("context", "payload"):
        if alias in source and "step" in source:
            if source[alias] is None and target == "event_request":
                assert context_key not in out  # a null payload is left to the server's default
            else:
                assert out[context_key] == source[alias]
    if source.get("event_id") is not None:
        expected = (
            int(source["event_id"]) if target == "executor_event" else str(source["event_id"])
        )
        assert out["event_id"] == expected
    renamed = {
        "execution_id",
        "event_type",
        "name",
        "step",
        "node_name",
        "status",
        "created_at",
        "context",
        "payload",
        "event_id",
        "worker_id",
        "meta",
    }
    for key, value in source.items():
        if key not in renamed:
            assert out[key] == value, key
    if "created_at" in source:
        assert out["created_at"] == source["created_at"]


def test_worker_event_step_comes_from_command_id() -> None:
    """A worker_event without payload.step takes the step from `<execution>:<step>:<n>`."""
    out = _loads(ENGINE.convert(sample_bytes("worker_event__call_done"), "executor_event").body)
    assert out["step"] == "fetch"
    assert out["status"] == "COMPLETED"
    assert out["context"] == _loads(sample_bytes("worker_event__call_done"))["payload"]


def test_worker_event_step_and_worker_from_payload() -> None:
    """payload.step and payload.worker_id feed step and worker_id; the payload stays whole."""
    out = _loads(
        ENGINE.convert(sample_bytes("worker_event__command_started"), "event_request").body
    )
    assert (out["step"], out["worker_id"]) == ("fetch", "worker-rust-pool-0")
    assert out["payload"]["worker_id"] == "worker-rust-pool-0"


def test_worker_event_null_payload_step_falls_back_to_command_id() -> None:
    """A null payload.step (or worker_id) is not given: the step comes from command_id."""
    body = (
        b'{"event_type":"command.started","execution_id":5,'
        b'"payload":{"step":null,"worker_id":null,"command_id":"5:fetch:1"}}'
    )
    out = _loads(ENGINE.convert(body, "event_request").body)
    assert out["step"] == "fetch"
    assert "worker_id" not in out
    assert out["payload"] == {"step": None, "worker_id": None, "command_id": "5:fetch:1"}


def test_worker_event_without_step_sources_gets_the_default_step() -> None:
    """A command_id that is not `<execution>:<step>:<n>` leaves the default step of the rules."""
    out = _loads(
        ENGINE.convert(sample_bytes("worker_event__command_started_test"), "event_request").body
    )
    assert out["step"] == ENGINE.rules.defaults.step


def test_context_bytes_are_forwarded_exactly() -> None:
    """The context value reaches the target as the exact bytes the client sent."""
    body = sample_bytes("edge__unicode_step_and_payload")
    start = body.index(b'"context": ') + len(b'"context": ')
    end = body.index(b"}", start) + 1
    for target in TARGETS:
        assert body[start:end] in ENGINE.convert(body, target).body


def test_mixed_name_takes_the_rust_status_rule() -> None:
    """`playbook.completed_with_errors` derives COMPLETED: done/exit/completed are tested first."""
    body = sample_bytes("edge__status_mixed_error_completed_name")
    assert _loads(ENGINE.convert(body, "executor_event").body)["status"] == "COMPLETED"
