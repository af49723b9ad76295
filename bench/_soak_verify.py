"""The soak's proof: what the emulator's SQLite store holds against what the clients logged.

Every stored event row is traced back to its event (the marker in its context) and to the
attempt that produced it (`meta.attempts`, or `attempt` in a `worker_event` payload). Then:

- every event a client saw acknowledged (2xx) is stored, and every event is stored at all;
- an attempt is stored at most once (the proxy never sends one request twice);
- every stored copy comes from the acknowledged attempt or from an attempt whose answer was
  lost (connection broken or timed out: the upstream may have stored it), so duplicates
  come only from lost answers;
- ids are exact: the stored `execution_id` and `event_id` equal what the client sent, the
  id the client was told (the upstream's answer, relayed) equals the stored one, and the
  context arrived unchanged.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench._soak_events import ClientLog, make_event


@dataclass
class Proof:
    events: int
    stored_events: int = 0  # events with at least one stored copy
    stored_rows: int = 0
    acked: int = 0
    duplicates: int = 0  # stored copies beyond the first
    duplicates_from_marked_drops: int = 0  # the emulator marked the copy "dropped after..."
    untraceable_rows: int = 0
    violations: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def violate(self, kind: str, example: str) -> None:
        self.violations[kind] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{kind}: {example}")


def _stored_rows(db_file: Path) -> list[tuple[int, bytes, str | None]]:
    db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT e.event_id, r.body, r.fault FROM events e"
            " JOIN requests r ON r.seq = e.request_seq ORDER BY e.seq"
        ).fetchall()
    finally:
        db.close()
    return [(int(row[0]), bytes(row[1]), row[2]) for row in rows]


def _trace(body: dict[str, Any]) -> tuple[str, int] | None:
    """(marker, attempt) of a stored canonical body, or None."""
    context = body.get("context")
    if not isinstance(context, dict) or not isinstance(context.get("marker"), str):
        return None
    if "attempt" in context:  # worker_event: the payload became the context
        attempt = context["attempt"]
    else:
        meta = body.get("meta")
        attempt = meta.get("attempts") if isinstance(meta, dict) else None
    return (context["marker"], attempt) if isinstance(attempt, int) else None


def prove(db_file: Path, log: ClientLog, events: int) -> Proof:
    proof = Proof(events=events)
    copies: dict[int, list[tuple[int, int, dict[str, Any], str | None]]] = {}
    for stored_id, raw, fault in _stored_rows(db_file):
        proof.stored_rows += 1
        body = orjson.loads(raw)
        traced = _trace(body)
        if traced is None or not traced[0].startswith("soak-"):
            proof.untraceable_rows += 1
            proof.violate("untraceable stored row", raw[:120].decode("utf-8", "replace"))
            continue
        index = int(traced[0].removeprefix("soak-"))
        copies.setdefault(index, []).append((traced[1], stored_id, body, fault))

    for index in range(events):
        attempts = log.attempts.get(index, [])
        by_number = {a.number: a for a in attempts}
        acked = next((a for a in attempts if a.outcome == "acked"), None)
        stored = copies.get(index, [])
        proof.acked += acked is not None
        if not stored:
            kind = "acknowledged but not stored" if acked else "never stored"
            proof.violate(kind, f"soak-{index} attempts {[a.detail for a in attempts]}")
            continue
        proof.stored_events += 1
        proof.duplicates += len(stored) - 1
        seen: set[int] = set()
        for number, stored_id, body, fault in stored:
            if number in seen:
                proof.violate("one attempt stored twice", f"soak-{index} attempt {number}")
            seen.add(number)
            attempt = by_number.get(number)
            if attempt is None or attempt.outcome == "refused":
                detail = attempt.detail if attempt else "no such attempt"
                proof.violate(
                    "stored copy of a refused attempt", f"soak-{index} #{number} {detail}"
                )
            elif attempt.outcome == "lost" and fault == "dropped after processing":
                proof.duplicates_from_marked_drops += 1
            acked_here = attempt is not None and attempt.outcome == "acked"
            if acked_here and attempt and attempt.answer_event_id != stored_id:
                proof.violate(
                    "answered id differs from stored id",
                    f"soak-{index}: client got {attempt.answer_event_id}, stored {stored_id}",
                )
            _check_ids(proof, index, body, stored_id)
    return proof


def _check_ids(proof: Proof, index: int, body: dict[str, Any], stored_id: int) -> None:
    event = make_event(index)
    if body.get("execution_id") != event.execution_id or type(body["execution_id"]) is not int:
        proof.violate("execution_id changed", f"soak-{index}: {body.get('execution_id')!r}")
    if event.event_id is not None and (
        body.get("event_id") != event.event_id or stored_id != event.event_id
    ):
        proof.violate("event_id changed", f"soak-{index}: {body.get('event_id')!r}/{stored_id}")
    context = dict(body["context"])
    for key in ("step", "worker_id", "attempt"):  # the worker_event payload's own fields
        if event.shape == "worker_event":
            context.pop(key, None)
    if context != event.context:
        proof.violate("context changed", f"soak-{index}")
