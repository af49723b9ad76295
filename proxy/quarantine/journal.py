"""The replay journal: what `quarantine replay` did with each record, so it does it once.

JSON Lines, appended and fsynced line by line: `{"id", "state", "at", ...}`. Before a
record is sent its `in_flight` line is on disk; once the upstream has answered, a line with
the outcome follows. The last line of a record decides what a later replay does:

- `sent` (2xx) and `upstream_refused` (4xx: the upstream answered): never sent again;
- `in_flight` with nothing after it: the replay was interrupted while the upstream had the
  request (or a timeout left it unknown), so it may have been stored: *uncertain*, not sent
  again unless asked for explicitly;
- `upstream_failed` (a 5xx answer) and `not_sent` (no connection: the request never
  left): sent again.

A torn last line (a crash while writing it) is skipped. One replay at a time holds an
exclusive lock on the journal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Any

import orjson

IN_FLIGHT = "in_flight"
SENT = "sent"
UPSTREAM_REFUSED = "upstream_refused"
UPSTREAM_FAILED = "upstream_failed"
NOT_SENT = "not_sent"
DONE = frozenset({SENT, UPSTREAM_REFUSED})
JOURNAL_NAME = "replay-journal.jsonl"


class JournalBusy(Exception):
    """Another replay holds the journal."""


class ReplayJournal:
    """Appends outcome lines; `states` is the last state of each record seen so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.states: dict[str, str] = {}
        self._fd: int | None = None

    def open(self) -> None:
        """Lock the journal (JournalBusy if taken) and read what earlier replays did."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalBusy(f"{self.path} is in use by another replay") from None
        self._fd = fd
        self.states = read_states(self.path)

    def mark(self, record_id: str, state: str, **extra: Any) -> None:
        """Append one line and fsync it before returning."""
        assert self._fd is not None, "open() first"
        line = orjson.dumps({"id": record_id, "state": state, "at": time.time(), **extra})
        data = memoryview(line + b"\n")
        while data:
            data = data[os.write(self._fd, data) :]
        os.fsync(self._fd)
        self.states[record_id] = state

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def read_states(path: Path) -> dict[str, str]:
    """The last state of each record in a journal; torn or foreign lines are skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    states: dict[str, str] = {}
    for line in data.split(b"\n"):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            states[entry["id"]] = str(entry.get("state"))
    return states
