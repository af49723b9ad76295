"""A quarantined record whose request cannot be written is not sent, and says so.

The request is built before the replay journals it as in flight: a header the wire cannot
carry (a record edited by hand, say) is journalled `not_sent`, never `uncertain`, and no
connection is opened. An upstream on loopback counts the connections it accepts.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from proxy.envelope import CANONICAL_TARGET, Engine, load_rules
from proxy.quarantine import journal as j
from proxy.quarantine.replay import Replayer, ReplayOptions

BODY = (
    b'{"execution_id":478775660589088776,"event_type":"command.completed","step":"s",'
    b'"status":"COMPLETED","created_at":"2026-05-31T03:14:15Z","context":{}}'
)


def record(record_id: str, user_agent: str) -> dict[str, object]:
    return {
        "id": record_id,
        "kind": "event",
        "path": "/api/events",
        "headers": {"user-agent": user_agent},
        "body_b64": base64.b64encode(BODY).decode("ascii"),
    }


async def test_an_unsendable_record_is_not_sent_and_not_uncertain(tmp_path: Path) -> None:
    accepted = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    journal = j.ReplayJournal(tmp_path / j.JOURNAL_NAME)
    journal.open()
    try:
        replayer = Replayer(
            engine=Engine(load_rules(None)),
            target=CANONICAL_TARGET,
            upstream=f"http://127.0.0.1:{port}",
            journal=journal,
            options=ReplayOptions(rate=1000, timeout_seconds=2, connect_timeout_seconds=1),
        )
        async with asyncio.timeout(10):
            summary = await replayer.run([record("r1", "worker\r\nX-Injected: 1")])
    finally:
        journal.close()
        server.close()
        await server.wait_closed()
    assert (summary.sent, summary.upstream_failed, summary.uncertain) == (0, 1, 0)
    assert j.read_states(tmp_path / j.JOURNAL_NAME) == {"r1": j.NOT_SENT}
    assert accepted == 0
