"""Properties of the engine over generated envelopes of every shape (hypothesis)."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.envelope import TARGETS, Engine, EngineOptions, EnvelopeError, load_rules
from proxy.envelope.errors import ConflictingFields
from proxy.envelope.jsonbody import refuse_repeated_keys, split_nested

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
NOW = datetime(2026, 6, 5, 12, 0, 0, tzinfo=UTC)
ENGINE = Engine(load_rules(), EngineOptions(now=lambda: NOW))
settings.register_profile(
    "engine", deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("engine")

KNOWN = {
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
    "events",
    "actionable",
    "informative",
    "result_kind",
    "result_uri",
    "event_ids",
    "node_id",
    "node_type",
    "parent_event_id",
    "parent_execution_id",
    "catalog_id",
    "duration",
    "result",
    "error",
    "stack_trace",
    "payload_data",
    "output_inline",
    "output_ref",
    "output_select",
    "preview",
}

ids = st.integers(I64_MIN, I64_MAX)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | ids
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=24)
extra_keys = st.dictionaries(
    st.text(min_size=1, max_size=12).filter(lambda k: k not in KNOWN), json_values, max_size=4
)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    digits = draw(st.sampled_from([0, 3, 6, 9]))
    fraction = (
        "."
        + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=digits, max_size=digits)))
        if digits
        else ""
    )
    offset = draw(st.sampled_from(["Z", "+00:00", "+05:30", "-08:00", "+14:00"]))
    day = draw(st.integers(1, 28))
    month, hour = draw(st.integers(1, 12)), draw(st.integers(0, 23))
    return f"2026-{month:02d}-{day:02d}T{hour:02d}:59:59{fraction}{offset}"


statuses = st.sampled_from(["COMPLETED", "RUNNING", "success", "error", "REPLAYED", "Done"])
id_as_written = ids | ids.map(str)


@st.composite
def executor_events(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "execution_id": draw(ids),
        "event_type": draw(names),
        "step": draw(names),
        "status": draw(statuses),
        "created_at": draw(timestamps()),
        draw(st.sampled_from(["context", "payload"])): draw(json_values),
    }
    if draw(st.booleans()):
        body["event_id"] = draw(ids)
    if draw(st.booleans()):
        body["worker_id"] = draw(names)
    if draw(st.booleans()):
        body["meta"] = draw(json_values)
    return body


@st.composite
def event_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "execution_id": draw(id_as_written),
        "step": draw(names),
        draw(st.sampled_from(["name", "event_type"])): draw(names),
    }
    for key, strategy in (
        ("payload", json_values),
        ("event_id", id_as_written),
        ("status", statuses),
        ("created_at", timestamps()),
        ("worker_id", names),
        ("meta", json_values),
        ("actionable", st.booleans()),
        ("result_kind", st.just("data")),
    ):
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return body


@st.composite
def emit_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "execution_id": draw(id_as_written),
        draw(st.sampled_from(["name", "event_type"])): draw(names),
    }
    body[draw(st.sampled_from(["node_id", "node_type", "error", "duration", "preview"]))] = draw(
        json_values
    )
    if draw(st.booleans()):
        body["node_name"] = draw(names)
    return body


@st.composite
def worker_events(draw: st.DrawFn) -> dict[str, Any]:
    payload = draw(
        st.one_of(
            json_values,
            st.fixed_dictionaries(
                {
                    "command_id": st.builds(
                        lambda e, s: f"{e}:{s}:1", ids, names.filter(lambda s: ":" not in s)
                    )
                },
                optional={"step": names, "worker_id": names},
            ),
        )
    )
    return {"event_type": draw(names), "execution_id": draw(ids), "payload": payload}


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    items = draw(
        st.lists(
            st.fixed_dictionaries(
                {"step": names, "name": names},
                optional={"payload": json_values, "actionable": st.booleans()},
            ),
            max_size=5,
        )
    )
    return {"execution_id": draw(ids.map(str)), "events": items, "worker_id": draw(names)}


def with_extras(strategy: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda body, extra: {**body, **extra}, strategy, extra_keys)


# worker_event is a closed shape (exactly three keys), so it gets no unknown keys.
open_shapes = with_extras(
    st.one_of(executor_events(), event_requests(), emit_requests(), batches())
)
envelopes = st.one_of(open_shapes, worker_events())


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def ordered(body: bytes) -> list[tuple[str, Any]]:
    """Top-level members in document order (dicts keep insertion order)."""
    return list(json.loads(body).items())


@given(envelopes, st.sampled_from(TARGETS))
def test_conversion_is_lossless_between_targets(body: dict[str, Any], first: str) -> None:
    """Target A -> target B -> target A gives the same body (modulo an id minted on the way)."""
    raw = encode(body)
    other = next(t for t in TARGETS if t != first)
    there = ENGINE.convert(raw, first)
    back = ENGINE.convert(ENGINE.convert(there.body, other).body, first)
    expected = ordered(there.body)
    result = ordered(back.body)
    if not any(key == "event_id" for key, _ in expected) and "events" not in body:
        result = [(key, value) for key, value in result if key != "event_id"]
    assert result == expected


@given(envelopes, st.sampled_from(TARGETS))
def test_conversion_is_idempotent(body: dict[str, Any], target: str) -> None:
    """Converting a target body to the same target again changes nothing, byte for byte."""
    once = ENGINE.convert(encode(body), target).body
    assert ENGINE.convert(once, target).body == once


@given(envelopes, st.sampled_from(TARGETS))
def test_outputs_pass_the_strict_target_validator(body: dict[str, Any], target: str) -> None:
    """A conversion is a valid target body, except where the client's own values are of a
    kind the legacy Python server refuses (a non-object payload or meta), which the proxy
    does not rewrite and the validator must then refuse."""
    conversion = ENGINE.convert(encode(body), target)
    batch = conversion.batch_size is not None
    out = json.loads(conversion.body)
    legacy_refuses = target == "event_request" and (
        any(not isinstance(item.get("payload", {}), dict) for item in out["events"])
        if batch
        else not isinstance(out.get("payload", {}), dict)
        or not isinstance(out.get("meta"), dict | None)
    )
    if legacy_refuses:
        with pytest.raises(EnvelopeError):
            ENGINE.validate_target(target, conversion.body, batch=batch)
    else:
        ENGINE.validate_target(target, conversion.body, batch=batch)


@given(ids, ids, st.sampled_from(TARGETS), st.booleans())
@example(I64_MIN, I64_MAX, "executor_event", False)
@example(I64_MAX, I64_MIN, "event_request", True)
def test_ids_across_the_whole_range_stay_exact(
    execution_id: int, event_id: int, target: str, as_string: bool
) -> None:
    """Ids anywhere in the signed 64-bit range, both ends included, come out exact."""
    body = {
        "execution_id": str(execution_id) if as_string else execution_id,
        "step": "s",
        "name": "n",
        "event_id": str(event_id) if as_string else event_id,
    }
    out = dict(ordered(ENGINE.convert(encode(body), target).body))
    cast = int if target == "executor_event" else str
    assert (out["execution_id"], out["event_id"]) == (cast(execution_id), cast(event_id))


@given(with_extras(st.one_of(executor_events(), event_requests())), st.sampled_from(TARGETS))
def test_unknown_keys_survive_in_order(body: dict[str, Any], target: str) -> None:
    """Keys the target does not name come out unchanged and in input order."""
    unknown = [(key, value) for key, value in body.items() if key not in KNOWN]
    out = ordered(ENGINE.convert(encode(body), target).body)
    assert [(key, value) for key, value in out if key not in KNOWN] == unknown


@given(timestamps(), st.sampled_from(TARGETS))
def test_timestamps_survive_byte_for_byte(stamp: str, target: str) -> None:
    """Timestamps with 0, 3, 6 or 9 fractional digits arrive exactly as written."""
    raw = encode({"execution_id": 1, "step": "s", "name": "n", "created_at": stamp})
    assert f'"created_at":"{stamp}"'.encode() in ENGINE.convert(raw, target).body


@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
@example(b"[" * 5000)
@example(b'{"execution_id": 1e999}')
def test_random_bytes_raise_only_engine_errors(raw: bytes) -> None:
    """Whatever the bytes, the engine answers or raises its own error, nothing else."""
    for call in (
        ENGINE.detect,
        lambda b: ENGINE.convert_event(b, "executor_event"),
        lambda b: ENGINE.convert_batch(b, "event_request"),
    ):
        with contextlib.suppress(EnvelopeError):
            call(raw)


_KEYS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=8,
)
_LAYOUTS = st.sampled_from(
    [
        {"separators": (",", ":")},
        {"separators": (", ", ": ")},
        {"indent": 2},
        {"indent": "\t", "separators": (" ,", " : ")},
    ]
)


@given(st.dictionaries(_KEYS, _VALUES, min_size=1, max_size=6), _LAYOUTS, st.booleans())
def test_objects_without_repeated_keys_pass_in_any_layout(
    obj: dict[str, Any], layout: dict[str, Any], ascii_only: bool
) -> None:
    """Whitespace, escapes and non-ASCII keys never pass for a repeated key."""
    raw = json.dumps(obj, ensure_ascii=ascii_only, **layout).encode()
    members = split_nested(raw)
    assert members is not None
    refuse_repeated_keys(raw, members)


@given(
    st.dictionaries(_KEYS, _VALUES, min_size=1, max_size=6),
    _VALUES,
    st.data(),
    _LAYOUTS,
    st.booleans(),
)
def test_a_repeated_key_is_always_refused(
    obj: dict[str, Any],
    value: Any,
    data: st.DataObject,
    layout: dict[str, Any],
    ascii_only: bool,
) -> None:
    """A member repeating a key, spelled with escapes or not, anywhere in the object."""
    key = data.draw(st.sampled_from(sorted(obj)))
    raw = json.dumps(obj, ensure_ascii=ascii_only, **layout).encode()
    extra = json.dumps(key, ensure_ascii=not ascii_only).encode()
    extra += b":" + json.dumps(value).encode()
    at = data.draw(st.sampled_from(["first", "last"]))
    raw = b"{" + extra + b"," + raw[1:] if at == "first" else raw[:-1] + b"," + extra + b"}"
    members = split_nested(raw)
    assert members is not None
    with pytest.raises(ConflictingFields):
        refuse_repeated_keys(raw, members)
