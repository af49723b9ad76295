"""Plans per key layout give the general path's bytes and errors, body for body."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest

from proxy.envelope import TARGETS, Conversion
from proxy.envelope.plan import MAX_LAYOUTS, MAX_STATUSES
from proxy.envelope.timestamps import plain_timestamp, validate_timestamp
from tests.builders import canonical_body, legacy_body
from tests.planned import Outcome, assert_same, engine_pair
from tests.samples import SAMPLES_DIR

SAMPLES = sorted(path.name for path in SAMPLES_DIR.iterdir() if path.name != "INDEX.md")


def compact(data: dict[str, Any] | bytes) -> bytes:
    if isinstance(data, bytes):
        data = json.loads(data)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def canonical(**changes: Any) -> dict[str, Any]:
    extras = {"event_id": 478775660589088777, "worker_id": "worker-prod-7", "meta": {"attempts": 2}}
    return canonical_body(**{**extras, **changes})


def legacy(**changes: Any) -> dict[str, Any]:
    extras = {"payload": {"result": 1}, "worker_id": "worker-cpu-01", "actionable": True}
    return legacy_body(**{**extras, **changes})


def batch(*items: Any, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "execution_id": "478775660589088776",
        "worker_id": "worker-cpu-01",
        "events": list(items) or [{"step": "fetch", "name": "call.done", "payload": {}}],
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not ...}


WRONG: list[Any] = [None, 7, -0.5, 1e3, "x", "12", True, {}, [], {"a": [1]}]
FIELDS = [*canonical(), "payload", "name", "node_name", "actionable"]


def variations() -> list[bytes]:
    """Bodies near the common ones: every field missing, null or of each wrong type,
    aliases, key orders, escaped and non-ASCII keys, statuses, timestamps, metas."""
    bodies: list[bytes] = []
    for base in (canonical(), legacy()):
        keys = list(base)
        bodies += [
            compact({k: base[k] for k in order}) for order in (keys[::-1], keys[3:] + keys[:3])
        ]
        for key in keys:
            bodies.append(compact({k: v for k, v in base.items() if k != key}))
            bodies += [compact({**base, key: wrong}) for wrong in WRONG]
        bodies += [compact({**base, key: value}) for key in FIELDS for value in ("s", 1, None)]
        bodies.append(json.dumps(base, indent=2).encode())
    bodies += [
        compact(canonical(event_type=..., name="call.done")),
        compact(canonical(context=..., payload={"p": 1})),
        compact(canonical(payload={"p": 1})),
        compact(canonical(step=..., node_name="fetch")),
        compact(legacy(event_type="call.done")),
        compact(legacy(context=None)),
        compact(legacy(payload=None)),
        compact(legacy(node_name="n")),
        compact(legacy(execution_id="0042", event_id="-7")),
        compact(legacy(execution_id="-0", event_id=" 1")),
        compact(legacy(execution_id="١٢")),
        compact(legacy(step=..., node_name="fetch")),
        compact(legacy(step=..., node_name="fetch", node_id="1", name=...)),
        compact({"execution_id": "1", "event_type": "step_completed", "duration": 0.4}),
        compact({"execution_id": 1, "event_type": "call.done", "payload": {"step": "s"}}),
        compact({"execution_id": 1, "event_type": "call.done", "payload": None}),
        compact({"execution_id": 1, "event_type": "x", "payload": {"command_id": "1:st:2"}}),
        compact({"execution_id": 1, "event_type": "x", "payload": {"worker_id": 5}}),
        compact({"execution_id": 1, "event_type": "x", "payload": {"step": None}}),
        compact({"event_type": "x", "payload": {}}),
        compact({"execution_id": 1, "payload": {}}),
        b"[]",
        b'"x"',
        b"{}",
        b"{",
        b"",
        b'{"execution_id":1,"event_type":"\xff"}',
    ]
    for status in ("success", "Ok", "DONE", "timeout", "weird", "\\u0073uccess", "ÉCHEC", ""):
        bodies.append(compact(canonical(status=status)).replace(b"\\\\", b"\\"))
        bodies.append(compact(canonical(status=status, meta=...)).replace(b"\\\\", b"\\"))
        bodies.append(compact(canonical(status=status, meta="m")).replace(b"\\\\", b"\\"))
        bodies.append(compact(canonical(status=status, meta={"original_status": "x"})))
        bodies.append(compact(legacy(status=status)))
    for event_type in ("step.exit", "call.error", "command.started", "\\u0064one", "ok"):
        bodies.append(compact(legacy(name=event_type)).replace(b"\\\\", b"\\"))
        bodies.append(compact(canonical(event_type=event_type, status=None)))
    for stamp in (
        "2026-02-29T00:00:00Z",
        "2024-02-29T00:00:00Z",
        "2026-04-30T00:00:00+02:00",
        "2026-04-31T00:00:00Z",
        "2026-12-31T23:59:60.123456789-08:00",
        "0000-01-31T00:00:00Z",
        "0000-01-28T00:00:00Z",
        "2026-06-05T12:00:00",
        "2026-06-05 12:00:00Z",
        "2026-06-05t12:00:00z",
        "\\u0032026-06-05T12:00:00Z",
        "2026-13-01T00:00:00Z",
    ):
        bodies.append(compact(canonical(created_at=stamp)).replace(b"\\\\", b"\\"))
        bodies.append(compact(legacy(created_at=stamp)).replace(b"\\\\", b"\\"))
    for meta in ({}, {"attempts": 1}, {"x": {"attempts": 1}}, {"a": 1, "b": {}}, [1], "m", 3):
        bodies.append(compact(canonical(meta=meta)))
        bodies.append(compact(legacy(meta=meta, status="ok")))
    big = {"u64": 2**64 - 1, "over": 2**64, "under": -(2**63) - 1}
    for name, number in big.items():
        bodies.append(compact(canonical(execution_id=number)))
        bodies.append(compact(canonical(event_id=number)))
        bodies.append(compact(canonical(**{f"extra_{name}": number})))
        bodies.append(compact(canonical(context={"deep": [number]})))
    bodies.append(compact(canonical(execution_id=2**63)))
    bodies.append(compact(legacy(execution_id=str(2**63))))
    for depth in (63, 64, 65, 200):
        nested: Any = 1
        for _ in range(depth):
            nested = [nested]
        bodies.append(compact(canonical(context=nested)))
    raw = compact(canonical())
    bodies += [
        raw[:-1] + b',"step":"again"}',
        raw[:-1] + b', "step" : "again" }',
        raw.replace(b'"step"', b'"st\\u0065p"'),
        raw.replace(b'"step"', b'"st\\u0065p"', 1)[:-1] + b',"step":"x"}',
        raw[:-1] + b',"st\\u00e9p":1,"\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87":"\xd0\xb7"}',
        raw.replace(b'{"attempts":2}', b'{"attempts":2,"attempts":3}'),
        raw.replace(b'{"attempts":2}', b'{"x":1,"x":2}'),
        raw.replace(b'"COMPLETED"', b'"ok"').replace(b'{"attempts":2}', b'{"x":1,"x":2}'),
        raw.replace(b":", b" : ").replace(b",", b" ,\n"),
        raw[:-1] + b',"execution_id":1}',
    ]
    return bodies


def batch_variations() -> list[bytes]:
    item = {"step": "fetch", "name": "call.done", "payload": {"r": 1}, "actionable": False}
    bodies = [
        compact(batch()),
        compact(batch(item, {"step": "s", "event_type": "e"})),
        compact(batch({"step": "s", "name": "n", "payload": None})),
        compact(batch({"step": "s", "name": "n", "context": None})),
        compact(batch({"step": "s", "name": "n", "event_type": "e"})),
        compact(batch({"step": "s", "name": "n", "payload": 1, "context": 2})),
        compact(batch({"step": 1, "name": "n"})),
        compact(batch({"step": "s", "name": None})),
        compact(batch({"name": "n"})),
        compact(batch({"step": "s", "name": "n", "node_name": "x"})),
        compact(batch("item")),
        compact(batch(*[item] * 300)),
        compact(batch(*[item] * 256)),
        compact(batch(execution_id=7, worker_id=5)),
        compact(batch(execution_id=None)),
        compact(batch(execution_id="x")),
        compact(batch(worker_id=...)),
        compact(batch(events=[])),
        compact(batch(events={})),
        compact(batch(step="s")),
        compact(batch(extra={"a": 1})),
        compact({"events": [item]}),
        json.dumps(batch(item, item), indent=1).encode(),
        compact(batch(item))[:-1] + b',"events":[]}',
        compact(batch(item)).replace(b'"actionable"', b'"step"'),
        compact(batch(item)).replace(b'"actionable"', b'"act\\u0069onable"'),
        compact(canonical()),
    ]
    return bodies


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("endpoint", ["event", "batch"])
def test_every_sample_converts_alike(name: str, target: str, endpoint: str) -> None:
    """Each sample, as stored and compacted, to each target and endpoint: same outcome."""
    raw = (SAMPLES_DIR / name).read_bytes()
    forms = [raw]
    if name.endswith(".json"):
        forms.append(compact(raw))
    for body in forms:
        assert_same(engine_pair(), body, target, batch=endpoint == "batch")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mint", ["auto", "always", "never"])
def test_crafted_variations_convert_alike(target: str, mint: str) -> None:
    """Each crafted event body, through fresh engines and through one shared pair."""
    shared = engine_pair(mint=mint)
    outcomes: list[Outcome] = []
    for body in variations():
        assert_same(engine_pair(mint=mint), body, target)
        outcomes.append(assert_same(shared, body, target))
    accepted = sum(isinstance(result, Conversion) for result in outcomes)
    assert 100 < accepted < len(outcomes) - 100  # both kinds well represented


@pytest.mark.parametrize("target", TARGETS)
def test_crafted_batches_convert_alike(target: str) -> None:
    """Each crafted batch body, through fresh engines and through one shared pair."""
    shared = engine_pair()
    for body in batch_variations():
        assert_same(engine_pair(), body, target, batch=True)
        assert_same(shared, body, target, batch=True)


@pytest.mark.parametrize("target", TARGETS)
def test_one_layout_valid_then_invalid_and_back(target: str) -> None:
    """A plan remembers keys, never values: a layout once accepted can be refused next."""
    pair = engine_pair()
    valid, invalid = compact(canonical()), compact(canonical(event_id="x"))
    first = assert_same(pair, valid, target)
    refused = assert_same(pair, invalid, target)
    assert isinstance(first, Conversion)
    assert refused[:2] == ("InvalidId", "invalid_id")
    assert isinstance(assert_same(pair, valid, target), Conversion)
    pair = engine_pair()
    assert not isinstance(assert_same(pair, invalid, target), Conversion)
    assert isinstance(assert_same(pair, valid, target), Conversion)


def test_a_refusal_spends_no_minted_id() -> None:
    """A body refused after its event id would be minted leaves the planned engine's
    minter where the general one's is: the next minted ids are equal."""
    pair = engine_pair()
    refused = compact(canonical(event_id=..., status="ok", meta={"x": 1, "y": 2})).replace(
        b'"y"', b'"x"'
    )
    assert assert_same(pair, refused, "executor_event")[1] == "conflicting_fields"
    accepted = assert_same(pair, compact(canonical(event_id=...)), "executor_event")
    assert isinstance(accepted, Conversion)
    assert accepted.event_id_minted


