"""The sunset ledger: which client sent which envelope shape, when, and whether v1 can go.

For every client label it keeps each shape seen (count, first and last time) and the shadow
check's failures by error code. The report behind admin `/clients` adds the verdict
`ready_to_sunset_v1`: true when no client sent a legacy (non-canonical) shape within the
sunset window. Bodies the proxy could not classify (`unknown`) are listed but do not block:
they are broken requests, not a legacy producer.

The ledger is plain data and pure; `store` persists it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from proxy.envelope import CANONICAL_TARGET

CANONICAL_SHAPE = CANONICAL_TARGET  # the canonical shape is what the canonical target writes
UNKNOWN_SHAPE = "unknown"
FORMAT = "envelope-proxy-ledger/1"


class LedgerFormatError(ValueError):
    """A persisted ledger that does not have the expected structure."""


@dataclass(slots=True)
class Seen:
    """How often something was seen, and when first and last (Unix seconds)."""

    count: int
    first_seen: float
    last_seen: float

    def bump(self, now: float) -> None:
        self.count += 1
        self.last_seen = max(self.last_seen, now)


@dataclass(slots=True)
class ClientEntry:
    """Everything the ledger knows about one client label."""

    shapes: dict[str, Seen] = field(default_factory=dict)
    shadow_failures: dict[str, Seen] = field(default_factory=dict)

    def last_seen(self) -> float:
        return max((s.last_seen for s in self.shapes.values()), default=0.0)

    def legacy_last_seen(self) -> float | None:
        times = [s.last_seen for name, s in self.shapes.items() if is_legacy(name)]
        return max(times) if times else None


def is_legacy(shape: str) -> bool:
    """A shape that keeps v1 alive: anything recognised other than the canonical one."""
    return shape not in (CANONICAL_SHAPE, UNKNOWN_SHAPE)


def iso(ts: float) -> str:
    """Unix seconds as RFC 3339 UTC with millisecond precision."""
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


class SunsetLedger:
    """Per-client shape history and the sunset verdict computed from it."""

    def __init__(self, window_seconds: float, tracking_since: float) -> None:
        self.window_seconds = window_seconds
        self.tracking_since = tracking_since
        self.clients: dict[str, ClientEntry] = {}

    def record(self, client: str, shape: str, now: float) -> None:
        """Note one event of `shape` from `client`."""
        shapes = self._entry(client).shapes
        seen = shapes.get(shape)
        if seen is None:
            shapes[shape] = Seen(1, now, now)
        else:
            seen.bump(now)

    def record_shadow_failure(self, client: str, code: str, now: float) -> None:
        """Note one failed shadow conversion for `client` with the engine's error code."""
        failures = self._entry(client).shadow_failures
        seen = failures.get(code)
        if seen is None:
            failures[code] = Seen(1, now, now)
        else:
            seen.bump(now)

    def blocking_clients(self, now: float) -> list[str]:
        """Clients that sent a legacy shape within the window, most recent first."""
        horizon = now - self.window_seconds
        recent = [
            (last, name)
            for name, entry in self.clients.items()
            if (last := entry.legacy_last_seen()) is not None and last >= horizon
        ]
        return [name for _, name in sorted(recent, key=lambda item: (-item[0], item[1]))]

    def report(self, now: float) -> dict[str, Any]:
        """The JSON document served on admin `/clients`."""
        blocking = self.blocking_clients(now)
        blocking_set = set(blocking)
        order = {name: i for i, name in enumerate(blocking)}
        names = sorted(
            self.clients,
            key=lambda n: (n not in blocking_set, order.get(n, 0), -self.clients[n].last_seen(), n),
        )
        return {
            "generated_at": iso(now),
            "sunset_window_seconds": self.window_seconds,
            "tracking_since": iso(self.tracking_since),
            "window_observed": now - self.tracking_since >= self.window_seconds,
            "ready_to_sunset_v1": not blocking,
            "blocking_clients": blocking,
            "clients": [self._client_report(n, n in blocking_set) for n in names],
        }

    def to_state(self) -> dict[str, Any]:
        """The persisted form (see `from_state`)."""
        return {
            "format": FORMAT,
            "tracking_since": self.tracking_since,
            "clients": {
                name: {
                    "shapes": {k: _seen_state(v) for k, v in entry.shapes.items()},
                    "shadow_failures": {
                        k: _seen_state(v) for k, v in entry.shadow_failures.items()
                    },
                }
                for name, entry in self.clients.items()
            },
        }

    @classmethod
    def from_state(cls, state: object, window_seconds: float) -> SunsetLedger:
        """Rebuild a ledger from `to_state()` output; raises LedgerFormatError when malformed."""
        data = _mapping(state, "ledger")
        if data.get("format") != FORMAT:
            raise LedgerFormatError(
                f"ledger: format is {data.get('format')!r}, expected {FORMAT!r}"
            )
        ledger = cls(window_seconds, _number(data.get("tracking_since"), "tracking_since"))
        for name, raw in _mapping(data.get("clients"), "clients").items():
            client = _mapping(raw, f"clients.{name}")
            entry = ClientEntry(
                shapes=_seen_map(client.get("shapes"), f"clients.{name}.shapes"),
                shadow_failures=_seen_map(
                    client.get("shadow_failures"), f"clients.{name}.shadow_failures"
                ),
            )
            ledger.clients[name] = entry
        return ledger

    def _entry(self, client: str) -> ClientEntry:
        entry = self.clients.get(client)
        if entry is None:
            entry = self.clients[client] = ClientEntry()
        return entry

    def _client_report(self, name: str, blocking: bool) -> dict[str, Any]:
        entry = self.clients[name]
        recognised = [s for s in entry.shapes if s != UNKNOWN_SHAPE]
        legacy_last = entry.legacy_last_seen()
        return {
            "client": name,
            "canonical_only": bool(recognised) and all(s == CANONICAL_SHAPE for s in recognised),
            "blocks_sunset": blocking,
            "last_seen": iso(entry.last_seen()) if entry.shapes else None,
            "last_legacy_seen": iso(legacy_last) if legacy_last is not None else None,
            "shapes": {k: _seen_report(v) for k, v in sorted(entry.shapes.items())},
            "shadow_failures": {
                k: _seen_report(v) for k, v in sorted(entry.shadow_failures.items())
            },
        }


