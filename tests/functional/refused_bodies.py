"""One body per engine refusal code the built-in rules can produce, with where to send it.

Used by the rejection-metrics, quarantine and observe-mode tests. The limits below are
the settings the tests run the proxy with (a small batch limit and depth, so the bodies
stay small).
"""

from __future__ import annotations

LIMITS = {"batch_max_items": 3, "max_json_depth": 8}

ACCEPTED = (
    b'{"execution_id":"478775660589088776","event_type":"call.done","step":"fetch",'
    b'"status":"COMPLETED","created_at":"2026-06-05T12:00:01Z"}'
)

# code -> (path, body, field the refusal names)
REFUSED: dict[str, tuple[str, bytes, str | None]] = {
    "invalid_json": ("/api/events", b'{"execution_id":', None),
    "not_an_object": ("/api/events", b"[1,2]", None),
    "too_deep": ("/api/events", b'{"a":' * 10 + b"1" + b"}" * 10, None),
    "unknown_shape": ("/api/events", b'{"hello":"world"}', None),
    "conflicting_fields": (
        "/api/events",
        b'{"execution_id":"478775660589088776","event_type":"call.done","step":"a",'
        b'"node_name":"b","status":"COMPLETED"}',
        "step",
    ),
    "invalid_id": (
        "/api/events",
        b'{"execution_id":"12x","event_type":"call.done","step":"fetch","status":"COMPLETED"}',
        "execution_id",
    ),
    "invalid_timestamp": (
        "/api/events",
        b'{"execution_id":"478775660589088776","event_type":"call.done","step":"fetch",'
        b'"status":"COMPLETED","created_at":"2026-01-01T00:00:00"}',
        "created_at",
    ),
    "invalid_field_type": (
        "/api/events",
        b'{"execution_id":"478775660589088776","event_type":"call.done","step":7,'
        b'"status":"COMPLETED"}',
        "step",
    ),
    "batch_too_large": (
        "/api/events/batch",
        b'{"execution_id":"1","events":['
        + b",".join([b'{"step":"a","event_type":"e"}'] * 4)
        + b"]}",
        "events",
    ),
    "invalid_batch_item": (
        "/api/events/batch",
        b'{"execution_id":"1","events":[{"step":"a","event_type":"e"},{"step":7,"event_type":"e"}]}',
        None,
    ),
}
