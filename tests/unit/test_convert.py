"""The conversion rules of the contract (ENVELOPES.md §4), one behaviour per test."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from proxy.envelope import Engine, EngineOptions, EnvelopeError, load_rules
from tests.builders import canonical_body, legacy_body

RULES = load_rules()
FIXED_NOW = datetime(2026, 6, 5, 12, 0, 0, 123456, tzinfo=UTC)
ENGINE = Engine(RULES, EngineOptions(now=lambda: FIXED_NOW))
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)


canonical = canonical_body
legacy = legacy_body


def convert(body: dict[str, Any] | bytes, target: str, engine: Engine = ENGINE) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    result: dict[str, Any] = json.loads(engine.convert_event(raw, target).body)
    return result


def refused_error(body: dict[str, Any] | bytes, target: str = "executor_event") -> EnvelopeError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(EnvelopeError) as caught:
        ENGINE.convert_event(raw, target)
    return caught.value


# --- ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, -1, 2**53 + 1, I64_MAX, I64_MIN])
def test_integer_ids_stay_exact_to_both_targets(value: int) -> None:
    """Integer ids anywhere in the signed 64-bit range arrive exact, as integer or string."""
    body = legacy(execution_id=value, event_id=value)
    assert convert(body, "executor_event")["execution_id"] == value
    assert convert(body, "executor_event")["event_id"] == value
    assert convert(body, "event_request")["execution_id"] == str(value)
    assert convert(body, "event_request")["event_id"] == str(value)


def test_string_id_to_string_target_is_forwarded_as_written() -> None:
    """A string id going to a string target keeps its exact spelling (leading zeros too)."""
    out = convert(legacy(execution_id="007", event_id="-0"), "event_request")
    assert (out["execution_id"], out["event_id"]) == ("007", "-0")
    assert convert(legacy(execution_id="007"), "executor_event")["execution_id"] == 7


@pytest.mark.parametrize(
    "value",
    [
        "+5",
        " 5",
        "5 ",
        "1e3",
        "0x10",
        "",
        "abc",
        1.5,
        1.0,
        True,
        False,
        None,
        [1],
        {"a": 1},
        str(I64_MAX + 1),
        str(I64_MIN - 1),
        I64_MAX + 1,
        2**64 - 1,
    ],
)
def test_invalid_execution_ids_are_refused_naming_the_field(value: Any) -> None:
    """Floats, booleans, null, containers, odd strings and out-of-range ids are refused."""
    error = refused_error(legacy(execution_id=value), "event_request")
    assert (error.code, error.field, error.http_status) == ("invalid_id", "execution_id", 422)


def test_integers_beyond_64_bits_are_refused_before_becoming_floats() -> None:
    """An id or a nested integer beyond 64 bits is refused, not silently turned into a float."""
    body = b'{"execution_id": 18446744073709551616, "step": "s", "name": "x"}'
    assert refused_error(body).code == "invalid_id"
    nested = (
        b'{"execution_id": 1, "step": "s", "name": "x", "payload": {"n": -99999999999999999999}}'
    )
    error = refused_error(nested)
    assert (error.code, error.field) == ("invalid_field_type", "payload")
    in_string = (
        b'{"execution_id": 1, "step": "s", "name": "x", "payload": {"n": "99999999999999999999"}}'
    )
    assert convert(in_string, "executor_event")["context"] == {"n": "99999999999999999999"}


@pytest.mark.parametrize(
    ("number", "refused"),
    [
        (b"-9223372036854775808", False),  # i64 min
        (b"18446744073709551615", False),  # u64 max
        (b"-9223372036854775809", True),  # below i64 min: 19 digits
        (b"18446744073709551616", True),
        (b"1e-100000000000000000000", False),  # exponent digits are not an integer
        (b"1.0000000000000000000001", False),
        (b"12345678901234567890123.5", False),
    ],
)
def test_nested_integer_range(number: bytes, refused: bool) -> None:
    """Nested integers must fit 64 bits (signed or unsigned); floats of any length pass."""
    raw = b'{"execution_id": 1, "step": "s", "name": "x", "payload": {"n": ' + number + b"}}"
    if refused:
        assert refused_error(raw).code == "invalid_field_type"
    else:
        assert b'{"n": ' + number + b"}" in ENGINE.convert_event(raw, "executor_event").body


def test_null_event_id_counts_as_absent() -> None:
    """`event_id: null` is no id: the canonical target mints one, the legacy target omits it."""
    assert isinstance(convert(legacy(event_id=None), "executor_event")["event_id"], int)
    assert "event_id" not in convert(legacy(event_id=None), "event_request")


# --- minting ----------------------------------------------------------------------------


def test_event_id_is_minted_only_for_the_canonical_target_by_default() -> None:
    """`mint: auto` mints for executor_event only; the minted id uses the app snowflake layout."""
    out = convert(legacy(), "executor_event")
    minted = out["event_id"]
    ms = (minted >> 22) + 1_704_067_200_000
    assert abs(ms - datetime.now(UTC).timestamp() * 1000) < 60_000
    assert "event_id" not in convert(legacy(), "event_request")


@pytest.mark.parametrize(("mode", "minted"), [("always", True), ("never", False)])
def test_mint_mode_is_configurable(mode: Any, minted: bool) -> None:
    """`always` mints for the legacy target too; `never` leaves the canonical target without id."""
    engine = Engine(RULES, EngineOptions(mint=mode, machine_id=7))
    assert ("event_id" in convert(legacy(), "event_request", engine)) is minted
    out = convert(legacy(), "executor_event", engine)
    assert ("event_id" in out) is minted
    if minted:
        assert (int(out["event_id"]) >> 12) & 0x3FF == 7
    conversion = engine.convert_event(json.dumps(legacy()).encode(), "executor_event")
    assert conversion.event_id_minted is minted


# --- aliases and key order ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "pair"),
    [
        ({"payload": {}, "context": {}}, "context"),
        ({"event_type": "x"}, "event_type"),
        ({"node_name": "s"}, "step"),
    ],
)
def test_alias_pairs_are_refused_error(extra: dict[str, Any], pair: str) -> None:
    """Both names of one field in one body is `conflicting_fields`; the proxy never guesses."""
    error = refused_error(legacy(**extra), "event_request")
    assert (error.code, error.field) == ("conflicting_fields", pair)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(
            b'{"execution_id":1,"step":"s","event_type":"e","x":1,"x":2}', "x", id="compact"
        ),
        pytest.param(
            b'{\n  "execution_id": 1,\n  "step": "s",\n  "event_type": "e",\n  "payload":'
            b' {"a": 1},\n  "payload": {"b": 2}\n}',
            "payload",
            id="pretty",
        ),
        pytest.param(
            b'{"execution_id":1,"step":"s","event_type":"e","\\u0078":1,"x":2}',
            "x",
            id="escaped-spelling",
        ),
        pytest.param(
            b'{"execution_id":1,"step":"s","event_type":"e","meta":{"k":1,"k":2}}',
            "meta.k",
            id="in-meta",
        ),
    ],
)
def test_a_repeated_key_is_refused_not_guessed(body: bytes, field: str) -> None:
    """A key given twice in an object the proxy rewrites would lose a value: refused."""
    error = refused_error(body)
    assert (error.code, error.field) == ("conflicting_fields", field)
    assert "appears more than once" in error.message


def test_a_repeated_key_in_a_batch_item_refuses_the_batch() -> None:
    """The same check runs on every batch item, and names the item."""
    body = (
        b'{"execution_id":1,"events":[{"step":"s","name":"e"},{"step":"s","name":"e","step":"t"}]}'
    )
    with pytest.raises(EnvelopeError) as caught:
        ENGINE.convert_batch(body, "executor_event")
    assert (caught.value.code, caught.value.index) == ("invalid_batch_item", 1)


def test_repeated_keys_inside_forwarded_values_are_left_to_the_upstream() -> None:
    """Values the proxy does not rewrite are forwarded as written, repetitions included."""
    body = b'{"execution_id":1,"step":"s","event_type":"e","payload":{"a":1,"a":2}}'
    out = ENGINE.convert_event(body, "event_request").body
    assert b'"payload":{"a":1,"a":2}' in out


def test_canonical_target_key_order_and_pass_through() -> None:
    """Canonical keys come in contract order, then unknown keys unchanged in input order."""
    body = legacy(
        zeta=1, worker_id="w", payload={"a": [1.50, 1e2]}, alpha={"n": None}, meta={"k": "v"}
    )
    out = convert(body, "executor_event")
    assert list(out) == [
        "execution_id",
        "event_type",
        "step",
        "status",
        "created_at",
        "context",
        "event_id",
        "worker_id",
        "meta",
        "zeta",
        "alpha",
    ]
    assert "name" not in out
    assert "payload" not in out


def test_legacy_target_key_order() -> None:
    """The legacy body writes its keys in the contract's order, then the unknown ones."""
    out = convert(
        canonical(event_id=5, worker_id="w", meta={"attempts": 3}, extra=True), "event_request"
    )
    assert list(out) == [
        "execution_id",
        "step",
        "name",
        "payload",
        "meta",
        "worker_id",
        "event_id",
        "status",
        "created_at",
        "extra",
    ]
    assert "event_type" not in out
    assert "context" not in out


