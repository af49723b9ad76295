"""The emulated server's memory: claims, dedup keys, idempotency keys, id minters.

What the real servers keep in `noetl.event` and consult while ingesting (who claimed a
command, which lifecycle event of a command was already stored, which batch an
`Idempotency-Key` produced) lives here, together with the two snowflake layouts the
servers mint with and the `Reply` every handler returns.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.envelope.ids import SNOWFLAKE_EPOCH_MS, SnowflakeMinter

# Far from the proxy's default machine id 0, so ids minted here and there never collide.
EMULATOR_MACHINE_ID = 1023
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


class DbSnowflakeMinter:
    """The database's `noetl.snowflake_id()`: `(ms since 2024-01-01) << 23 | shard << 18 |
    seq`, strictly increasing within this process."""

    def __init__(self, shard: int = 0) -> None:
        if not 0 <= shard < 32:
            raise ValueError(f"shard must be within 0..31, got {shard}")
        self._shard = shard
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0

    def next(self) -> int:
        with self._lock:
            now = max(time.time_ns() // 1_000_000, self._last_ms)
            if now == self._last_ms:
                self._sequence += 1
                if self._sequence >= 1 << 18:
                    now += 1
                    self._sequence = 0
            else:
                self._sequence = 0
            self._last_ms = now
            return ((now - SNOWFLAKE_EPOCH_MS) << 23) | (self._shard << 18) | self._sequence


@dataclass(frozen=True)
class Reply:
    """A handler's answer and what the store should record about it."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    event_ids: tuple[int, ...] = ()
    # True when the server answered from memory (re-claim, dedup, idempotent replay)
    # instead of persisting a new event.
    duplicate: bool = False

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


TEXT_NUL_SQLX = 'error returned from database: invalid byte sequence for encoding "UTF8": 0x00'
TEXT_NUL_PSYCOPG = "PostgreSQL text fields cannot contain NUL (0x00) bytes"
JSONB_NUL = "unsupported Unicode escape sequence"


def postgres_nul_problem(
    texts: tuple[Any, ...], documents: tuple[Any, ...], text_message: str
) -> str | None:
    """Why Postgres would refuse the row: a NUL in a text column (`text_message`, worded by
    the server's driver) or a `\\u0000` in a jsonb one; None when the row can be stored."""
    if any(isinstance(text, str) and "\x00" in text for text in texts):
        return text_message
    if any(_has_nul(document) for document in documents):
        return JSONB_NUL
    return None


def _has_nul(value: Any) -> bool:
    # orjson writes a NUL as `\u0000`; a document whose JSON lacks those six bytes holds
    # none (the walk below settles the rest, such as a literal backslash before `u0000`).
    try:
        if b"\\u0000" not in orjson.dumps(value):
            return False
    except (TypeError, orjson.JSONEncodeError):
        pass
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def json_body(content: Any) -> bytes:
    """Compact JSON with exact integers (serde_json and FastAPI both render this way)."""
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass
class IngestState:
    """Server-side state shared by every profile of one emulator process."""

    store_down: bool = False
    app_ids: SnowflakeMinter = field(default_factory=lambda: SnowflakeMinter(EMULATOR_MACHINE_ID))
    db_ids: DbSnowflakeMinter = field(default_factory=DbSnowflakeMinter)
    # Rust: (execution_id, command_id) -> worker recorded with the first claim, or None.
    rust_claims: dict[tuple[int, str], str | None] = field(default_factory=dict)
    # Python: (execution_id, command_id) -> worker_id of the first claim, or None.
    python_claims: dict[tuple[int, int], str | None] = field(default_factory=dict)
    # Python: (execution_id, event name, step, command_id) -> event id stored first.
    python_dedup: dict[tuple[int, str, str, int], int] = field(default_factory=dict)
    # Python: (execution_id, idempotency key) -> (request_id, event ids).
    python_batches: dict[tuple[int, str], tuple[str, tuple[int, ...]]] = field(default_factory=dict)

    def forget(self) -> None:
        """Drop claims, dedup and idempotency memory (a fresh database)."""
        self.rust_claims.clear()
        self.python_claims.clear()
        self.python_dedup.clear()
        self.python_batches.clear()
