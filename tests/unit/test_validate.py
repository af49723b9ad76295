"""The strict target validators refuse what the real servers refuse."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.envelope import EnvelopeError
from proxy.envelope.validate import validate_target

CANONICAL: dict[str, Any] = {
    "execution_id": 478775660589088776,
    "event_type": "call.done",
    "step": "s",
    "status": "COMPLETED",
    "created_at": "2026-06-05T12:00:00Z",
    "context": {"k": 1},
    "event_id": 1,
    "worker_id": "w",
    "meta": {"attempts": 1},
}
LEGACY: dict[str, Any] = {
    "execution_id": "478775660589088776",
    "step": "s",
    "name": "call.done",
    "payload": {"k": 1},
    "meta": {"attempts": 1},
    "worker_id": "w",
    "event_id": "1",
    "status": "COMPLETED",
    "created_at": "2026-06-05T12:00:00Z",
}


def changed(body: dict[str, Any], **changes: Any) -> bytes:
    out = {k: v for k, v in {**body, **changes}.items() if v is not ...}
    return orjson.dumps(out)


def test_valid_bodies_pass() -> None:
    """The reference bodies of both targets are valid."""
    validate_target("executor_event", orjson.dumps(CANONICAL))
    validate_target("event_request", orjson.dumps(LEGACY))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(changed(CANONICAL, execution_id="478775660589088776"), id="string-id"),
        pytest.param(changed(CANONICAL, execution_id=2**63), id="id-beyond-i64"),
        pytest.param(changed(CANONICAL, event_id=1.0), id="float-event-id"),
        pytest.param(changed(CANONICAL, context=...), id="no-context"),
        pytest.param(changed(CANONICAL, name="x"), id="name-in-canonical"),
        pytest.param(changed(CANONICAL, payload={}), id="payload-and-context"),
        pytest.param(changed(CANONICAL, created_at="2026-06-05T12:00:00"), id="no-offset"),
        pytest.param(changed(CANONICAL, worker_id=None), id="null-optional"),
        pytest.param(changed(CANONICAL, status=...), id="no-status"),
        pytest.param(changed(CANONICAL, actionable="yes"), id="actionable-not-bool"),
        pytest.param(changed(CANONICAL, event_ids=["1"]), id="event-ids-strings"),
        pytest.param(orjson.dumps({"event_type": "x", **CANONICAL}), id="keys-out-of-order"),
        pytest.param(orjson.dumps({"extra": 1, **CANONICAL}), id="unknown-key-before-canonical"),
    ],
)
def test_canonical_validator_refuses(body: bytes) -> None:
    """Each body breaks one rule of the canonical shape and is refused."""
    with pytest.raises(EnvelopeError):
        validate_target("executor_event", body)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(changed(LEGACY, execution_id=478775660589088776), id="integer-id"),
        pytest.param(changed(LEGACY, event_id="+1"), id="signed-string-id"),
        pytest.param(changed(LEGACY, name=..., event_type="x"), id="event-type"),
        pytest.param(changed(LEGACY, context={}), id="context-alias"),
        pytest.param(changed(LEGACY, payload=[1]), id="payload-not-object"),
        pytest.param(changed(LEGACY, meta="m"), id="meta-not-object"),
        pytest.param(changed(LEGACY, informative=1), id="informative-not-bool"),
        pytest.param(changed(LEGACY, created_at="2026-13-01T00:00:00Z"), id="bad-date"),
    ],
)
def test_legacy_validator_refuses(body: bytes) -> None:
    """Each body breaks one rule a legacy server enforces and is refused."""
    with pytest.raises(EnvelopeError):
        validate_target("event_request", body)


def test_batch_validators_check_ids_and_item_aliases() -> None:
    """Batch bodies: the execution_id type per target and the item names are enforced."""
    canonical = {"execution_id": 1, "events": [{"step": "s", "event_type": "e"}]}
    legacy = {"execution_id": "1", "events": [{"step": "s", "name": "e", "payload": {}}]}
    validate_target("executor_event", orjson.dumps(canonical), batch=True)
    validate_target("event_request", orjson.dumps(legacy), batch=True)
    for target, body in (
        ("executor_event", {**canonical, "execution_id": "1"}),
        ("executor_event", {**canonical, "events": [{"step": "s", "name": "e"}]}),
        ("event_request", {**legacy, "execution_id": 1}),
        ("event_request", {**legacy, "events": [{"step": "s", "name": "e", "payload": 3}]}),
    ):
        with pytest.raises(EnvelopeError):
            validate_target(target, orjson.dumps(body), batch=True)
