"""Builders for the envelopes tests convert and the records tests feed the observability
extension by hand.

Each builder returns a fresh value: realistic defaults, with any field replaced by keyword.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from proxy.contract import ClientHints, EventRecord

# A NoETL worker that names itself only by its user agent; its envelope names the worker.
_HINTS = ClientHints(header=None, user_agent="noetl-worker/2.1", peer="127.0.0.1")


def client_hints(**overrides: Any) -> ClientHints:
    """What a worker's request tells about its client, with `overrides` replacing fields."""
    return replace(_HINTS, **overrides)


def event_record(**overrides: Any) -> EventRecord:
    """A canonical `executor_event` a worker sent, forwarded and stored by the upstream,
    with `overrides` replacing fields."""
    record = EventRecord(
        path="/api/events",
        hints=_HINTS,
        worker_id="worker-rust-pool-0",
        shape="executor_event",
        target="executor_event",
        upstream_version="3.83.1",
        outcome="forwarded",
        error_code=None,
        upstream_status=200,
        execution_id="612345678901234567",
        request_event_id="612345678901234601",
        stored_event_ids=("612345678901234601",),
        batch_size=None,
        upstream_seconds=0.002,
        body=b"",
        started=None,
        error_field=None,
        error_index=None,
        headers=None,
        mode="enforce",
        would_refuse=None,
        kind="event",
    )
    return replace(record, **overrides)


def canonical_body(**changes: Any) -> dict[str, Any]:
    """A canonical ExecutorEvent as JSON data; `changes` replace keys in place or add them at
    the end, and a key given as `...` is left out."""
    body: dict[str, Any] = {
        "execution_id": 478775660589088776,
        "event_type": "command.completed",
        "step": "fetch",
        "status": "COMPLETED",
        "created_at": "2026-05-31T03:14:15Z",
        "context": {"items": 42},
    }
    return _changed(body, changes)


def legacy_body(**changes: Any) -> dict[str, Any]:
    """A legacy EventRequest as JSON data, changed as `canonical_body` is."""
    body: dict[str, Any] = {
        "execution_id": "478775660589088776",
        "step": "fetch",
        "name": "call.done",
    }
    return _changed(body, changes)


def _changed(body: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    body.update(changes)
    return {key: value for key, value in body.items() if value is not ...}
