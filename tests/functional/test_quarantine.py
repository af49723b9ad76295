"""Rejection metrics and the quarantine, through the real proxy in front of the emulator.

Refused bodies are counted by client and code and, with the quarantine on, kept byte-exact
in size-capped segments that admin `GET /rejections` lists; a `serve` process killed with
SIGKILL while writing leaves a store that still reads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
from pathlib import Path
from typing import Any

import aiohttp

from proxy.quarantine.store import ReadStats, iter_records, segments
from tests.functional.cutover_support import CutoverStack, start_cutover_stack
from tests.functional.refused_bodies import ACCEPTED, LIMITS, REFUSED
from tests.functional.server_support import (
    ServeProcess,
    ServerFactory,
    eventually,
    start_upstream,
)
from tests.loopback import free_port

SECRET = "Bearer do-not-keep-me"
JSON = {"Content-Type": "application/json"}


def quarantine_config(directory: Path, max_bytes: int = 1 << 20) -> dict[str, Any]:
    return {
        "limits": LIMITS,
        "quarantine": {"enabled": True, "dir": str(directory), "max_bytes": max_bytes},
    }


async def all_records(stack: CutoverStack, **query: str) -> list[dict[str, Any]]:
    """Every record /rejections lists, following `next` page by page."""
    records: list[dict[str, Any]] = []
    cursor = ""
    while True:
        params = {**query, **({"cursor": cursor} if cursor else {})}
        async with stack.session.get(stack.admin + "/rejections", params=params) as response:
            assert response.status == 200, await response.text()
            page = await response.json()
        records += page["records"]
        if page["next"] is None:
            return records
        cursor = page["next"]


async def post_every_refusal(stack: CutoverStack) -> None:
    for code, (path, body, _) in REFUSED.items():
        status, _ = await stack.post(
            body,
            client="bad-producer",
            path=path,
            headers={"Authorization": SECRET, "Cookie": "session=1", "User-Agent": f"ua-{code}"},
        )
        assert 400 <= status < 500, code


async def test_rejections_are_counted_by_client_and_code(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """envelope_proxy_rejections_total has one series per (client, code), accepted ones none."""
    stack = await start_cutover_stack(aiohttp_server, session, {"limits": LIMITS})
    assert (await stack.post(ACCEPTED, client="good"))[0] == 200
    await post_every_refusal(stack)
    assert (await stack.post(b"x", headers={"Content-Type": "text/plain"}, client="text"))[0] == 415
    counted = await stack.metric("envelope_proxy_rejections_total")
    expected = {(("client", "bad-producer"), ("code", code)): 1.0 for code in REFUSED}
    expected[(("client", "text"), ("code", "unsupported_media_type"))] = 1.0
    assert counted == expected
    async with session.get(stack.admin + "/rejections") as response:
        assert response.status == 404  # the quarantine is off
        assert "quarantine" in (await response.json())["detail"]


async def test_refused_bodies_of_each_code_land_in_the_quarantine_and_nothing_else(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """One record per engine refusal, byte-exact, with its code, field, shape and kept
    headers (never credentials); accepted events, upstream refusals and 415s are not kept."""
    stack = await start_cutover_stack(aiohttp_server, session, quarantine_config(tmp_path))
    assert (await stack.post(ACCEPTED, client="good"))[0] == 200
    # The upstream refuses this one (a duplicate claim is not the proxy's refusal).
    async with session.post(stack.upstream + "/_emulator/faults", json={"status": 422}) as r:
        assert r.status in (200, 204)
    assert (await stack.post(ACCEPTED, client="upstream-said-no"))[0] == 422
    async with session.delete(stack.upstream + "/_emulator/faults") as r:
        assert r.status in (200, 204)
    assert (await stack.post(b"{}", headers={"Content-Type": "text/plain"}))[0] == 415
    await post_every_refusal(stack)

    async def all_written() -> bool:
        return len(await all_records(stack)) >= len(REFUSED)

    await eventually(all_written)
    records = await all_records(stack, body="1")
    assert sorted(r["code"] for r in records) == sorted(REFUSED)
    for record in records:
        path, body, field = REFUSED[record["code"]]
        assert base64.b64decode(record["body_b64"]) == body
        assert (record["path"], record["field"], record["client"]) == (path, field, "bad-producer")
        assert record["headers"]["user-agent"] == f"ua-{record['code']}"
        assert record["headers"]["x-noetl-client"] == "bad-producer"
        assert {"id", "received_at", "client", "shape", "code"} <= set(record)
    by_code = {r["code"]: r for r in records}
    assert by_code["invalid_field_type"]["shape"] == "event_request"
    assert by_code["invalid_json"]["shape"] is None
    assert (by_code["invalid_batch_item"]["index"], by_code["invalid_batch_item"]["shape"]) == (
        1,
        "batch",
    )
    on_disk = await asyncio.to_thread(store_bytes, tmp_path)
    assert SECRET.encode() not in on_disk
    assert b"session=1" not in on_disk
    # Newest first, bodies only when asked, and the filters.
    listed = await all_records(stack)
    assert [r["code"] for r in listed] == list(reversed(REFUSED))
    assert all("body_b64" not in r for r in listed)
    assert [r["code"] for r in await all_records(stack, code="too_deep")] == ["too_deep"]
    assert await all_records(stack, client="good") == []
    paged = await all_records(stack, limit="3")
    assert [r["id"] for r in paged] == [r["id"] for r in listed]
    written = await stack.metric("envelope_proxy_quarantine_records_total")
    assert written == {(("result", "written"),): float(len(REFUSED))}


async def test_the_cap_drops_the_oldest_segments_and_counts_them(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Past max_bytes the oldest segments go, whole; the metric counts them; the newest
    records stay, and the store never grows past the cap by more than one segment."""
    cap = 64 * 1024
    stack = await start_cutover_stack(aiohttp_server, session, quarantine_config(tmp_path, cap))
    sent = [b'{"unknown":"%d","pad":"%s"}' % (n, b"x" * 400) for n in range(200)]
    for body in sent:
        assert (await stack.post(body, client="noisy"))[0] == 422

    async def last_written() -> bool:
        page = await all_records(stack, limit="1", body="1")
        return bool(page) and base64.b64decode(page[0]["body_b64"]) == sent[-1]

    await eventually(last_written)
    total = len(await asyncio.to_thread(store_bytes, tmp_path))
    assert total <= cap + cap // 8
    kept = [base64.b64decode(r["body_b64"]) for r in await read_store(tmp_path)]
    assert kept == sent[-len(kept) :]  # the newest, in order, nothing in between lost
    assert 0 < len(kept) < len(sent)
    dropped = await stack.metric("envelope_proxy_quarantine_dropped_segments_total")
    dropped_records = await stack.metric("envelope_proxy_quarantine_dropped_records_total")
    assert dropped[()] >= 1
    assert dropped_records[()] == len(sent) - len(kept)
    size = await stack.metric("envelope_proxy_quarantine_bytes")
    assert size[()] == total