def test_nested_numbers_keep_their_exact_text() -> None:
    """Values the target does not rename are copied byte for byte: `1e2` stays `1e2`."""
    raw = (
        b'{"execution_id": 1, "step": "s", "name": "x",'
        b' "payload": {"a": 1e2, "b": 1.50, "c": "\\u00e9"}}'
    )
    assert (
        b'{"a": 1e2, "b": 1.50, "c": "\\u00e9"}' in ENGINE.convert_event(raw, "executor_event").body
    )


def test_context_absent_is_null_for_canonical_and_omitted_for_legacy() -> None:
    """No context/payload: `context: null` for executor_event, no `payload` for event_request."""
    assert convert(legacy(), "executor_event")["context"] is None
    assert "payload" not in convert(legacy(), "event_request")


def test_null_and_primitive_context_are_kept() -> None:
    """A null or primitive payload is carried as it is; a null payload to legacy is left out."""
    assert convert(legacy(payload=None), "executor_event")["context"] is None
    assert convert(legacy(payload=7), "event_request")["payload"] == 7
    assert "payload" not in convert(canonical(context=None), "event_request")


# --- status and meta -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("call.done", "COMPLETED"),
        ("step.exit", "COMPLETED"),
        ("playbook.completed", "COMPLETED"),
        ("call.error", "FAILED"),
        ("command.failed", "FAILED"),
        ("command.started", "RUNNING"),
        ("playbook.completed_with_errors", "COMPLETED"),
        ("Call.DONE", "RUNNING"),
    ],
)
def test_absent_status_is_derived_from_the_event_type(event_type: str, status: str) -> None:
    """The Rust rule: done/exit/completed, then error/failed, else RUNNING (case-sensitive)."""
    assert convert(legacy(name=event_type), "executor_event")["status"] == status


