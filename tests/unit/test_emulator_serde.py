"""The Rust body layer: serde_json's error texts, paths and positions inside axum's `Json`."""

from __future__ import annotations

import pytest

from proxy.emulator.profiles import PROFILES, Decoded, Refusal, Route, decode_request
from proxy.emulator.serde.errors import ryu_format
from proxy.emulator.timestamps import chrono_rfc3339_problem
from tests.samples import sample_bytes

DATA = "Failed to deserialize the JSON body into the target type: "
SYNTAX = "Failed to parse the request body as JSON: "
HEAD = b'{"execution_id":"1","step":"s","event_type":"e"'


def refusal(profile: str, body: bytes, route: Route = "event") -> tuple[int, str]:
    outcome = decode_request(PROFILES[profile], route, "application/json", body)
    assert isinstance(outcome, Refusal), outcome
    assert outcome.content_type == "text/plain; charset=utf-8"
    return outcome.status, outcome.body.decode()


def accepted(profile: str, body: bytes, route: Route = "event") -> dict[str, object]:
    outcome = decode_request(PROFILES[profile], route, "application/json", body)
    assert isinstance(outcome, Decoded), outcome
    assert outcome.rust is not None
    return outcome.rust


def test_truncated_object_matches_the_axum_sample() -> None:
    """A lone `{` gets axum's 400 text, word for word as in the shared sample."""
    expected = sample_bytes("rust_error__axum_400_bad_json.txt").decode().strip()
    assert refusal("rust-2.19.1", b"{") == (400, expected)


def test_missing_step_matches_the_axum_sample() -> None:
    """A missing field is reported at the closing brace: column 62 of a 62-byte body."""
    body = b'{"execution_id":"47877566058908877","event_type":"step.enter"}'
    assert len(body) == 62
    expected = sample_bytes("rust_error__axum_422_missing_field.txt").decode().strip()
    assert refusal("rust-2.9.0", body) == (422, expected)


def test_integer_id_before_2_19_1_matches_the_axum_sample() -> None:
    """A wrong scalar is reported at its last byte, prefixed by its field path."""
    body = b'{"execution_id":    638758527854445253,"step":"s","event_type":"e"}'
    expected = sample_bytes("rust_error__axum_422_pre_v2_19_1_integer_id.txt").decode().strip()
    assert refusal("rust-2.9.0", body) == (422, expected)


@pytest.mark.parametrize(
    ("profile", "body", "expected"),
    [
        pytest.param(
            "rust-2.19.1",
            b'{"execution_id":18446744073709551616,"step":"s","event_type":"e"}',
            DATA + "execution_id: invalid type: floating point `1.8446744073709552e19`, expected"
            " a string or signed/unsigned integer representing a snowflake id at line 1 column 36",
            id="beyond-u64-is-a-float",
        ),
        pytest.param(
            "rust-2.19.1",
            b'{"execution_id":-0,"step":"s","event_type":"e"}',
            DATA + "execution_id: invalid type: floating point `-0.0`, expected a string or"
            " signed/unsigned integer representing a snowflake id at line 1 column 18",
            id="minus-zero-is-a-float",
        ),
        pytest.param(
            "rust-2.19.1",
            b'{"execution_id":[1],"step":"s","event_type":"e"}',
            DATA + "execution_id: invalid type: sequence, expected a string or signed/unsigned"
            " integer representing a snowflake id at line 1 column 17",
            id="array-id-refused-after-its-bracket",
        ),
        pytest.param(
            "rust-2.19.1",
            HEAD + b',"event_id":true}',
            DATA + "event_id: invalid type: boolean `true`, expected null, a string, or a"
            " signed/unsigned integer representing an optional snowflake id at line 1 column 63",
            id="boolean-event-id",
        ),
        pytest.param(
            "rust-2.9.0",
            HEAD + b',"event_id":478775660589088777}',
            DATA + "event_id: invalid type: integer `478775660589088777`, expected a string at"
            " line 1 column 77",
            id="integer-event-id-before-2.19.1",
        ),
        pytest.param(
            "rust-2.9.0",
            b'{"execution_id":"1","step":"s","name":"a","event_type":"e"}',
            DATA + "duplicate field `event_type` at line 1 column 54",
            id="alias-twice-is-a-duplicate-of-the-rust-name",
        ),
        pytest.param(
            "rust-2.9.0",
            HEAD + b',"payload":{},"context":{}}',
            DATA + "duplicate field `payload` at line 1 column 70",
            id="payload-and-context",
        ),
        pytest.param(
            "rust-1.0.3",
            b'{"execution_id":"1","step":"s","event_type":"e"}',
            DATA + "missing field `name` at line 1 column 48",
            id="v1-has-no-event_type-alias",
        ),
        pytest.param(
            "rust-2.9.0",
            HEAD + b',"created_at":"2026-06-05T12:00:00"}',
            DATA + "created_at: premature end of input at line 1 column 82",
            id="naive-timestamp",
        ),
        pytest.param(
            "rust-2.9.0",
            HEAD + b',"event_ids":["1"]}',
            DATA + 'event_ids[0]: invalid type: string "1", expected i64 at line 1 column 64',
            id="event-ids-are-numbers",
        ),
        pytest.param(
            "rust-2.9.0",
            HEAD + b',"event_ids":[9223372036854775808]}',
            DATA + "event_ids[0]: invalid value: integer `9223372036854775808`, expected i64"
            " at line 1 column 80",
            id="event-ids-are-i64",
        ),
        pytest.param(
            "rust-2.9.0",
            HEAD + b',"actionable":"yes"}',
            DATA + 'actionable: invalid type: string "yes", expected a boolean at line 1 column 66',
            id="lax-bool-refused",
        ),
        pytest.param(
            "rust-2.9.0",
            b"null",
            DATA + "invalid type: null, expected struct EventRequest at line 1 column 4",
            id="null-body",
        ),
        pytest.param(
            "rust-2.9.0",
            b'["1","s","e"]',
            DATA + "invalid length 4, expected struct EventRequest with 14 elements at line 1"
            " column 13",
            id="struct-as-short-array",
        ),
        pytest.param(
            "rust-2.9.0",
            b'{"execution_id":"1","events":[{"step":5,"name":"e"}]}',
            DATA
            + "events[0].step: invalid type: integer `5`, expected a string at line 1 column 39",
            id="batch-item-path",
        ),
    ],
)
def test_data_errors(profile: str, body: bytes, expected: str) -> None:
    """Type, alias and shape mismatches are 422 text with serde's message, path and place."""
    route: Route = "batch" if b'"events"' in body else "event"
    assert refusal(profile, body, route) == (422, expected)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            HEAD + b"} x",
            SYNTAX + "trailing characters at line 1 column 50",
            id="trailing-garbage-has-no-path",
        ),
        pytest.param(
            HEAD + b',"payload":{"a":[1,2 3]}}',
            SYNTAX + "payload.a: expected `,` or `]` at line 1 column 69",
            id="nested-path",
        ),
        pytest.param(
            HEAD + b',"payload":"\\ud800"}',
            SYNTAX + "payload: unexpected end of hex escape at line 1 column 66",
            id="lone-surrogate",
        ),
        pytest.param(
            HEAD + b',"payload":"\xff"}',
            SYNTAX + "payload: invalid unicode code point at line 1 column 61",
            id="invalid-utf8",
        ),
        pytest.param(
            HEAD + b',"payload":1e400}',
            SYNTAX + "payload: number out of range at line 1 column 63",
            id="float-overflow",
        ),
        pytest.param(
            HEAD + b',"payload":' + b"[" * 127 + b"]" * 127 + b"}",
            SYNTAX + "payload" + "[0]" * 126 + ": recursion limit exceeded at line 1 column 185",
            id="128th-container",
        ),
    ],
)
def test_syntax_errors(body: bytes, expected: str) -> None:
    """Malformed JSON is 400 text with serde's syntax message at serde's position."""
    assert refusal("rust-2.9.0", body) == (400, expected)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    """127 containers in total (the object plus 126 arrays) are within serde's limit."""
    values = accepted("rust-2.9.0", HEAD + b',"payload":' + b"[" * 126 + b"]" * 126 + b"}")
    assert values["payload"] is not None


