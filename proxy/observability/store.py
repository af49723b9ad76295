"""Persistence of the sunset ledger: atomic writes at a bounded rate, corrupt files set aside.

The file is JSON (`SunsetLedger.to_state()`). A write goes to a temporary file in the same
directory, is flushed to disk and renamed over the old file, so a reader or a crash never
sees half a ledger. Writes happen at most every `min_interval` seconds while events arrive,
off the event loop, and once more at shutdown. A file that cannot be parsed is logged and
renamed `<name>.corrupt-<unix time>`; the proxy starts with an empty ledger and never fails
because of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path

import orjson

from proxy.observability.ledger import LedgerFormatError, SunsetLedger

log = logging.getLogger(__name__)

DEFAULT_MIN_INTERVAL = 5.0


class LedgerStore:
    """Reads and atomically writes one ledger file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, window_seconds: float) -> SunsetLedger | None:
        """The persisted ledger, or None when there is none or it had to be set aside."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("ledger %s not readable, starting empty: %s", self.path, exc)
            return None
        try:
            return SunsetLedger.from_state(orjson.loads(raw), window_seconds)
        except (orjson.JSONDecodeError, LedgerFormatError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            try:
                self.path.replace(aside)
            except OSError as move_exc:
                log.error(
                    "ledger %s is corrupt (%s) and could not be moved: %s", self.path, exc, move_exc
                )
            else:
                log.error(
                    "ledger %s is corrupt (%s); moved to %s, starting empty", self.path, exc, aside
                )
            return None

    def write(self, data: bytes) -> None:
        """Replace the file with `data` atomically (temp file, fsync, rename)."""
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class LedgerFlusher:
    """Schedules ledger writes on the running loop, no more often than `min_interval`."""

    def __init__(
        self, store: LedgerStore, ledger: SunsetLedger, min_interval: float = DEFAULT_MIN_INTERVAL
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._min_interval = min_interval
        self._dirty = False
        self._last_write = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Future[None] | None = None
        self._closed = False

    def mark_dirty(self) -> None:
        """The ledger changed: make sure a write is scheduled."""
        self._dirty = True
        if self._closed or self._timer is not None or self._writing is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (tools, tests): close() writes
        delay = max(0.0, self._last_write + self._min_interval - time.monotonic())
        self._timer = loop.call_later(delay, self._flush, loop)

    async def close(self) -> None:
        """Stop scheduling and write the final state when anything changed."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await self._writing
        if self._dirty:
            self._dirty = False
            data = orjson.dumps(self._ledger.to_state())
            try:
                await asyncio.to_thread(self._store.write, data)
            except OSError as exc:
                log.warning("ledger %s not written at shutdown: %s", self._store.path, exc)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if not self._dirty or self._closed:
            return
        self._dirty = False
        self._last_write = time.monotonic()
        data = orjson.dumps(self._ledger.to_state())  # snapshot on the loop; write off it
        self._writing = loop.run_in_executor(None, self._store.write, data)
        self._writing.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[None]) -> None:
        self._writing = None
        exc = future.exception() if not future.cancelled() else None
        if exc is not None:
            log.warning("ledger %s not written: %s", self._store.path, exc)
            self._dirty = True  # tried again with the next change, and at shutdown
            return
        if self._dirty:
            self.mark_dirty()
