"""Every shared request sample, posted to a real emulator of each server release.

The table states, per sample and per profile, the HTTP status and the kind of body the
server answers: `OK` (JSON success), `TEXT` (axum's text/plain rejection), `ERROR` (the
Rust handler's JSON `{"error", "status"}`) or `DETAIL` (FastAPI's JSON `{"detail"}`).
Columns: rust-1.0.3, rust-2.9.0, rust-2.19.1, python.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from proxy.emulator import PROFILES, create_emulator_app
from tests.samples import SAMPLES_DIR, sample_bytes

OK, TEXT, ERROR, DETAIL = "ok", "text", "error", "detail"
COLUMNS = ("rust-1.0.3", "rust-2.9.0", "rust-2.19.1", "python")
Expect = tuple[int, str]
T422 = (422, TEXT)
OK200 = (200, OK)

# Why the notable cells are what they are:
# - rust-1.0.3 knows only `name` (no event_type alias) and string ids;
# - rust-2.9.0 has the aliases but string ids only (integer id -> 422 text);
# - rust-2.19.1 takes integer ids; an id its handler cannot parse as i64 is a JSON 422;
# - python: payload must be an object whose `result` is an object (else 500), `int()` of
#   the execution id happens in the handler (500), ids beyond bigint fail the INSERT (500);
# - a `\u0000` in a stored payload fails Postgres' jsonb on every server that stores it.
TABLE: dict[str, tuple[Expect, Expect, Expect, Expect]] = {
    "edge__both_payload_and_context": (T422, T422, T422, OK200),
    "edge__float_execution_id_rejected": (T422, T422, T422, (500, DETAIL)),
    "edge__rust_event_request_u64_overflow_id": (T422, T422, (422, ERROR), (500, DETAIL)),
    "edge__status_mixed_error_completed_name": (T422, OK200, OK200, OK200),
    "edge__unicode_step_and_payload": (T422, (500, ERROR), (500, ERROR), (500, DETAIL)),
    "edge__unknown_extra_fields": (T422, OK200, OK200, OK200),
    "executor_event__call_done_container_poll": (T422, T422, OK200, OK200),
    "executor_event__call_done_inline_result": (T422, T422, OK200, OK200),
    "executor_event__call_done_reference_result": (T422, T422, OK200, OK200),
    "executor_event__command_completed_full": (T422, T422, OK200, OK200),
    "executor_event__command_completed_pending_callback": (T422, T422, OK200, OK200),
    "executor_event__command_completed_tool_status_success": (T422, T422, OK200, OK200),
    "executor_event__command_started_worker_test": (T422, T422, OK200, OK200),
    "executor_event__payload_alias": (T422, T422, OK200, (500, DETAIL)),
    "executor_event__step_exit_case_status": (T422, T422, OK200, OK200),
    "executor_event__subscription_rate_limited": (T422, T422, OK200, OK200),
    "executor_event__v0_1_string_execution_id_historic": (
        T422,
        (422, ERROR),
        (422, ERROR),
        (500, DETAIL),
    ),
    "python_batch_event_request__py_worker": (OK200, OK200, OK200, (202, OK)),
    "python_event_emit_request__full_executor_shape": (T422, OK200, OK200, OK200),
    "python_event_emit_request__legacy_worker_shape": (OK200, OK200, OK200, (500, DETAIL)),
    "python_event_emit_request__minimal": (T422, T422, T422, (422, DETAIL)),
    "python_event_request__executor_envelope_int_id": (T422, T422, OK200, OK200),
    "python_event_request__legacy_worker": (OK200, OK200, OK200, (500, DETAIL)),
    "python_event_request__py_worker_call_done_with_correlation": (OK200, OK200, OK200, OK200),
    "python_event_request__py_worker_command_failed": (OK200, OK200, OK200, OK200),
    "rust_batch_event_item__legacy_name": (T422, T422, T422, (422, DETAIL)),
    "rust_batch_event_request__integer_execution_id": (T422, T422, OK200, (422, DETAIL)),
    "rust_event_request__INVALID_array_execution_id": (T422, T422, T422, (500, DETAIL)),
    "rust_event_request__INVALID_object_execution_id": (T422, T422, T422, (500, DETAIL)),
    "rust_event_request__context_alias": (T422, OK200, OK200, (500, DETAIL)),
    "rust_event_request__event_id_null": (T422, OK200, OK200, OK200),
    "rust_event_request__executor_shape_string_ids": (T422, OK200, OK200, OK200),
    "rust_event_request__integer_event_id": (T422, T422, OK200, OK200),
    "rust_event_request__integer_execution_id": (T422, T422, OK200, OK200),
    "rust_event_request__legacy_name_alias": (OK200, OK200, OK200, OK200),
    "rust_event_request__minimal_defaults": (T422, OK200, OK200, OK200),
    "rust_event_request__null_payload": (T422, OK200, OK200, (422, DETAIL)),
    "rust_event_request__result_kind_ref": (T422, OK200, OK200, OK200),
    "rust_event_request__result_kind_refs": (T422, OK200, OK200, OK200),
    "rust_event_request__serialized_from_executor_event": (T422, OK200, OK200, OK200),
    "rust_event_request__string_execution_id": (T422, OK200, OK200, OK200),
    "rust_event_request__v1_legacy_full": (OK200, OK200, OK200, (500, DETAIL)),
    "worker_event__call_done": (T422, T422, T422, (422, DETAIL)),
    "worker_event__call_error": (T422, T422, T422, (422, DETAIL)),
    "worker_event__command_claimed": (T422, T422, T422, (422, DETAIL)),
    "worker_event__command_completed": (T422, T422, T422, (422, DETAIL)),
    "worker_event__command_failed": (T422, T422, T422, (422, DETAIL)),
    "worker_event__command_started": (T422, T422, T422, (422, DETAIL)),
    "worker_event__command_started_test": (T422, T422, T422, (422, DETAIL)),
}

CASES = [
    pytest.param(sample, profile, expect, id=f"{sample}-{profile}")
    for sample, row in TABLE.items()
    for profile, expect in zip(COLUMNS, row, strict=True)
]

ClientFactory = Callable[[TestServer], Awaitable[TestClient[Any, Any]]]
ServerFactory = Callable[..., Awaitable[TestServer]]


def _request_samples() -> set[str]:
    skip = ("_response__", "_error__", "_health__")
    return {
        p.stem
        for p in SAMPLES_DIR.iterdir()
        if p.suffix == ".json" and not any(marker in p.name for marker in skip)
    }


def _path_for(sample: str) -> str:
    return "/api/events/batch" if "batch" in sample else "/api/events"


def test_table_covers_every_request_sample() -> None:
    """Each request sample of the shared directory has a row, and each row a sample."""
    assert set(TABLE) == _request_samples()
    assert tuple(PROFILES) == COLUMNS


def _check_format(kind: str, content_type: str, raw: bytes, status: int) -> Any:
    if kind == TEXT:
        assert content_type == "text/plain; charset=utf-8"
        assert raw.startswith(b"Failed to deserialize the JSON body into the target type: ")
        return None
    assert content_type == "application/json"
    body = json.loads(raw)
    if kind == ERROR:
        assert set(body) == {"error", "status"}
        assert body["status"] == status
    elif kind == DETAIL:
        assert list(body) == ["detail"]
    return body


def _exact_ids(raw: bytes, body: dict[str, Any]) -> list[int]:
    ids = body["event_ids"] if "event_ids" in body else [body["event_id"]]
    for event_id in ids:
        assert isinstance(event_id, int)
        assert event_id > 2**53, "a snowflake id, beyond what a double holds exactly"
        # Written as a bare JSON number with every digit.
        assert f"{event_id}".encode() in raw
        assert f'"{event_id}"'.encode() not in raw
    return list(ids)


@pytest.mark.parametrize(("sample", "profile", "expect"), CASES)
async def test_sample_acceptance(
    aiohttp_server: ServerFactory,
    aiohttp_client: ClientFactory,
    sample: str,
    profile: str,
    expect: Expect,
) -> None:
    """The emulated release answers the sample with the tabled status and body format;
    accepted bodies are stored byte for byte under exact snowflake ids."""
    status, kind = expect
    client = await aiohttp_client(await aiohttp_server(create_emulator_app(profile)))
    body = sample_bytes(sample)
    response = await client.post(
        _path_for(sample), data=body, headers={"Content-Type": "application/json"}
    )
    raw = await response.read()
    assert response.status == status, raw[:300]
    parsed = _check_format(kind, response.headers["Content-Type"], raw, status)

    stored = await (await client.get("/_emulator/events")).json()
    if kind != OK:
        assert stored == []
        return
    ids = _exact_ids(raw, parsed)
    assert [row["event_id"] for row in stored] == ids
    for row in stored:
        assert base64.b64decode(row["body_b64"]) == body
        assert row["body"] == body.decode("utf-8")
        assert row["path"] == _path_for(sample)
        assert row["profile"] == profile
