"""The soak at test size: 5 000 events through a real proxy process into a faulty emulator."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from bench._soak_events import ClientLog, run_client
from bench._soak_verify import prove
from bench.soak import RSS_GROWTH_LIMIT, SoakConfig, Summary, report, run


async def _soak(tmp_path: Path, events: int, clients: int = 32) -> Summary:
    return await run(
        SoakConfig(events=events, clients=clients, time_scale=0.1, timeout=90, work_dir=tmp_path)
    )


async def test_soak_of_5000_events_loses_nothing_and_changes_no_id(tmp_path: Path) -> None:
    """Under 503s, dropped connections, slow answers and an upstream restart, every event is
    stored, duplicates come only from lost answers, ids stay exact, memory stays flat.

    Bounded by outcomes: an event whose retries all fell into the restart is dispatched again
    once the upstream is back, so a slow restart on a loaded machine costs attempts, not
    events."""
    summary = await _soak(tmp_path, 5000)
    text = report(summary)
    assert summary.ok, text
    proof = summary.proof
    assert proof.acked == proof.stored_events == 5000, text
    assert summary.lost == 0, text
    assert summary.log.exhausted == [], text
    assert proof.violations == {}, text
    assert proof.stored_rows == 5000 + proof.duplicates, text
    # The faults really happened, and the clients really saw them through the proxy.
    assert summary.restarts == 1, text
    for fault in ("status", "drop_after_read", "delay"):
        assert summary.faults[fault] > 0, text
    assert summary.attempts["503"] == summary.faults["status"], text
    assert summary.attempts["502 upstream_disconnected"] >= summary.faults["drop_after_read"]
    assert 0 < summary.rss_warm <= summary.rss_peak, text
    assert summary.rss_end - summary.rss_warm < RSS_GROWTH_LIMIT, text


def _rows(db: sqlite3.Connection) -> dict[str, tuple[int, bytes]]:
    """The request seq and body of the first stored copy of each event, by marker."""
    found: dict[str, tuple[int, bytes]] = {}
    query = "SELECT r.seq, r.body FROM events e JOIN requests r ON r.seq = e.request_seq"
    for seq, body in db.execute(query):
        marker = orjson.loads(body)["context"]["marker"]
        found.setdefault(marker, (seq, bytes(body)))
    return found


async def test_soak_proof_catches_a_lost_event_a_changed_id_and_a_double_send(
    tmp_path: Path,
) -> None:
    """Tampering with the store after a clean run makes the proof report each violation."""
    summary = await _soak(tmp_path, 300, clients=8)
    assert summary.ok, report(summary)
    db_file = tmp_path / "upstream.db"
    db = sqlite3.connect(db_file, isolation_level=None)
    rows = _rows(db)
    # soak-0 vanishes from the store.
    db.execute("DELETE FROM events WHERE request_seq = ?", (rows["soak-0"][0],))
    # soak-3 (an executor_event) is stored with another execution id.
    seq, body = rows["soak-3"]
    changed = orjson.loads(body)
    changed["execution_id"] += 1
    db.execute("UPDATE requests SET body = ? WHERE seq = ?", (orjson.dumps(changed), seq))
    # soak-6's acknowledged attempt is stored a second time.
    seq, body = rows["soak-6"]
    cursor = db.execute(
        "INSERT INTO requests (received_at, path, profile, version, content_type, body,"
        " status, event_ids, duplicate, fault)"
        " SELECT received_at, path, profile, version, content_type, body, status, event_ids,"
        " duplicate, fault FROM requests WHERE seq = ?",
        (seq,),
    )
    event_id = db.execute("SELECT event_id FROM events WHERE request_seq = ?", (seq,)).fetchone()
    db.execute(
        "INSERT INTO events (request_seq, item_index, event_id) VALUES (?, 0, ?)",
        (cursor.lastrowid, event_id[0]),
    )
    db.close()

    proof = prove(db_file, summary.log, 300)

    assert proof.violations["acknowledged but not stored"] == 1
    assert proof.violations["execution_id changed"] == 1
    assert proof.violations["one attempt stored twice"] == 1
    assert sum(proof.violations.values()) == 3, proof.examples


async def test_an_event_whose_retries_all_fail_is_dispatched_again_once_ready(
    aiohttp_server: Any,
) -> None:
    """A soak client gives an event a new round (attempt numbers running on) after `ready`,
    so an upstream that is down for longer than the retries costs attempts, not events."""
    answers = iter([503] * 5)

    async def events(request: web.Request) -> web.Response:
        status = next(answers, 200)
        return web.json_response({"event_id": 7} if status == 200 else {}, status=status)

    app = web.Application()
    app.router.add_post("/api/events", events)
    server = await aiohttp_server(app)
    waits = []

    async def ready() -> None:
        waits.append(True)

    log = ClientLog()
    await run_client("w", str(server.make_url("/api/events")), iter([0]), log, 0.01, ready)
    assert log.acked == 1
    assert log.exhausted == []
    assert (log.redispatched, len(waits)) == (1, 1)
    assert [a.number for a in log.attempts[0]] == [1, 2, 3, 4, 5, 6]
    assert [a.status for a in log.attempts[0]] == [503] * 5 + [200]
