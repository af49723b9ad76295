"""The quarantine's files: append-only JSON Lines segments in one directory, size-capped.

A segment is `<start, Unix ms, 13 digits>-<worker, 3 digits>.jsonl`; each worker process
appends only to its own newest segment and opens a new one at start and when the segment
reaches an eighth of its share of `max_bytes` (so dropping one frees a small part of the
store). When its segments together exceed its share (`max_bytes / workers`), its oldest
segments are deleted, whole, until they fit again; the newest is never deleted. Worker 0
also looks after segments left by workers that no longer run. A record larger than the
share is not kept (counted).

Durability: each batch of records goes out in `write` calls on a file opened with
`O_APPEND` and is `fsync`ed before the next batch is taken; a new segment's directory
entry is `fsync`ed too. A crash can leave at most the last line of the newest segment cut
short (no newline, or not JSON): readers skip such a line and read everything else. A new
process never appends behind a torn line, since it starts a segment of its own.

`SegmentWriter` is blocking and used from one thread at a time (see `writer`); the
reading functions are blocking too (the admin route calls them in a thread).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from proxy.quarantine.records import Filter, Refusal, record_data, without_body

SEGMENT = re.compile(r"^(\d{13})-(\d{3})\.jsonl$")
MIN_SEGMENT_BYTES = 8 * 1024
ID_ROOM = 48  # bytes an id and its key take in a line
SEGMENTS_PER_SHARE = 8


def segment_name(start_ms: int, worker: int) -> str:
    return f"{start_ms:013d}-{worker:03d}.jsonl"


def segments(directory: Path) -> list[Path]:
    """Every segment of every worker, oldest first (by start time, then worker)."""
    try:
        names = [entry.name for entry in os.scandir(directory) if SEGMENT.match(entry.name)]
    except FileNotFoundError:
        return []
    return [directory / name for name in sorted(names)]


@dataclass(slots=True)
class _Segment:
    path: Path
    size: int
    records: int


@dataclass(slots=True)
class AppendResult:
    """What one `append` did, for the metrics."""

    written: int = 0
    too_large: int = 0
    dropped_segments: int = 0
    dropped_records: int = 0
    ids: list[str] = field(default_factory=list)


class SegmentWriter:
    """Appends records to this worker's segments and keeps them within its share."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        *,
        worker: int = 0,
        workers: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.share = max(max_bytes // max(workers, 1), 1)
        self.segment_limit = max(self.share // SEGMENTS_PER_SHARE, MIN_SEGMENT_BYTES)
        self.worker = worker
        self.workers = max(workers, 1)
        self._clock = clock
        self._own: list[_Segment] = []
        self._fd: int | None = None
        self._opened = False

    @property
    def size(self) -> int:
        """Bytes in this worker's segments."""
        return sum(segment.size for segment in self._own)

    def open(self) -> None:
        """Create the directory and take stock of this worker's earlier segments."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._own = []
        for path in segments(self.directory):
            match = SEGMENT.match(path.name)
            assert match is not None
            owner = int(match[2])
            # Worker 0 also keeps the segments of workers that no longer run (the proxy
            # was scaled down), so they count against the cap and age out too.
            if owner == self.worker or (self.worker == 0 and owner >= self.workers):
                data = path.read_bytes()
                self._own.append(_Segment(path, len(data), data.count(b"\n")))
        self._opened = True

    def append(self, refusals: list[tuple[Refusal, str | None]]) -> AppendResult:
        """Write (refusal, detected shape) pairs as records, fsync, then enforce the cap."""
        if not self._opened:
            self.open()
        result = AppendResult()
        pending: list[bytes] = []
        for refusal, shape in refusals:
            # Serialised once; the id, known only once the segment is, goes in front.
            rest = orjson.dumps(record_data(refusal, shape))[1:]
            if len(rest) + ID_ROOM > self.share:
                result.too_large += 1
                continue
            segment = self._current(len(rest) + ID_ROOM, pending)
            record_id = f"{segment.path.stem}.{segment.records + 1}"
            line = b'{"id":"' + record_id.encode() + b'",' + rest + b"\n"
            pending.append(line)
            segment.size += len(line)
            segment.records += 1
            result.ids.append(record_id)
            result.written += 1
        self._flush(pending)
        while len(self._own) > 1 and self.size > self.share:
            oldest = self._own.pop(0)
            with contextlib.suppress(FileNotFoundError):
                oldest.path.unlink()
            result.dropped_segments += 1
            result.dropped_records += oldest.records
        return result

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _current(self, size: int, pending: list[bytes]) -> _Segment:
        """The segment the next record goes to; a new one at start or when this is full."""
        if self._fd is not None and self._own:
            segment = self._own[-1]
            if segment.size == 0 or segment.size + size <= self.segment_limit:
                return segment
        self._flush(pending)
        self.close()
        start = int(self._clock() * 1000)
        if self._own:
            # Names must grow: a segment opened within the same millisecond as the last.
            start = max(start, int(self._own[-1].path.name[:13]) + 1)
        path = self.directory / segment_name(start, self.worker)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o640)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new name survives a crash with its first records
        finally:
            os.close(dir_fd)
        segment = _Segment(path, 0, 0)
        self._own.append(segment)
        return segment

    def _flush(self, pending: list[bytes]) -> None:
        if not pending or self._fd is None:
            return
        data = memoryview(b"".join(pending))
        pending.clear()
        while data:
            written = os.write(self._fd, data)
            data = data[written:]
        os.fsync(self._fd)


@dataclass(slots=True)
class ReadStats:
    torn: int = 0  # lines skipped: cut short by a crash, or not a record


def read_segment(path: Path, stats: ReadStats | None = None) -> list[dict[str, Any]]:
    """The records of one segment in order; a torn or foreign line is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # dropped by the cap while being listed
        return []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        lines.pop()  # no newline: the write of this line never finished
        if stats is not None:
            stats.torn += 1
    records = []
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            records.append(record)
        elif stats is not None:
            stats.torn += 1
    return records


def iter_records(directory: Path, stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Every readable record, oldest first."""
    for path in segments(directory):
        yield from read_segment(path, stats)


def find(directory: Path, record_id: str) -> dict[str, Any] | None:
    """The record with this id, or None."""
    stem = record_id.rpartition(".")[0]
    path = directory / f"{stem}.jsonl"
    if not SEGMENT.match(path.name):
        return None
    for record in read_segment(path):
        if record["id"] == record_id:
            return record
    return None


def _position(record_id: str) -> tuple[str, int]:
    stem, _, line = record_id.rpartition(".")
    return stem, int(line) if line.isdigit() else 0


@dataclass(frozen=True, slots=True)
class Page:
    records: list[dict[str, Any]]
    next: str | None  # pass as `cursor` for the following (older) page


def newest_first(
    directory: Path,
    flt: Filter,
    *,
    limit: int,
    cursor: str | None = None,
    bodies: bool = False,
) -> Page:
    """Up to `limit` matching records, newest first, older than `cursor` when given."""
    after = _position(cursor) if cursor else None
    found: list[dict[str, Any]] = []
    for path in reversed(segments(directory)):
        if after is not None and path.stem > after[0]:
            continue
        for record in reversed(read_segment(path)):
            if after is not None and _position(record["id"]) >= after:
                continue
            if not flt.matches(record):
                continue
            if len(found) == limit:
                return Page(found, found[-1]["id"])
            found.append(record if bodies else without_body(record))
    return Page(found, None)
