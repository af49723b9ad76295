"""Where the emulator keeps what reached it: every event request and every event id.

Two tables (or two in-memory lists in fast mode): one row per request received on an
event endpoint, with the **exact bytes**, the answered status and the event ids; and one
row per event id the server assigned (a batch gives one row per item, each pointing at
the batch's bytes). The listings are what tests and the demo read through
`GET /_emulator/events` and `GET /_emulator/requests`; ids stay exact integers.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class RequestRecord:
    """One request on `/api/events` or `/api/events/batch` and how it was answered."""

    path: str
    profile: str
    version: str | None
    content_type: str | None
    body: bytes
    status: int
    event_ids: tuple[int, ...]
    duplicate: bool = False
    fault: str | None = None
    received_at: str = ""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _body_fields(body: bytes) -> dict[str, str]:
    return {
        "body": body.decode("utf-8", errors="replace"),
        "body_b64": base64.b64encode(body).decode("ascii"),
    }


def _request_row(seq: int, rec: RequestRecord) -> dict[str, Any]:
    return {
        "seq": seq,
        "path": rec.path,
        "status": rec.status,
        "event_ids": list(rec.event_ids),
        "duplicate": rec.duplicate,
        "fault": rec.fault,
        "profile": rec.profile,
        "version": rec.version,
        "content_type": rec.content_type,
        "received_at": rec.received_at,
        **_body_fields(rec.body),
    }


def _event_row(seq: int, request_seq: int, index: int, rec: RequestRecord) -> dict[str, Any]:
    return {
        "seq": seq,
        "event_id": rec.event_ids[index],
        "path": rec.path,
        "item_index": index if rec.path.endswith("/batch") else None,
        "request_seq": request_seq,
        "profile": rec.profile,
        "version": rec.version,
        "received_at": rec.received_at,
        **_body_fields(rec.body),
    }


class Store(Protocol):
    """What the app needs from a store; both implementations are synchronous and cheap."""

    def record(self, rec: RequestRecord) -> int: ...
    def events(self, since: int = 0) -> list[dict[str, Any]]: ...
    def requests(self, since: int = 0) -> list[dict[str, Any]]: ...
    def counts(self) -> dict[str, int]: ...
    def clear(self) -> None: ...
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    path TEXT NOT NULL,
    profile TEXT NOT NULL,
    version TEXT,
    content_type TEXT,
    body BLOB NOT NULL,
    status INTEGER NOT NULL,
    event_ids TEXT NOT NULL,
    duplicate INTEGER NOT NULL,
    fault TEXT
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_seq INTEGER NOT NULL REFERENCES requests(seq),
    item_index INTEGER NOT NULL,
    event_id INTEGER NOT NULL
);
"""


class SqliteStore:
    """SQLite storage (a file with `--db`, else in memory); one connection, one lock."""

    def __init__(self, path: str | None = None) -> None:
        self._db = sqlite3.connect(
            path or ":memory:", check_same_thread=False, isolation_level=None
        )
        self._lock = threading.Lock()
        if path:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def record(self, rec: RequestRecord) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO requests (received_at, path, profile, version, content_type,"
                " body, status, event_ids, duplicate, fault) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    rec.received_at,
                    rec.path,
                    rec.profile,
                    rec.version,
                    rec.content_type,
                    rec.body,
                    rec.status,
                    json.dumps(list(rec.event_ids)),
                    int(rec.duplicate),
                    rec.fault,
                ),
            )
            request_seq = int(cur.lastrowid or 0)
            if not rec.duplicate:
                self._db.executemany(
                    "INSERT INTO events (request_seq, item_index, event_id) VALUES (?,?,?)",
                    [(request_seq, i, eid) for i, eid in enumerate(rec.event_ids)],
                )
            return request_seq

    def _record_from_row(self, row: tuple[Any, ...]) -> RequestRecord:
        return RequestRecord(
            received_at=row[0],
            path=row[1],
            profile=row[2],
            version=row[3],
            content_type=row[4],
            body=bytes(row[5]),
            status=row[6],
            event_ids=tuple(json.loads(row[7])),
            duplicate=bool(row[8]),
            fault=row[9],
        )

    _COLUMNS = (
        "r.received_at, r.path, r.profile, r.version, r.content_type, r.body, r.status,"
        " r.event_ids, r.duplicate, r.fault"
    )

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT e.seq, e.request_seq, e.item_index, {self._COLUMNS} FROM events e"
                " JOIN requests r ON r.seq = e.request_seq WHERE e.seq > ? ORDER BY e.seq",
                (since,),
            ).fetchall()
        return [_event_row(r[0], r[1], r[2], self._record_from_row(r[3:])) for r in rows]

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT r.seq, {self._COLUMNS} FROM requests r WHERE r.seq > ? ORDER BY r.seq",
                (since,),
            ).fetchall()
        return [_request_row(r[0], self._record_from_row(r[1:])) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            requests = self._db.execute("SELECT count(*) FROM requests").fetchone()[0]
            events = self._db.execute("SELECT count(*) FROM events").fetchone()[0]
        return {"requests": int(requests), "events": int(events)}

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM events")
            self._db.execute("DELETE FROM requests")

    def close(self) -> None:
        with self._lock:
            self._db.close()


class MemoryStore:
    """Fast-mode storage: counters plus the most recent requests, no SQLite.

    Sequence numbers keep growing across `clear()`, like SQLite's AUTOINCREMENT, so a
    reader's `since` cursor stays valid.
    """

    def __init__(self, keep: int = 100_000) -> None:
        self._recent: deque[tuple[int, int, RequestRecord]] = deque(maxlen=keep)
        self._request_seq = 0
        self._event_seq = 0
        self._requests = 0
        self._events = 0

    def record(self, rec: RequestRecord) -> int:
        self._request_seq += 1
        self._requests += 1
        first_event_seq = self._event_seq + 1
        if not rec.duplicate:
            self._event_seq += len(rec.event_ids)
            self._events += len(rec.event_ids)
        self._recent.append((self._request_seq, first_event_seq, rec))
        return self._request_seq

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        rows = []
        for request_seq, first, rec in self._recent:
            if rec.duplicate:
                continue
            for index in range(len(rec.event_ids)):
                if first + index > since:
                    rows.append(_event_row(first + index, request_seq, index, rec))
        return rows

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return [_request_row(seq, rec) for seq, _, rec in self._recent if seq > since]

    def counts(self) -> dict[str, int]:
        return {"requests": self._requests, "events": self._events}

    def clear(self) -> None:
        self._recent.clear()
        self._requests = 0
        self._events = 0

    def close(self) -> None:
        self._recent.clear()