def test_status_derivation_sees_through_escapes() -> None:
    """An escaped event type (`call.d\\u006fne`) derives like its plain spelling."""
    raw = b'{"execution_id": 1, "step": "s", "name": "call.d\\u006fne"}'
    assert convert(raw, "executor_event")["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("success", "COMPLETED"),
        ("OK", "COMPLETED"),
        ("Done", "COMPLETED"),
        ("failure", "FAILED"),
        ("error", "ERROR"),
        ("timeout", "ERROR"),
        ("canceled", "CANCELLED"),
        ("cancelled", "CANCELLED"),
    ],
)
def test_status_is_normalised_and_the_original_kept(given: str, normalised: str) -> None:
    """Normalised statuses keep the original in meta.original_status."""
    out = convert(canonical(status=given), "executor_event")
    assert out["status"] == normalised
    assert out["meta"] == {"attempts": 1, "original_status": given}


@pytest.mark.parametrize("given", ["COMPLETED", "REPLAYED", "RATE_LIMITED", "STARTED"])
def test_canonical_and_unknown_statuses_pass_unchanged(given: str) -> None:
    """A status already canonical, or not in the table, is not touched and adds no original."""
    out = convert(canonical(status=given), "executor_event")
    assert out["status"] == given
    assert "original_status" not in out["meta"]


def test_status_normalisation_can_be_turned_off() -> None:
    """With normalisation off, `success` passes unchanged."""
    engine = Engine(RULES, EngineOptions(normalise_status=False))
    assert convert(canonical(status="success"), "executor_event", engine)["status"] == "success"


def test_meta_attempts_is_added_only_where_missing() -> None:
    """attempts:1 is added to an absent meta or an object without it; never overwritten."""
    assert convert(canonical(), "executor_event")["meta"] == {"attempts": 1}
    assert convert(canonical(meta={"emitter": "x"}), "executor_event")["meta"] == {
        "emitter": "x",
        "attempts": 1,
    }
    assert convert(canonical(meta={"attempts": 4}), "executor_event")["meta"] == {"attempts": 4}


@pytest.mark.parametrize("meta", ["text", 5, [1, 2]])
def test_meta_that_is_not_an_object_is_never_touched(meta: Any) -> None:
    """A non-object meta gets neither attempts nor original_status."""
    out = convert(canonical(meta=meta, status="success"), "executor_event")
    assert out["meta"] == meta
    assert out["status"] == "COMPLETED"


def test_unchanged_meta_keeps_its_bytes() -> None:
    """A meta that needs no change is copied byte for byte."""
    raw = orjson.dumps(canonical()).replace(b"}}", b'}, "meta": {"attempts" : 2.0e0}}')
    assert b'"meta":{"attempts" : 2.0e0}' in ENGINE.convert_event(raw, "executor_event").body


