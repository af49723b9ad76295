"""The planned and the general conversion of one body, side by side (plan tests share it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from proxy.envelope import Conversion, Engine, EngineOptions, EnvelopeError, load_rules
from proxy.envelope.ids import SNOWFLAKE_EPOCH_MS, SnowflakeMinter
from proxy.envelope.jsonbody import split_bounded

RULES = load_rules()
NOW = datetime(2026, 6, 5, 12, 0, 0, 123456, tzinfo=UTC)
# (error class, code, message, field, index): everything a refusal tells the client.
Refusal = tuple[str, str, str, str | None, int | None]
Outcome = Conversion | Refusal


def engine_pair(**options: Any) -> tuple[Engine, Engine]:
    """Two alike engines whose minters give the same ids: one planned, one general."""

    def one() -> Engine:
        minter = SnowflakeMinter(0, clock_ms=lambda: SNOWFLAKE_EPOCH_MS + 1000)
        return Engine(RULES, EngineOptions(now=lambda: NOW, **options), minter=minter)

    return one(), one()


def outcome(call: Callable[[], Conversion]) -> Outcome:
    try:
        return call()
    except EnvelopeError as exc:
        return (type(exc).__name__, exc.code, exc.message, exc.field, exc.index)


def general(engine: Engine, body: bytes, target: str, *, batch: bool) -> Outcome:
    """The general path alone: split, repeated keys, detection, conversion."""

    def call() -> Conversion:
        members = split_bounded(body, engine.options.max_depth)
        if batch:
            return engine.convert_batch_generally(body, members, target)
        return engine.convert_event_generally(body, members, target)

    return outcome(call)


def plan_only(engine: Engine, body: bytes, target: str, *, batch: bool) -> Conversion | None:
    """The plan alone (None: it hands the body to the general path)."""
    members = split_bounded(body, engine.options.max_depth)
    if batch:
        return engine.plans.convert_batch(body, members, target)
    return engine.plans.convert_event(body, members, target)


def _splits(engine: Engine, body: bytes) -> bool:
    try:
        split_bounded(body, engine.options.max_depth)
    except EnvelopeError:
        return False
    return True


def assert_same(
    pair: tuple[Engine, Engine],
    body: bytes,
    target: str,
    *,
    batch: bool = False,
    planned: bool = True,
) -> Outcome:
    """The planned engine gives exactly what the general path gives, and for a body the
    general path accepts, the plan itself gives it (unless `planned` is False)."""
    planned_engine, general_engine = pair
    expected = general(general_engine, body, target, batch=batch)
    if isinstance(expected, Conversion):
        got = plan_only(planned_engine, body, target, batch=batch)
        if not planned:
            assert got is None
            convert = planned_engine.convert_batch if batch else planned_engine.convert_event
            got = convert(body, target)
        assert got == expected
        return expected
    if _splits(planned_engine, body):
        # A refusal is never the plan's: it hands over, before minting anything.
        assert plan_only(planned_engine, body, target, batch=batch) is None
    convert = planned_engine.convert_batch if batch else planned_engine.convert_event
    assert outcome(lambda: convert(body, target)) == expected
    return expected
