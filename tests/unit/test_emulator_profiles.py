"""The body layer of each profile: content types, size limit, FastAPI's validation answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.emulator.profiles import (
    PROFILES,
    RUST_BODY_LIMIT,
    Decoded,
    Refusal,
    Route,
    axum_accepts_content_type,
    decode_request,
    profile_for_version,
)
from proxy.emulator.python_models import BatchEventRequest, EventRequest
from tests.samples import sample_bytes

MINIMAL = b'{"execution_id":"1","step":"s","event_type":"e"}'


def python(
    body: bytes, content_type: str | None = "application/json", route: Route = "event"
) -> Any:
    return decode_request(PROFILES["python"], route, content_type, body)


def detail(outcome: Any) -> Any:
    assert isinstance(outcome, Refusal), outcome
    assert outcome.content_type == "application/json"
    return json.loads(outcome.body)["detail"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("application/cloudevents+json", True),
        ("application/json;charset=latin-1", True),
        (None, False),
        ("", False),
        ("text/plain", False),
        ("application/jsonx", False),
        ("application/x-www-form-urlencoded", False),
        ("json", False),
    ],
)
def test_axum_json_content_type(value: str | None, ok: bool) -> None:
    """axum takes `application/json` and any `+json` suffix, whatever the parameters."""
    assert axum_accepts_content_type(value) is ok


@pytest.mark.parametrize("profile", ["rust-1.0.3", "rust-2.9.0", "rust-2.19.1"])
def test_rust_415_text(profile: str) -> None:
    """Without a JSON content type every Rust release answers the axum 415 text."""
    outcome = decode_request(PROFILES[profile], "event", "text/plain", MINIMAL)
    assert isinstance(outcome, Refusal)
    assert outcome.status == 415
    assert outcome.body == sample_bytes("rust_error__axum_415_no_content_type.txt").strip()


def test_rust_body_limit_is_two_mebibytes() -> None:
    """A body of exactly 2 MiB is read; one byte more is 413 before any parsing."""
    spec = PROFILES["rust-2.19.1"]
    padding = RUST_BODY_LIMIT - len(MINIMAL) - len(b',"pad":""')
    exact = MINIMAL[:-1] + b',"pad":"' + b"x" * padding + b'"}'
    assert len(exact) == RUST_BODY_LIMIT
    assert isinstance(decode_request(spec, "event", "application/json", exact), Decoded)
    over = decode_request(spec, "event", "application/json", exact + b" ")
    assert isinstance(over, Refusal)
    assert (over.status, over.body) == (
        413,
        b"Failed to buffer the request body: length limit exceeded",
    )


def test_python_parses_json_without_a_content_type() -> None:
    """FastAPI reads a body without Content-Type as JSON, like one labelled JSON."""
    outcome = python(MINIMAL, None)
    assert isinstance(outcome, Decoded)
    assert isinstance(outcome.python, EventRequest)


def test_python_refuses_other_content_types_as_not_an_object() -> None:
    """A non-JSON content type leaves the body as bytes, which the model cannot read."""
    assert detail(python(MINIMAL, "text/plain")) == [
        {
            "type": "model_attributes_type",
            "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from",
            "input": MINIMAL.decode(),
        }
    ]


def test_python_json_invalid_entry() -> None:
    """Malformed JSON is a 422 `json_invalid` entry located at the decoder's offset."""
    assert detail(python(b'{"a": }')) == [
        {
            "type": "json_invalid",
            "loc": ["body", 6],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": "Expecting value"},
        }
    ]


def test_python_empty_body_and_null_are_missing() -> None:
    """No body at all, or JSON `null`, is the FastAPI `missing` body entry."""
    missing = [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]
    assert detail(python(b"")) == missing
    assert detail(python(b"null")) == missing


def test_python_undecodable_body_is_400() -> None:
    """Bytes that are not text at all fail before validation with FastAPI's 400."""
    outcome = python(b'{"a": "\xff\xfe\xfd"}')
    assert isinstance(outcome, Refusal)
    assert outcome.status == 400
    assert json.loads(outcome.body) == {"detail": "There was an error parsing the body"}


def test_python_first_alias_wins() -> None:
    """`name` beats `event_type`, `step` beats `node_name`, `payload` beats `context`."""
    body = json.dumps(
        {
            "execution_id": 5,
            "event_type": "second",
            "name": "first",
            "node_name": "second",
            "step": "first",
            "context": {"which": "second"},
            "payload": {"which": "first"},
            "actionable": "yes",
        }
    ).encode()
    outcome = python(body)
    assert isinstance(outcome, Decoded)
    model = outcome.python
    assert isinstance(model, EventRequest)
    assert (model.name, model.step, model.payload) == ("first", "first", {"which": "first"})
    assert model.execution_id == "5"
    assert model.actionable is True


def test_python_entries_for_the_pre_v4_worker_body_shape() -> None:
    """A null payload and a missing step are reported in field order with the body prefix."""
    body = b'{"execution_id":1,"event_type":"e","context":null}'
    assert detail(python(body)) == [
        {
            "type": "missing",
            "loc": ["body", "step"],
            "msg": "Field required",
            "input": {"execution_id": 1, "event_type": "e", "context": None},
        },
        {
            "type": "dict_type",
            "loc": ["body", "context"],
            "msg": "Input should be a valid dictionary",
            "input": None,
        },
    ]


def test_python_batch_rules() -> None:
    """Batch ids must be JSON strings; more than 256 events is a body-level value error."""
    int_id = python(b'{"execution_id":5,"events":[]}', route="batch")
    assert detail(int_id)[0]["type"] == "string_type"
    items = [{"step": "s", "name": "e"}] * 257
    big = json.dumps({"execution_id": "5", "events": items}).encode()
    entry = detail(python(big, route="batch"))[0]
    assert entry["type"] == "value_error"
    assert entry["loc"] == ["body"]
    assert entry["msg"] == "Value error, Batch contains 257 events; limit is 256"
    assert entry["ctx"] == {"error": {}}
    ok = python(sample_bytes("python_batch_event_request__py_worker"), route="batch")
    assert isinstance(ok, Decoded)
    assert isinstance(ok.python, BatchEventRequest)
    assert [item.actionable for item in ok.python.events] == [False, True]


@pytest.mark.parametrize(
    ("version", "profile"),
    [
        ("1.0.3", "rust-1.0.3"),
        ("2.0.0", "rust-2.9.0"),
        ("2.19.0", "rust-2.9.0"),
        ("2.19.1", "rust-2.19.1"),
        ("3.83.1", "rust-2.19.1"),
    ],
)
def test_profile_for_version(version: str, profile: str) -> None:
    """A release number maps to the ingest rules of its family."""
    assert profile_for_version(version) == profile


def test_python_nesting() -> None:
    """Nesting within Python's recursion limit validates; far beyond it the parse fails (400)."""

    def nested(depth: int) -> bytes:
        return (
            b'{"execution_id":"1","name":"e","payload":{"a":' + b"[" * depth + b"]" * depth + b"}}"
        )

    assert detail(python(nested(100)))[0]["loc"] == ["body", "step"]
    deep = python(nested(5000))
    assert isinstance(deep, Refusal)
    assert deep.status == 400