async def test_sigkill_mid_write_leaves_a_readable_store(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Killed with SIGKILL while refused bodies are being written: every record that is
    there reads back byte-exact, at most one torn line is skipped, and a restarted proxy
    keeps writing to a segment of its own."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    env = {
        "ENVELOPE_PROXY_QUARANTINE__ENABLED": "true",
        "ENVELOPE_PROXY_QUARANTINE__DIR": str(tmp_path),
        "ENVELOPE_PROXY_LIMITS__MAX_BODY_BYTES": str(4 << 20),
    }
    args = ("--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--upstream", upstream)
    serve = await ServeProcess.start(*args, env=env)
    bodies = {b'{"big":"%d","pad":"%s"}' % (n, b"y" * (1 << 20)) for n in range(40)}

    async def send(body: bytes) -> None:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with session.post(serve.proxy + "/api/events", data=body, headers=JSON) as r:
                await r.read()

    try:
        sends = [asyncio.create_task(send(body)) for body in bodies]

        async def some_written() -> bool:
            return len(await asyncio.to_thread(store_bytes, tmp_path)) > (2 << 20)

        await eventually(some_written, within=30)
        serve.process.send_signal(signal.SIGKILL)
        await serve.wait()
        await asyncio.gather(*sends)
    finally:
        await serve.stop()
    stats = ReadStats()
    kept = await read_store(tmp_path, stats)
    assert kept
    assert stats.torn <= 1
    assert all(base64.b64decode(r["body_b64"]) in bodies for r in kept)
    assert len({r["id"] for r in kept}) == len(kept)
    before = await asyncio.to_thread(segments, tmp_path)
    restarted = await ServeProcess.start(*args, env=env)
    try:
        async with session.post(restarted.proxy + "/api/events", data=b"[]", headers=JSON) as r:
            assert r.status == 422

        async def written_again() -> bool:
            codes = [str(r["code"]) for r in await read_store(tmp_path)]
            return codes[-1] == "not_an_object"

        await eventually(written_again)
    finally:
        await restarted.stop()
    assert len(await asyncio.to_thread(segments, tmp_path)) == len(before) + 1


def store_bytes(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in segments(directory))


async def read_store(directory: Path, stats: ReadStats | None = None) -> list[dict[str, Any]]:
    """The store as a reader sees it (read in a thread, as the proxy does)."""
    return await asyncio.to_thread(lambda: list(iter_records(directory, stats)))


async def test_with_two_workers_every_refusal_is_kept_once_and_listed(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """`serve --workers 2`: each worker writes its own segments; admin /rejections (worker
    0) lists every record of both, each id once."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    port = free_port()
    env = {
        "ENVELOPE_PROXY_QUARANTINE__ENABLED": "true",
        "ENVELOPE_PROXY_QUARANTINE__DIR": str(tmp_path),
        "ENVELOPE_PROXY_LIFECYCLE__DRAIN_SECONDS": "0",
    }
    serve = await ServeProcess.start(
        "--listen", f"127.0.0.1:{port}", "--admin-listen", "127.0.0.1:0",
        "--upstream", upstream, "--workers", "2", env=env,
    )  # fmt: skip
    sent = [b'{"unknown":%d}' % n for n in range(40)]
    try:
        # A new connection per request, so the kernel spreads them over both workers.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as client:
            for body in sent:
                async with client.post(serve.proxy + "/api/events", data=body, headers=JSON) as r:
                    assert r.status == 422

            async def listed() -> list[dict[str, Any]]:
                async with client.get(serve.admin + "/rejections?limit=1000&body=1") as r:
                    records: list[dict[str, Any]] = (await r.json())["records"]
                    return records

            async def all_listed() -> bool:
                return len(await listed()) == len(sent)

            await eventually(all_listed)
            records = await listed()
    finally:
        serve.signal(signal.SIGTERM)
        await serve.wait()
    assert sorted(base64.b64decode(r["body_b64"]) for r in records) == sorted(sent)
    assert len({r["id"] for r in records}) == len(sent)
    writers = {path.stem.split("-")[1] for path in await asyncio.to_thread(segments, tmp_path)}
    assert writers <= {"000", "001"}
