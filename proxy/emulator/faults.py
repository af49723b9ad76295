"""Fault injection on the event endpoints: what can go wrong between a proxy and NoETL.

Configured with `POST /_emulator/faults` (one JSON object replaces the previous one;
`DELETE` clears). Each request on `/api/events` or `/api/events/batch` draws a plan, in a
fixed order so a `seed` makes the sequence reproducible:

- `hang` (share `rate`): read the request, never answer; released when the client goes
  away or the emulator stops.
- `drop_after_read` (a probability): read the request, process and store it only when
  `store_before_drop` is true, then close the connection without an answer.
- `status` (share `rate`, with optional `retry_after` and `body`): answer that status
  without processing, with a Python-style body (`{"detail":{"code":"pool_saturated"}}`
  for 503, `{"detail": "<reason>"}` otherwise).
- `delay_seconds` (share `rate`): process normally, then wait before answering.
- `store_down`: the database is unreachable: health answers 503 (Rust, still with the
  version) and events fail the way each server fails without its database.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import Any

_KNOWN_KEYS = frozenset(
    {
        "status",
        "retry_after",
        "body",
        "rate",
        "delay_seconds",
        "drop_after_read",
        "store_before_drop",
        "store_down",
        "hang",
        "seed",
    }
)


class FaultConfigError(ValueError):
    """A fault configuration the emulator refuses (unknown key, wrong type or range)."""


@dataclass(frozen=True)
class FaultConfig:
    status: int | None = None
    retry_after: int | float | None = None
    body: Any = None
    rate: float = 1.0
    delay_seconds: float = 0.0
    drop_after_read: float = 0.0
    store_before_drop: bool = False
    store_down: bool = False
    hang: bool = False
    seed: int | None = None

    @classmethod
    def from_json(cls, data: Any) -> FaultConfig:
        """Validate a JSON object into a configuration; refuse anything unclear."""
        if not isinstance(data, dict):
            raise FaultConfigError("fault configuration must be a JSON object")
        unknown = sorted(set(data) - _KNOWN_KEYS)
        if unknown:
            raise FaultConfigError(f"unknown fault keys: {', '.join(unknown)}")
        status = data.get("status")
        if status is not None and not (_is_int(status) and 100 <= status <= 599):
            raise FaultConfigError("status must be an integer HTTP status (100-599)")
        retry_after = data.get("retry_after")
        if retry_after is not None and not (_is_number(retry_after) and retry_after >= 0):
            raise FaultConfigError("retry_after must be a non-negative number")
        for key in ("rate", "drop_after_read"):
            value = data.get(key, 1.0 if key == "rate" else 0.0)
            if not (_is_number(value) and 0.0 <= value <= 1.0):
                raise FaultConfigError(f"{key} must be a number between 0 and 1")
        delay = data.get("delay_seconds", 0.0)
        if not (_is_number(delay) and 0.0 <= delay <= 600.0):
            raise FaultConfigError("delay_seconds must be a number between 0 and 600")
        for key in ("store_before_drop", "store_down", "hang"):
            if not isinstance(data.get(key, False), bool):
                raise FaultConfigError(f"{key} must be true or false")
        seed = data.get("seed")
        if seed is not None and not _is_int(seed):
            raise FaultConfigError("seed must be an integer")
        return cls(
            status=status,
            retry_after=retry_after,
            body=data.get("body"),
            rate=float(data.get("rate", 1.0)),
            delay_seconds=float(delay),
            drop_after_read=float(data.get("drop_after_read", 0.0)),
            store_before_drop=data.get("store_before_drop", False),
            store_down=data.get("store_down", False),
            hang=data.get("hang", False),
            seed=seed,
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class FaultPlan:
    """What to do with one event request."""

    hang: bool = False
    drop: bool = False
    store_before_drop: bool = False
    status: int | None = None
    delay_seconds: float = 0.0


def injected_body(config: FaultConfig) -> Any:
    """The JSON body of an injected status: the configured one, else Python-style."""
    if config.body is not None:
        return config.body
    if config.status == 503:
        return {"detail": {"code": "pool_saturated"}}
    try:
        return {"detail": HTTPStatus(config.status or 500).phrase}
    except ValueError:
        return {"detail": "Injected fault"}


class Faults:
    """The active configuration, its random source and what was injected so far."""

    def __init__(self) -> None:
        self.config = FaultConfig()
        self._rng = random.Random()
        self.counters: Counter[str] = Counter()

    def configure(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self.counters.clear()

    def clear(self) -> None:
        self.configure(FaultConfig())

    def _draw(self, share: float) -> bool:
        # Always draw once per configured fault so a seed gives one fixed sequence.
        return self._rng.random() < share

    def plan(self) -> FaultPlan:
        """Draw the plan for the next event request and count what it injects."""
        c = self.config
        self.counters["requests"] += 1
        if c.hang and self._draw(c.rate):
            self.counters["hang"] += 1
            return FaultPlan(hang=True)
        if c.drop_after_read > 0 and self._draw(c.drop_after_read):
            self.counters["drop_after_read"] += 1
            return FaultPlan(drop=True, store_before_drop=c.store_before_drop)
        if c.status is not None and self._draw(c.rate):
            self.counters["status"] += 1
            return FaultPlan(status=c.status)
        if c.delay_seconds > 0 and self._draw(c.rate):
            self.counters["delay"] += 1
            return FaultPlan(delay_seconds=c.delay_seconds)
        return FaultPlan()

    def snapshot(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "counters": dict(self.counters)}