def _seen_state(seen: Seen) -> dict[str, Any]:
    return {"count": seen.count, "first_seen": seen.first_seen, "last_seen": seen.last_seen}


def _seen_report(seen: Seen) -> dict[str, Any]:
    return {
        "count": seen.count,
        "first_seen": iso(seen.first_seen),
        "last_seen": iso(seen.last_seen),
    }


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise LedgerFormatError(f"{where}: expected an object")
    return value


# Unix seconds up to the year 9999: what a report can still print as a date.
_MAX_TIMESTAMP = 253_402_300_799


def _number(value: object, where: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= _MAX_TIMESTAMP
    ):
        raise LedgerFormatError(f"{where}: expected a Unix time in seconds")
    return float(value)


def _seen_map(value: object, where: str) -> dict[str, Seen]:
    result: dict[str, Seen] = {}
    for key, raw in _mapping(value, where).items():
        item = _mapping(raw, f"{where}.{key}")
        if set(item) != {"count", "first_seen", "last_seen"}:
            raise LedgerFormatError(f"{where}.{key}: expected count, first_seen, last_seen")
        count = item["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise LedgerFormatError(f"{where}.{key}.count: expected a positive integer")
        first = _number(item["first_seen"], f"{where}.{key}.first_seen")
        last = _number(item["last_seen"], f"{where}.{key}.last_seen")
        result[key] = Seen(count, first, last)
    return result