@pytest.mark.parametrize("target", TARGETS)
def test_more_layouts_than_the_bound(target: str) -> None:
    """Past MAX_LAYOUTS layouts the plans stop growing; every body still converts alike."""
    pair = engine_pair()
    bodies = [compact(canonical(**{f"extra_{n}": n})) for n in range(MAX_LAYOUTS + 40)]
    for index, body in enumerate(bodies):
        planned = index < MAX_LAYOUTS
        assert isinstance(assert_same(pair, body, target, planned=planned), Conversion)
    assert isinstance(assert_same(pair, bodies[0], target), Conversion)
    assert not isinstance(assert_same(pair, bodies[-1][:-1] + b",1}", target), Conversion)


@pytest.mark.parametrize("where", ["event", "batch", "item"])
def test_layouts_of_long_keys_are_not_kept(where: str) -> None:
    """Keys are client-chosen and may be as long as the body: a layout of long keys is
    converted alike by the general path and not kept by the plans."""
    pair = engine_pair()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(10):
            extra = {f"{number}" + "k" * 100_000: number}
            if where == "event":
                body, is_batch = compact(canonical(**extra)), False
            elif where == "batch":
                body, is_batch = compact(batch(**extra)), True
            else:
                item = {"step": "fetch", "name": "call.done", "payload": {}, **extra}
                body, is_batch = compact(batch(item)), True
            assert isinstance(
                assert_same(pair, body, TARGETS[0], batch=is_batch, planned=False), Conversion
            )
            del body, extra
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 300_000