def test_unknown_fields_are_skipped_laxly() -> None:
    """Undeclared fields are skipped without depth, UTF-8, surrogate or range checks."""
    deep = b"[" * 5000 + b"]" * 5000
    for junk in (deep, b'"\\ud800"', b'"\xff"', b"1e400"):
        values = accepted("rust-2.9.0", HEAD + b',"x":' + junk + b"}")
        assert "x" not in values


def test_u64_ids_pass_the_lax_decoder_as_strings() -> None:
    """From 2.19.1 an integer id is kept as its decimal string, even beyond i64."""
    values = accepted(
        "rust-2.19.1", b'{"execution_id":18446744073709551615,"step":"s","event_type":"e"}'
    )
    assert values["execution_id"] == "18446744073709551615"


def test_defaults_and_aliases() -> None:
    """`context` fills `payload`, `name` fills `event_type`, absent flags take defaults."""
    values = accepted("rust-2.9.0", b'{"execution_id":"1","step":"s","name":"e","context":[1]}')
    assert values["event_type"] == "e"
    assert values["payload"] == [1]
    assert values["actionable"] is True
    assert values["result_kind"] == "data"
    batch = accepted(
        "rust-2.9.0", b'{"execution_id":"1","events":[{"step":"s","name":"e"}]}', "batch"
    )
    assert batch["events"] == [
        {"step": "s", "event_type": "e", "payload": None, "actionable": False, "informative": True}
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.5, "1.5"),
        (100.0, "100.0"),
        (1e15, "1000000000000000.0"),
        (1e16, "1e16"),
        (4.787756605890888e17, "4.787756605890888e17"),
        (0.001, "0.001"),
        (1e-7, "1e-7"),
        (-2.5e-10, "-2.5e-10"),
    ],
)
def test_ryu_format(value: float, text: str) -> None:
    """Floats in error messages are printed the way the ryu crate prints them."""
    assert ryu_format(value) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2026-06-05T12:00:00Z", None),
        ("2026-06-05T12:00:00.123456789+05:30", None),
        ("2026-06-05 12:00:00z", None),
        ("2026-06-05T12:00:00", "premature end of input"),
        ("2026-06-05", "premature end of input"),
        ("2026-06-05X12:00:00Z", "input contains invalid characters"),
        ("2026-06-05T12:00:00Zjunk", "trailing input"),
        ("2026-02-30T12:00:00Z", "input is out of range"),
        ("yesterday", "input contains invalid characters"),
    ],
)
def test_chrono_rfc3339(text: str, problem: str | None) -> None:
    """`created_at` follows chrono's relaxed RFC 3339 parser, offset required."""
    assert chrono_rfc3339_problem(text) == problem
