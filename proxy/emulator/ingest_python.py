"""The Python server's event handlers after validation (`py:noetl/server/api/core`).

Single events (`events.py::handle_event`): a database short-circuit answers 503
`{"detail":{"code":"db_unavailable"}}` with `Retry-After`; `command.claimed` with a
numeric `command_id` goes through the claim table (409 for another worker, `event_id: 0`
when already claimed); the reference-only payload rules raise `ValueError`, which the
handler's blanket `except` turns into **500** `{"detail": "<message>"}`; `int()` of the
execution id fails the same way; lifecycle events repeating a `command_id` answer the
stored event id. Batches (`batch.py`) answer 202 with the acceptance record and honour
`Idempotency-Key` / `X-Idempotency-Key`; their failures are 500
`{"detail":{"code":"enqueue_error","message":...}}`. Ids are database snowflakes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from proxy.emulator.python_models import (
    BatchEventRequest,
    EventRequest,
    PythonReply,
    detail,
    json_reply,
)
from proxy.emulator.state import (
    I64_MAX,
    I64_MIN,
    TEXT_NUL_PSYCOPG,
    IngestState,
    Reply,
    json_body,
    postgres_nul_problem,
)

_RESULT_ALLOWED_KEYS = frozenset({"status", "reference", "context", "command_id"})
_FORBIDDEN_KEYS = frozenset({"_internal_data"})
DEDUPE_EVENT_TYPES = frozenset(
    {
        "call.done",
        "call.error",
        "step.exit",
        "command.started",
        "command.completed",
        "command.failed",
    }
)
_DB_UNAVAILABLE = {"code": "db_unavailable"}
_RETRY_AFTER = (("Retry-After", "1"),)


def reference_payload_problem(payload: Any) -> str | None:
    """`_validate_reference_only_payload`: the message of the ValueError it raises."""
    if not isinstance(payload, dict):
        return "event payload must be an object"
    if any(key in payload for key in _FORBIDDEN_KEYS):
        bad = sorted(key for key in payload if key in _FORBIDDEN_KEYS)
        return f"payload includes forbidden inline output keys: {', '.join(bad)}"
    result = payload.get("result")
    if result is None:
        return None
    if not isinstance(result, dict):
        return "payload.result must be an object"
    unknown = sorted(str(k) for k in result if str(k) not in _RESULT_ALLOWED_KEYS)
    if unknown:
        return f"payload.result includes unsupported keys: {', '.join(unknown)}"
    reference = result.get("reference")
    if reference is not None and not isinstance(reference, dict):
        return "payload.result.reference must be an object"
    context = result.get("context")
    if context is not None:
        if not isinstance(context, dict):
            return "payload.result.context must be an object"
        if _contains_key(context, lambda key: key in _FORBIDDEN_KEYS):
            return "payload.result.context includes forbidden inline data keys"
        if _contains_key(context, lambda key: key.startswith("command_") and key != "command_id"):
            return "payload.result.context includes legacy command_* keys"
    return None


def _contains_key(value: Any, matches: Callable[[str], bool], depth: int = 0) -> bool:
    if depth > 8:
        return False
    if isinstance(value, dict):
        for key, child in value.items():
            if matches(str(key)) or _contains_key(child, matches, depth + 1):
                return True
    elif isinstance(value, list):
        return any(_contains_key(child, matches, depth + 1) for child in value)
    return False


def extract_command_id(payload: Any, meta: Any = None) -> int | None:
    """`_extract_command_id_from_payload`: the first int or digit-string candidate."""
    p = payload if isinstance(payload, dict) else {}
    m = meta if isinstance(meta, dict) else {}
    candidates = [p.get("command_id"), m.get("command_id")]
    if isinstance(context := p.get("context"), dict):
        candidates.append(context.get("command_id"))
    if isinstance(result := p.get("result"), dict):
        candidates.append(result.get("command_id"))
        if isinstance(result_context := result.get("context"), dict):
            candidates.append(result_context.get("command_id"))
    for value in candidates:
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
    return None


def _ok(event_id: int, *, duplicate: bool = False) -> Reply:
    body = json_body({"status": "ok", "event_id": event_id, "commands_generated": 0})
    return Reply(200, body, event_ids=() if duplicate else (event_id,), duplicate=duplicate)


def _from_python(reply: PythonReply) -> Reply:
    return Reply(reply.status, reply.body, reply.content_type, reply.headers)


def _insert_problem(execution_id: int, texts: tuple[Any, ...], docs: tuple[Any, ...]) -> str | None:
    """Why the INSERT would fail: an execution id beyond bigint, or a NUL Postgres refuses."""
    if not I64_MIN <= execution_id <= I64_MAX:
        return "bigint out of range"
    return postgres_nul_problem(texts, docs, TEXT_NUL_PSYCOPG)


def handle_event(state: IngestState, req: EventRequest) -> Reply:
    """`handle_event` of `core/events.py`, without the engine side effects."""
    if state.store_down:
        return _from_python(detail(503, _DB_UNAVAILABLE, _RETRY_AFTER))
    if req.name == "command.claimed":
        problem = reference_payload_problem(req.payload)
        if problem is not None:
            return _from_python(detail(500, problem))
        command_id = extract_command_id(req.payload, req.meta)
        if command_id:
            return _claim(state, req, command_id)
    problem = reference_payload_problem(req.payload)
    if problem is not None:
        return _from_python(detail(500, problem))
    command_id = extract_command_id(req.payload, req.meta)
    try:
        execution_id = int(req.execution_id)
    except ValueError as exc:
        return _from_python(detail(500, str(exc)))
    dedup_key = None
    if command_id and req.name in DEDUPE_EVENT_TYPES:
        dedup_key = (execution_id, req.name, req.step, command_id)
        if dedup_key in state.python_dedup:
            return _ok(state.python_dedup[dedup_key], duplicate=True)
    event_id = state.db_ids.next()
    problem = _insert_problem(
        execution_id, (req.name, req.step), (req.payload, req.meta, req.worker_id)
    )
    if problem is not None:
        return _from_python(detail(500, problem))
    if dedup_key is not None:
        state.python_dedup[dedup_key] = event_id
    return _ok(event_id)


def _claim(state: IngestState, req: EventRequest, command_id: int) -> Reply:
    event_id = state.db_ids.next()
    try:
        execution_id = int(req.execution_id)
    except ValueError as exc:
        return _from_python(detail(500, str(exc)))
    key = (execution_id, command_id)
    if key in state.python_claims:
        existing = state.python_claims[key]
        if existing and existing != req.worker_id:
            return _from_python(detail(409, f"Command already claimed by {existing}"))
        return _ok(0, duplicate=True)
    texts = (req.name, req.step, req.worker_id)
    problem = _insert_problem(execution_id, texts, (req.payload, req.meta))
    if problem is not None:
        return _from_python(detail(500, problem))
    state.python_claims[key] = req.worker_id
    return _ok(event_id)


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """`Idempotency-Key`, else `X-Idempotency-Key` (an empty value counts as absent)."""
    return headers.get("Idempotency-Key") or headers.get("X-Idempotency-Key") or None


def _enqueue_error(message: str) -> Reply:
    return _from_python(detail(500, {"code": "enqueue_error", "message": message}))


def _accepted(request_id: str, event_ids: tuple[int, ...], key: str | None, dup: bool) -> Reply:
    content = {
        "status": "accepted",
        "request_id": request_id,
        "event_ids": list(event_ids),
        "commands_generated": 0,
        "queue_depth": 0,
        "duplicate": dup,
        "idempotency_key": key,
    }
    reply = json_reply(202, content)
    return Reply(202, reply.body, event_ids=() if dup else event_ids, duplicate=dup)


def handle_batch(state: IngestState, req: BatchEventRequest, key: str | None) -> Reply:
    """`handle_batch_events` of `core/batch.py`: acceptance record, then 202."""
    if state.store_down:
        return _from_python(detail(503, _DB_UNAVAILABLE, _RETRY_AFTER))
    try:
        execution_id = int(req.execution_id)
    except ValueError as exc:
        return _enqueue_error(str(exc))
    if key is not None and (execution_id, key) in state.python_batches:
        request_id, event_ids = state.python_batches[(execution_id, key)]
        return _accepted(request_id, event_ids, key, True)
    request_id = str(state.db_ids.next())
    state.db_ids.next()  # the batch.accepted record's own id
    minted: list[int] = []
    for item in req.events:
        problem = reference_payload_problem(item.payload)
        if problem is not None:
            return _enqueue_error(problem)
        minted.append(state.db_ids.next())
    texts = (req.worker_id, *(t for item in req.events for t in (item.name, item.step)))
    docs = tuple(d for item in req.events for d in (item.payload, item.meta))
    problem = _insert_problem(execution_id, texts, docs)
    if problem is not None:
        return _enqueue_error(problem)
    event_ids = tuple(minted)
    if key is not None:
        state.python_batches[(execution_id, key)] = (request_id, event_ids)
    return _accepted(request_id, event_ids, key, False)
