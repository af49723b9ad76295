"""The quarantine's segment files and the replay journal, on a real directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.quarantine.journal import IN_FLIGHT, SENT, JournalBusy, ReplayJournal, read_states
from proxy.quarantine.records import Filter, Refusal, body_of, iso_time, kept_headers
from proxy.quarantine.store import ReadStats, SegmentWriter, find, iter_records, newest_first


def refusal(n: int, body: bytes | None = None, client: str = "c") -> Refusal:
    return Refusal(
        received_at=1_764_000_000.0 + n,
        client=client,
        path="/api/events",
        kind="event",
        target="executor_event",
        code="unknown_shape",
        field=None,
        index=None,
        headers={},
        body=body if body is not None else b'{"n":%d}' % n,
    )


def test_a_torn_last_line_is_skipped_and_the_rest_reads(tmp_path: Path) -> None:
    """A line cut short by a crash (no newline, or not JSON) costs only that line."""
    writer = SegmentWriter(tmp_path, 1 << 20)
    writer.append([(refusal(n), None) for n in range(3)])
    writer.close()
    (segment,) = tmp_path.glob("*.jsonl")
    segment.write_bytes(segment.read_bytes() + b'{"id":"x.4","v":1,"body_b64":"eyJu')
    stats = ReadStats()
    records = list(iter_records(tmp_path, stats))
    assert [body_of(r) for r in records] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    assert stats.torn == 1
    # A restarted writer does not append behind the torn line: it opens a segment of its own.
    again = SegmentWriter(tmp_path, 1 << 20)
    again.append([(refusal(9), None)])
    again.close()
    assert len(list(tmp_path.glob("*.jsonl"))) == 2
    assert [body_of(r) for r in iter_records(tmp_path)][-1] == b'{"n":9}'


def test_bodies_that_are_not_utf8_survive_byte_for_byte(tmp_path: Path) -> None:
    raw = b'{"x":"\xff\xfe\x00"}'
    writer = SegmentWriter(tmp_path, 1 << 20)
    (record_id,) = writer.append([(refusal(1, raw), None)]).ids
    assert body_of(find(tmp_path, record_id) or {}) == raw


def test_the_cap_drops_whole_oldest_segments_and_never_the_newest(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, 64 * 1024)
    dropped = 0
    for n in range(300):
        result = writer.append([(refusal(n, b"x" * 500), None)])
        dropped += result.dropped_records
    assert writer.size <= 64 * 1024
    kept = list(iter_records(tmp_path))
    assert len(kept) + dropped == 300
    assert kept[-1]["received_at"] == iso_time(refusal(299).received_at)


def test_too_large_records_are_counted_not_written(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, 64 * 1024)
    result = writer.append([(refusal(1, b"x" * 70_000), None)])
    assert (result.written, result.too_large) == (0, 1)


def test_pages_go_newest_first_and_follow_the_cursor(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, 1 << 20)
    writer.append([(refusal(n, client="a" if n % 2 else "b"), None) for n in range(7)])
    first = newest_first(tmp_path, Filter(), limit=3)
    second = newest_first(tmp_path, Filter(), limit=3, cursor=first.next)
    third = newest_first(tmp_path, Filter(), limit=3, cursor=second.next)
    bodies = [
        body_of(find(tmp_path, r["id"]) or {}) for p in (first, second, third) for r in p.records
    ]
    assert bodies == [b'{"n":%d}' % n for n in reversed(range(7))]
    assert third.next is None
    assert "body_b64" not in first.records[0]
    only_a = newest_first(tmp_path, Filter(client="a"), limit=10)
    assert [r["client"] for r in only_a.records] == ["a"] * 3


def test_credentials_are_never_kept_even_as_the_client_header() -> None:
    headers = {"authorization": "Bearer x", "cookie": "a=1", "x-api-key": "k", "user-agent": "u"}
    assert kept_headers(headers, "X-Api-Key") == {"user-agent": "u"}
    assert kept_headers({"x-team": "t"}, "X-Team") == {"x-team": "t"}


def test_the_journal_keeps_the_last_state_and_skips_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = ReplayJournal(path)
    journal.open()
    journal.mark("a.1", IN_FLIGHT)
    journal.mark("a.1", SENT, status=200)
    journal.mark("a.2", IN_FLIGHT)
    with pytest.raises(JournalBusy):
        ReplayJournal(path).open()  # one replay at a time
    journal.close()
    path.write_bytes(path.read_bytes() + b'{"id":"a.2","sta')
    assert read_states(path) == {"a.1": SENT, "a.2": IN_FLIGHT}


def test_worker_0_adopts_the_segments_of_workers_that_no_longer_run(tmp_path: Path) -> None:
    """Scaled down from two workers to one: worker 1's old segments count and age out."""
    old = SegmentWriter(tmp_path, 64 * 1024, worker=1, workers=2)
    old.append([(refusal(n, b"y" * 500), None) for n in range(20)])
    old.close()
    writer = SegmentWriter(tmp_path, 64 * 1024, worker=0, workers=1)
    writer.open()
    assert writer.size > 0
    for n in range(200):
        writer.append([(refusal(n, b"x" * 500), None)])
    assert not list(tmp_path.glob("*-001.jsonl"))
    assert writer.size <= 64 * 1024
