"""Planned and general conversion agree on generated bodies near every shape (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from proxy.envelope import TARGETS, Conversion
from tests.planned import assert_same, engine_pair

SHARED = engine_pair()  # one pair across examples: plans compiled earlier stay in use
I64 = st.integers(-(2**63), 2**63 - 1)

TEMPLATES: list[list[tuple[str, Any]]] = [
    [
        ("execution_id", 478775660589088776),
        ("event_type", "command.completed"),
        ("step", "fetch"),
        ("status", "COMPLETED"),
        ("created_at", "2026-05-31T03:14:15Z"),
        ("context", {"items": 42}),
        ("event_id", 478775660589088777),
        ("worker_id", "worker-prod-7"),
        ("meta", {"attempts": 2}),
    ],
    [
        ("execution_id", "478775660589088776"),
        ("step", "fetch"),
        ("name", "call.done"),
        ("payload", {"result": 1}),
        ("worker_id", "w"),
        ("event_id", None),
        ("actionable", True),
    ],
    [("execution_id", "1"), ("event_type", "step_completed"), ("node_name", "n"), ("duration", 1)],
    [
        ("event_type", "call.done"),
        ("execution_id", 1),
        ("payload", {"step": "s", "worker_id": "w"}),
    ],
    [
        ("execution_id", "1"),
        ("worker_id", "w"),
        ("events", [{"step": "s", "name": "n", "payload": {}}, {"step": "t", "event_type": "e"}]),
    ],
]
KEYS = sorted({key for template in TEMPLATES for key, _ in template} | {"node_id", "x", "stép"})


@st.composite
def stamps(draw: st.DrawFn) -> str:
    year = draw(st.sampled_from([0, 2024, 2026]))
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    fraction = draw(st.sampled_from(["", ".1", ".123456789"]))
    offset = draw(st.sampled_from(["Z", "z", "+05:30", "-24:00", ""]))
    return f"{year:04d}-{month:02d}-{day:02d}T12:34:56{fraction}{offset}"


leaves = st.one_of(
    st.none(),
    st.booleans(),
    I64,
    I64.map(str),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["COMPLETED", "success", "Ok", "error", "Done", "call.error", "step.exit"]),
    stamps(),
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=8,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A template with members dropped, reordered, retyped, added or repeated, written
    compact or spaced."""
    pairs = []
    for key, value in draw(st.permutations(draw(st.sampled_from(TEMPLATES)))):
        action = draw(st.sampled_from(["keep"] * 12 + ["drop", "change"]))
        if action != "drop":
            pairs.append((key, draw(values) if action == "change" else value))
    extra_keys = st.sampled_from(["x", "stép", "node_id", "result_kind"]) | st.sampled_from(KEYS)
    pairs += draw(st.lists(st.tuples(extra_keys, values), max_size=2))
    comma, colon = draw(st.sampled_from([(",", ":"), (", ", ": "), (",\n  ", " : ")]))
    # ensure_ascii escapes a non-ASCII key (and any value's text): escaped keys as well.
    ascii_only = draw(st.booleans())
    members = [
        json.dumps(key, ensure_ascii=ascii_only)
        + colon
        + json.dumps(value, ensure_ascii=ascii_only)
        for key, value in pairs
    ]
    return ("{" + comma.join(members) + "}").encode()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(bodies(), st.sampled_from(TARGETS), st.booleans())
def test_planned_and_general_agree(body: bytes, target: str, batch: bool) -> None:
    """Any such body, to either target and endpoint, fresh or after many other layouts."""
    result = assert_same(engine_pair(), body, target, batch=batch)
    assert_same(SHARED, body, target, batch=batch)
    event(result.shape if isinstance(result, Conversion) else result[1])