# --- timestamps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-06-05T12:00:00Z",
        "2026-06-05T12:00:00.1Z",
        "2026-06-05T12:00:00.123Z",
        "2026-06-05T12:00:00.123456+05:30",
        "2026-06-05T12:00:00.123456789-08:00",
        "2016-12-31T23:59:60Z",
        "2024-02-29T00:00:00z",
    ],
)
def test_valid_timestamps_are_forwarded_exactly(stamp: str) -> None:
    """RFC 3339 with an offset passes byte for byte, whatever its fractional digits."""
    for target in ("executor_event", "event_request"):
        assert convert(canonical(created_at=stamp), target)["created_at"] == stamp


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-06-05T12:00:00",
        "2026-06-05 12:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-06-05T24:00:00Z",
        "2026-06-05T12:00:00+5:30",
        "2026-06-05",
        "yesterday",
        "2026-06-05T12:00:00.Z",
    ],
)
def test_invalid_timestamps_are_refused_error(stamp: str) -> None:
    """A timestamp without offset, or not a real RFC 3339 date-time, is `invalid_timestamp`."""
    error = refused_error(canonical(created_at=stamp))
    assert (error.code, error.field) == ("invalid_timestamp", "created_at")


def test_default_clock_stamps_now_in_utc_microseconds() -> None:
    """Without a fixed clock, stamps are the current UTC time with six digits and `Z`."""
    engine = Engine(RULES)
    before = datetime.now(UTC)
    stamps = [convert(legacy(), "event_request", engine)["created_at"] for _ in range(3)]
    after = datetime.now(UTC)
    for stamp in stamps:
        assert len(stamp) == len("2026-06-05T12:00:00.123456Z")
        assert stamp.endswith("Z")
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert before.replace(microsecond=0) <= moment <= after
    assert stamps == sorted(stamps)


def test_absent_created_at_is_stamped_in_utc() -> None:
    """No created_at: the proxy stamps the receive time, UTC with a `Z`."""
    assert convert(legacy(), "event_request")["created_at"] == "2026-06-05T12:00:00.123456Z"


# --- shapes and errors ------------------------------------------------------------------------


def test_emit_request_is_detected_and_node_name_becomes_step() -> None:
    """A broker-field body is an emit_request; node_name feeds step; broker fields pass through."""
    body = {
        "execution_id": "5",
        "event_type": "step_started",
        "node_name": "n1",
        "node_id": "9",
        "duration": 1.5,
    }
    raw = json.dumps(body).encode()
    assert ENGINE.detect(raw).shape == "emit_request"
    out = convert(raw, "executor_event")
    assert (out["step"], out["node_id"], out["duration"]) == ("n1", "9", 1.5)
    assert "node_name" not in out


def test_emit_request_without_node_name_gets_the_default_step() -> None:
    """An emit_request with no step takes the default step from the rules."""
    body = {"execution_id": 5, "name": "info", "error": "boom"}
    assert convert(body, "event_request")["step"] == RULES.defaults.step


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        (b"", "invalid_json", 400),
        (b"{", "invalid_json", 400),
        (b'{"a":1} x', "invalid_json", 400),
        (b"\xef\xbb\xbf{}", "invalid_json", 400),
        (b'{"a":"\xff"}', "invalid_json", 400),
        (b'{"a":NaN}', "invalid_json", 400),
        (b"[1]", "not_an_object", 422),
        (b'"s"', "not_an_object", 422),
        (b"null", "not_an_object", 422),
        (b"{}", "unknown_shape", 422),
    ],
)
def test_bad_bodies_get_stable_codes(body: bytes, code: str, status: int) -> None:
    """Malformed or non-object bodies get their code and HTTP status."""
    error = refused_error(body)
    assert (error.code, error.http_status) == (code, status)


def test_unknown_body_names_the_closest_shape_and_what_it_lacks() -> None:
    """An unknown body is refused with the closest shape and the missing field."""
    error = refused_error({"execution_id": "1", "event_type": "x"})
    assert error.message == "looks like event_request: missing field step"


def test_wrong_field_types_are_refused_error() -> None:
    """A non-string step or event type is `invalid_field_type`, naming the alias used."""
    error = refused_error(legacy(step=5))
    assert (error.code, error.field) == ("invalid_field_type", "step")
    assert "sent as name" in refused_error(legacy(name=["x"])).message


