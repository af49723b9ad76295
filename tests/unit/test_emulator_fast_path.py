"""The shortcut for ordinary Rust bodies never disagrees with the exact serde reader."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.emulator.profiles import PROFILES
from proxy.emulator.serde.fast import fast_deserialize
from proxy.emulator.serde.schema import Rejection, Struct
from proxy.emulator.serde.structs import exact_deserialize
from tests.samples import SAMPLES_DIR

STRUCTS: list[tuple[str, Struct]] = []
for _name, _spec in PROFILES.items():
    if _spec.event_struct is not None and _spec.batch_struct is not None:
        STRUCTS += [(f"{_name}/event", _spec.event_struct), (f"{_name}/batch", _spec.batch_struct)]

KEYS = [
    "execution_id",
    "step",
    "event_type",
    "name",
    "payload",
    "context",
    "meta",
    "worker_id",
    "event_id",
    "status",
    "created_at",
    "actionable",
    "informative",
    "event_ids",
    "result_kind",
    "events",
    "x",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["2026-06-05T12:00:00Z", "2026-06-05T12:00:00", "-0", "+5", "0"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
ITEM = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6)
FIELDS = st.dictionaries(st.sampled_from(KEYS), VALUES | st.lists(ITEM, max_size=3), max_size=10)
# Mostly valid bodies (a valid base with a few fields overlaid) reach the accepting paths.
BASES = st.sampled_from(
    [
        {"execution_id": "1", "step": "s", "event_type": "e"},
        {"execution_id": 7, "step": "s", "name": "e"},
        {"execution_id": "1", "events": [{"step": "s", "name": "e"}]},
    ]
)
OVERLAYS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3)
BODIES = FIELDS | st.builds(lambda base, extra: {**base, **extra}, BASES, OVERLAYS)


def check_agreement(body: bytes, struct: Struct) -> bool:
    """True when the shortcut answered (and then agrees with the exact reader)."""
    fast = fast_deserialize(body, struct)
    if fast is None:
        return False
    exact = exact_deserialize(body, struct)
    assert not isinstance(exact, Rejection), (body, exact)
    assert fast == exact
    return True


def test_samples_agree() -> None:
    """On every shared sample the shortcut either steps aside or gives the exact values."""
    answered = 0
    for path in sorted(SAMPLES_DIR.glob("*.json")):
        for _, struct in STRUCTS:
            answered += check_agreement(path.read_bytes(), struct)
    assert answered > 20  # the shortcut does carry the ordinary samples


@pytest.mark.parametrize(
    "body",
    [
        b'{"execution_id":-0,"step":"s","event_type":"e"}',
        b'{"execution_id":18446744073709551616,"step":"s","event_type":"e"}',
        b'{"execution_id":"1","step":"s","event_type":"e","event_ids":[-0]}',
        b'{"execution_id":"1","step":"s","event_type":"e","step":"t"}',
        b'{"execution_id":"1","step":"s","event_type":"e","x":NaN}',
        b'{"execution_id":"1","step":"s","event_type":"e","x":"\\ud800"}',
        b'{"execution_id":"1","step":"s","event_type":"e","payload":'
        + b"[" * 127
        + b"]" * 127
        + b"}",
        b'["1","s","e"]',
        b"null",
        b'"text"',
        b"5",
    ],
)
def test_unusual_bodies_go_to_the_exact_reader(body: bytes) -> None:
    """Zeros written as `-0`, big integers, repeated keys, odd literals, deep nesting and
    structs written as arrays are left to the exact reader."""
    for _, struct in STRUCTS:
        assert fast_deserialize(body, struct) is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=BODIES)
def test_generated_bodies_agree(content: dict[str, Any]) -> None:
    """On generated bodies the shortcut never accepts what the exact reader refuses."""
    body = json.dumps(content).encode()
    for _, struct in STRUCTS:
        check_agreement(body, struct)
