"""Ledger persistence: atomic writes, bounded write rate, corrupt files set aside, restarts."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import orjson
import pytest

from proxy.observability.ledger import SunsetLedger
from proxy.observability.store import LedgerFlusher, LedgerStore

DAY = 86400.0
T0 = 1_800_000_000.0


def filled_ledger() -> SunsetLedger:
    book = SunsetLedger(DAY, tracking_since=T0 - DAY)
    book.record("legacy-svc", "event_request", T0 - 3)
    book.record("canon-svc", "executor_event", T0 - 1)
    book.record_shadow_failure("legacy-svc", "invalid_id", T0 - 2)
    return book


def test_write_then_load_gives_the_same_ledger(tmp_path: Path) -> None:
    """A written ledger loads back with identical content and leaves no temp file behind."""
    store = LedgerStore(tmp_path / "ledger.json")
    book = filled_ledger()
    store.write(orjson.dumps(book.to_state()))
    loaded = store.load(DAY)
    assert loaded is not None
    assert loaded.report(T0) == book.report(T0)
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.json"]


def test_missing_file_loads_as_nothing(tmp_path: Path) -> None:
    """No file yet means a fresh ledger, without any error."""
    assert LedgerStore(tmp_path / "absent.json").load(DAY) is None


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{not json", id="invalid-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"format": "envelope-proxy-ledger/1", "clients": 3}', id="bad-structure"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
    ],
)
def test_corrupt_file_is_set_aside_and_logged(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt ledger is renamed .corrupt-<ts>, reported in the log, and loading starts empty."""
    path = tmp_path / "ledger.json"
    path.write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="proxy.observability.store"):
        assert LedgerStore(path).load(DAY) is None
    assert not path.exists()
    (aside,) = tmp_path.iterdir()
    assert aside.name.startswith("ledger.json.corrupt-")
    assert aside.read_bytes() == content
    assert "corrupt" in caplog.text


def test_write_replaces_atomically(tmp_path: Path) -> None:
    """Each write puts a new file in place by rename (a new inode), never edits in place."""
    path = tmp_path / "ledger.json"
    store = LedgerStore(path)
    store.write(b'{"a": 1}')
    first = path.stat().st_ino
    store.write(b'{"a": 2}')
    assert path.stat().st_ino != first
    assert path.read_bytes() == b'{"a": 2}'


def test_write_into_a_missing_directory_raises(tmp_path: Path) -> None:
    """A bad state_file directory surfaces as FileNotFoundError, which the flusher logs."""
    with pytest.raises(FileNotFoundError):
        LedgerStore(tmp_path / "no" / "such" / "ledger.json").write(b"{}")


async def test_flusher_writes_at_a_bounded_rate(tmp_path: Path) -> None:
    """A burst of changes causes one write now and at most one more after the interval."""
    path = tmp_path / "ledger.json"
    book = SunsetLedger(DAY, tracking_since=T0)
    flusher = LedgerFlusher(LedgerStore(path), book, min_interval=0.5)
    book.record("a", "event_request", T0)
    flusher.mark_dirty()
    for _ in range(50):
        await asyncio.sleep(0.005)
        if path.exists():
            break
    assert path.exists()
    first_inode = path.stat().st_ino
    for i in range(20):
        book.record("a", "event_request", T0 + i)
        flusher.mark_dirty()
        await asyncio.sleep(0.005)
    assert path.stat().st_ino == first_inode  # still inside the interval: no second write
    await asyncio.sleep(0.7)
    assert path.stat().st_ino != first_inode
    state = orjson.loads(path.read_bytes())
    assert state["clients"]["a"]["shapes"]["event_request"]["count"] == 21
    await flusher.close()


async def test_close_writes_pending_changes(tmp_path: Path) -> None:
    """Changes made just before shutdown are written by close()."""
    path = tmp_path / "ledger.json"
    book = SunsetLedger(DAY, tracking_since=T0)
    flusher = LedgerFlusher(LedgerStore(path), book, min_interval=60)
    book.record("a", "worker_event", T0)
    flusher.mark_dirty()
    await asyncio.sleep(0.05)
    book.record("b", "executor_event", T0)
    flusher.mark_dirty()
    await flusher.close()
    state = orjson.loads(path.read_bytes())
    assert set(state["clients"]) == {"a", "b"}


async def test_write_failure_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A state_file in a missing directory only produces warnings."""
    book = SunsetLedger(DAY, tracking_since=T0)
    flusher = LedgerFlusher(LedgerStore(tmp_path / "missing" / "l.json"), book, min_interval=0)
    with caplog.at_level(logging.WARNING, logger="proxy.observability.store"):
        book.record("a", "batch", T0)
        flusher.mark_dirty()
        await asyncio.sleep(0.1)
        book.record("a", "batch", T0)
        flusher.mark_dirty()
        await flusher.close()
    assert "not written" in caplog.text


async def test_a_failed_write_is_retried_at_shutdown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A periodic write that failed (disk full, directory not there yet) is not forgotten:
    close() writes the state even when no change came after the failure."""
    directory = tmp_path / "later"
    book = SunsetLedger(DAY, tracking_since=T0)
    flusher = LedgerFlusher(LedgerStore(directory / "l.json"), book, min_interval=0)
    with caplog.at_level(logging.WARNING, logger="proxy.observability.store"):
        book.record("a", "event_request", T0)
        flusher.mark_dirty()
        for _ in range(200):  # until the periodic write has run and failed
            if "not written" in caplog.text:
                break
            await asyncio.sleep(0.01)
    assert "not written" in caplog.text
    directory.mkdir()
    await flusher.close()
    state = orjson.loads((directory / "l.json").read_bytes())
    assert set(state["clients"]) == {"a"}