def test_plain_timestamps_are_valid_ones() -> None:
    """Every date-time the plain pattern accepts, the full check accepts; most valid ones
    match it (days 29-31 of the months that have them included)."""
    plain = 0
    for year in (0, 1, 2024, 2026, 9999):
        for month in range(14):
            for day in range(33):
                text = f"{year:04d}-{month:02d}-{day:02d}T12:00:00Z"
                raw = json.dumps(text).encode()
                try:
                    validate_timestamp(text)
                except Exception:
                    assert plain_timestamp(raw) is None, text
                else:
                    plain += plain_timestamp(raw) is not None
    # Year 0 is valid up to the 28th only; of the other four years every real day matches
    # but 2024-02-29, which the full check settles.
    assert plain == 12 * 28 + 4 * 365


def test_more_values_than_the_caches_hold() -> None:
    """Distinct and long statuses, event types and metas, past the value caches' bounds,
    still convert alike."""
    pair = engine_pair()
    for n in range(MAX_STATUSES + 20):
        for body in (
            canonical(status=f"s{n}", meta={"n": n}),
            canonical(status=None, event_type=f"e{n}.done"),
            canonical(status="Ok" + " " * 300 + str(n), meta={"n": "x" * 300}),
        ):
            assert isinstance(assert_same(pair, compact(body), "executor_event"), Conversion)