@pytest.mark.parametrize("depth", [63, 64])
def test_nesting_up_to_the_limit_is_accepted(depth: int) -> None:
    """Bodies nested up to the configured depth convert."""
    nested = b"[" * (depth - 1) + b"]" * (depth - 1)
    raw = b'{"execution_id":1,"step":"s","name":"x","payload":' + nested + b"}"
    assert ENGINE.convert_event(raw, "event_request").body.endswith(
        nested
        + b',"meta":{"attempts":1},"status":"RUNNING","created_at":"2026-06-05T12:00:00.123456Z"}'
    )


@pytest.mark.parametrize("depth", [65, 1024, 100_000])
def test_deeper_nesting_is_refused_without_recursion(depth: int) -> None:
    """Bodies deeper than the limit are `too_deep`, even far beyond any parser's recursion."""
    raw = b'{"payload":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    assert refused_error(raw).code == "too_deep"


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    """Brackets and escaped quotes inside strings are not nesting."""
    text = '[[[[\\"{{' * 40
    body = {"execution_id": 1, "step": "s", "name": "x", "payload": {"t": text}}
    assert convert(body, "executor_event")["context"] == {"t": text}


def test_batch_body_on_the_event_endpoint_is_refused_error() -> None:
    """A batch sent to /api/events is refused and pointed at /api/events/batch."""
    error = refused_error({"execution_id": "1", "events": []})
    assert error.code == "unknown_shape"
    assert "/api/events/batch" in error.message


# --- batch ---------------------------------------------------------------------------------


def batch(events: list[Any], **extra: Any) -> bytes:
    return json.dumps({"execution_id": "478775660589088776", "events": events, **extra}).encode()


def test_batch_items_get_the_target_aliases() -> None:
    """Items are renamed per target and keep their other keys; execution_id gets the target type."""
    raw = batch(
        [{"node_name": "s", "name": "a", "context": {"x": 1}, "actionable": False}],
        worker_id="w",
        catalog_id=3,
    )
    canonical_out = json.loads(ENGINE.convert_batch(raw, "executor_event").body)
    assert canonical_out == {
        "execution_id": 478775660589088776,
        "events": [{"step": "s", "event_type": "a", "context": {"x": 1}, "actionable": False}],
        "worker_id": "w",
        "catalog_id": 3,
    }
    legacy_out = json.loads(ENGINE.convert_batch(raw, "event_request").body)
    assert legacy_out["execution_id"] == "478775660589088776"
    assert legacy_out["events"] == [
        {"step": "s", "name": "a", "payload": {"x": 1}, "actionable": False}
    ]


def test_batch_over_the_cap_is_refused_error() -> None:
    """More items than the cap is `batch_too_large` (413)."""
    engine = Engine(RULES, EngineOptions(batch_max_items=2))
    with pytest.raises(EnvelopeError) as caught:
        engine.convert_batch(batch([{"step": "s", "name": "a"}] * 3), "event_request")
    assert (caught.value.code, caught.value.http_status) == ("batch_too_large", 413)
    assert (
        engine.convert_batch(batch([{"step": "s", "name": "a"}] * 2), "event_request").batch_size
        == 2
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "a"},
        {"step": "s", "name": "a", "event_type": "b"},
        "text",
        {"step": 1, "name": "a"},
    ],
)
def test_one_bad_item_refuses_the_whole_batch(bad: Any) -> None:
    """An invalid item rejects the batch, naming its index; nothing is converted half."""
    with pytest.raises(EnvelopeError) as caught:
        ENGINE.convert_batch(batch([{"step": "s", "name": "a"}, bad]), "executor_event")
    assert (caught.value.code, caught.value.index) == ("invalid_batch_item", 1)
    assert caught.value.message.startswith("events[1]: ")


def test_batch_item_null_context_is_left_to_the_legacy_default() -> None:
    """A null item context becomes no payload for the legacy target, null for the canonical."""
    raw = batch([{"step": "s", "name": "a", "context": None}])
    assert json.loads(ENGINE.convert_batch(raw, "event_request").body)["events"] == [
        {"step": "s", "name": "a"}
    ]
    canonical_items = json.loads(ENGINE.convert_batch(raw, "executor_event").body)["events"]
    assert canonical_items == [{"step": "s", "event_type": "a", "context": None}]


def test_escaped_status_is_normalised_like_its_plain_spelling() -> None:
    """`succ\\u0065ss` is `success`: normalised, with the decoded original kept."""
    raw = orjson.dumps(canonical(status="X")).replace(b'"X"', b'"succ\\u0065ss"')
    out = convert(raw, "executor_event")
    assert (out["status"], out["meta"]["original_status"]) == ("COMPLETED", "success")
