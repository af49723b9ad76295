"""The Rust server's event handlers after deserialization (`srv:src/handlers/events.rs`).

In the server's order: parse `execution_id` to i64 (422 `Invalid execution_id`), the
`command.claimed` check (409 for another worker, `event_id: 0` for the same one), parse a
given `event_id` (422 `Invalid event_id: <raw>`) or mint an application snowflake, then
the database write (500 when the store is down). Handler errors are JSON
`{"error": ..., "status": ...}`; success is `{"status":"ok","event_id":N,
"commands_generated":0}` with the id as a JSON number.

One deliberate reading: the claim check keys on the `command_id` found in the payload
(else in `meta`), which is what the handler extracts; the server's own lookup query only
finds claims through `meta.command_id`, which would make payload-only claims never
conflict.
"""

from __future__ import annotations

import re
from typing import Any

from proxy.emulator.state import (
    I64_MAX,
    I64_MIN,
    JSONB_NUL,
    TEXT_NUL_SQLX,
    IngestState,
    Reply,
    json_body,
    postgres_nul_problem,
)

_RUST_I64 = re.compile(r"[+-]?[0-9]+")
_DB_DOWN = "Database error: pool timed out while waiting for an open connection"
META_STEP = "__orchestrate__"  # the server does not persist events of this step


def parse_rust_i64(text: str) -> int | None:
    """Rust's `str::parse::<i64>`: optional sign, ASCII digits, in range; else None."""
    if not _RUST_I64.fullmatch(text):
        return None
    value = int(text)
    return value if I64_MIN <= value <= I64_MAX else None


def app_error(status: int, message: str) -> Reply:
    """`AppError::into_response`: JSON `{"error", "status"}`."""
    return Reply(status, json_body({"error": message, "status": status}))


def _ok(event_id: int, *, duplicate: bool = False) -> Reply:
    body = json_body({"status": "ok", "event_id": event_id, "commands_generated": 0})
    return Reply(200, body, event_ids=(event_id,) if not duplicate else (), duplicate=duplicate)


def _command_id(payload: Any, meta: Any) -> str | None:
    """`get_command_id`: a string `command_id` in the payload, else in `meta`."""
    for source in (payload, meta):
        if isinstance(source, dict):
            value = source.get("command_id")
            if isinstance(value, str):
                return value
    return None


def _recorded_worker(worker_id: str | None, meta: Any) -> str | None:
    """The worker a stored claim row names: `meta` gets the request's `worker_id`."""
    stored_meta = {} if meta is None else meta
    if not isinstance(stored_meta, dict):
        return None
    if worker_id is not None:
        return worker_id
    value = stored_meta.get("worker_id")
    return value if isinstance(value, str) else None


def status_from_name(event_type: str) -> str:
    """`event_status_from_name`: done/exit/completed first, then error/failed."""
    if "done" in event_type or "exit" in event_type or "completed" in event_type:
        return "COMPLETED"
    if "error" in event_type or "failed" in event_type:
        return "FAILED"
    return "RUNNING"


def _row_problem(values: dict[str, Any], event_type: str) -> str | None:
    """The Postgres refusal of the `noetl.event` row this event becomes, if any."""
    if values["step"] == META_STEP:
        return None
    status = values.get("status") or status_from_name(event_type)
    kind = values["result_kind"]
    if kind == "ref" and values["result_uri"] is not None:
        stored_result: Any = values["result_uri"]
    elif kind == "refs" and values["event_ids"] is not None:
        stored_result = None
    else:
        stored_result = values["payload"] if isinstance(values["payload"], dict) else None
    texts = (event_type, values["step"], status)
    documents = (stored_result, values["meta"], values["worker_id"])
    return postgres_nul_problem(texts, documents, TEXT_NUL_SQLX)


def _database_error(problem: str) -> Reply:
    """`AppError::Database`: sqlx words a jsonb refusal as an error from the database."""
    if problem == JSONB_NUL:
        problem = "error returned from database: " + JSONB_NUL
    return app_error(500, f"Database error: {problem}")


def _event_type(values: dict[str, Any]) -> str:
    # v1 structs call the field `name`; later ones `event_type` (with `name` as alias).
    name: str = values["event_type"] if "event_type" in values else values["name"]
    return name


def handle_event(state: IngestState, values: dict[str, Any]) -> Reply:
    """`handle_event_inner` for any Rust release (v1 has `name` and no `event_id`)."""
    execution_id = parse_rust_i64(values["execution_id"])
    if execution_id is None:
        return app_error(422, "Invalid execution_id")
    event_type = _event_type(values)
    worker_id: str | None = values["worker_id"]
    claim_key: tuple[int, str] | None = None
    if event_type == "command.claimed":
        command_id = _command_id(values["payload"], values["meta"])
        if command_id is not None:
            if state.store_down:
                return app_error(500, _DB_DOWN)
            claim_key = (execution_id, command_id)
            existing = state.rust_claims.get(claim_key)
            if existing is not None and worker_id is not None:
                if existing != worker_id:
                    return app_error(409, f"Command already claimed by {existing}")
                return _ok(0, duplicate=True)
    raw_event_id: str | None = values.get("event_id")
    if raw_event_id is not None:
        event_id = parse_rust_i64(raw_event_id)
        if event_id is None:
            return app_error(422, f"Invalid event_id: {raw_event_id}")
    else:
        event_id = state.app_ids.next()
    if state.store_down:
        return app_error(500, _DB_DOWN)
    problem = _row_problem(values, event_type)
    if problem is not None:
        return _database_error(problem)
    if claim_key is not None and state.rust_claims.get(claim_key) is None:
        state.rust_claims[claim_key] = _recorded_worker(worker_id, values["meta"])
    return _ok(event_id)


def handle_batch(state: IngestState, values: dict[str, Any]) -> Reply:
    """`handle_batch_events`: empty is ok at once; every item gets an app snowflake."""
    events: list[dict[str, Any]] = values["events"]
    if not events:
        body = json_body({"status": "ok", "event_ids": [], "commands_generated": 0})
        return Reply(200, body)
    if parse_rust_i64(values["execution_id"]) is None:
        return app_error(422, "Invalid execution_id")
    if state.store_down:
        return app_error(500, _DB_DOWN)
    event_ids = [state.app_ids.next() for _ in events]
    texts = [values["worker_id"]]
    for item in events:
        texts += [_event_type(item), item["step"]]
    documents = tuple(item["payload"] for item in events if isinstance(item["payload"], dict))
    problem = postgres_nul_problem(tuple(texts), documents, TEXT_NUL_SQLX)
    if problem is not None:
        return _database_error(problem)
    body = json_body({"status": "ok", "event_ids": event_ids, "commands_generated": 0})
    return Reply(200, body, event_ids=tuple(event_ids))
