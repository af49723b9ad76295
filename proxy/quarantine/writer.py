"""Feeding the quarantine store from the server without blocking its event loop.

`submit` is called on the loop for each refused body: it only appends to a bounded
in-memory queue (at most `MAX_PENDING` records and `MAX_PENDING_BYTES` of bodies; beyond
that a refusal is counted as not kept, never waited for). One writer task takes the whole
queue, runs shape detection, encoding, the file writes and the fsync in a worker thread,
and then takes what arrived meanwhile: under a burst, records are written and fsynced in
batches. `close` writes what is still queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy.envelope import Engine, EnvelopeError
from proxy.quarantine.records import Refusal
from proxy.quarantine.store import AppendResult, SegmentWriter

log = logging.getLogger(__name__)

MAX_PENDING = 1024
MAX_PENDING_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one batch, for the metrics (called on the loop)."""

    result: AppendResult
    failed: int
    size: int


class QuarantineWriter:
    """Queues refusals on the loop and writes them to a `SegmentWriter` in a thread."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        *,
        worker: int = 0,
        workers: int = 1,
        on_written: Callable[[Outcome], None] | None = None,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self.store = SegmentWriter(directory, max_bytes, worker=worker, workers=workers)
        self._on_written = on_written
        self._on_overflow = on_overflow
        self._pending: list[tuple[Refusal, Engine | None]] = []
        self._pending_bytes = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failed_logged = False

    def open(self) -> None:
        """Take stock of earlier segments (blocking: at start, before serving)."""
        try:
            self.store.open()
        except OSError as exc:
            log.error("quarantine %s cannot be opened: %s", self.store.directory, exc)

    def submit(self, refusal: Refusal, engine: Engine | None) -> None:
        """Queue one refused body; never blocks, never raises for a full queue."""
        size = len(refusal.body)
        if (
            self._closed
            or len(self._pending) >= MAX_PENDING
            or self._pending_bytes + size > MAX_PENDING_BYTES
        ):
            if self._on_overflow is not None:
                self._on_overflow()
            return
        self._pending.append((refusal, engine))
        self._pending_bytes += size
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="envelope-proxy quarantine writer"
            )
        assert self._wake is not None
        self._wake.set()

    async def close(self) -> None:
        """Write what is queued, then stop; safe to call twice."""
        self._closed = True
        if self._task is not None and self._wake is not None:
            self._wake.set()
            await self._task
            self._task = None
        await asyncio.to_thread(self.store.close)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending, self._pending_bytes = self._pending, [], 0
                outcome = await asyncio.to_thread(self._write, batch)
                if self._on_written is not None:
                    self._on_written(outcome)
            if self._closed:
                return

    def _write(self, batch: list[tuple[Refusal, Engine | None]]) -> Outcome:
        items = [(refusal, _shape(engine, refusal.body)) for refusal, engine in batch]
        try:
            result = self.store.append(items)
        except Exception as exc:  # a full or broken volume must not stop the writer
            if not self._failed_logged:
                self._failed_logged = True
                log.error(
                    "quarantine write to %s failed: %s (logged once)",
                    self.store.directory,
                    exc if isinstance(exc, OSError) else type(exc).__name__,
                )
            return Outcome(AppendResult(), len(items), self.store.size)
        return Outcome(result, 0, self.store.size)


def _shape(engine: Engine | None, body: bytes) -> str | None:
    """The shape the engine detects in a refused body, or None (refused before that)."""
    if engine is None:
        return None
    try:
        return engine.detect(body).shape
    except EnvelopeError:
        return None
    except Exception:  # a broken rule must not lose the record
        return None
