"""`/clients` from a live extension, the `envelope-proxy clients` table, and restarts."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from proxy.cli import main
from proxy.config import Settings
from proxy.ledger_commands import PARTIAL_WARNING, render
from proxy.observability import ObservabilityExtension, build_extension
from tests.builders import client_hints, event_record


def send(ext: ObservabilityExtension, client: str, shape: str | None, times: int = 1) -> None:
    for _ in range(times):
        ext.on_event(event_record(hints=client_hints(header=client), shape=shape))


async def admin(ext: ObservabilityExtension, aiohttp_server: Any) -> TestServer:
    app = web.Application()
    app.add_routes(ext.admin_routes())
    server: TestServer = await aiohttp_server(app)
    return server


async def fetch_clients(server: TestServer) -> dict[str, Any]:
    async with ClientSession() as session, session.get(server.make_url("/clients")) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        result: dict[str, Any] = orjson.loads(await response.read())
    return result


async def test_clients_endpoint_reports_shapes_and_verdict(aiohttp_server: Any) -> None:
    """After mixed traffic /clients lists the legacy client first and the verdict is not ready."""
    ext = build_extension(Settings())
    send(ext, "new-svc", "executor_event", 3)
    send(ext, "old-svc", "event_request", 2)
    send(ext, "old-svc", "executor_event")
    report = await fetch_clients(await admin(ext, aiohttp_server))
    assert report["ready_to_sunset_v1"] is False
    assert report["blocking_clients"] == ["old-svc"]
    old, new = report["clients"]
    assert (old["client"], old["canonical_only"], old["blocks_sunset"]) == ("old-svc", False, True)
    assert old["shapes"]["event_request"]["count"] == 2
    assert (new["client"], new["canonical_only"], new["blocks_sunset"]) == ("new-svc", True, False)
    assert new["shapes"]["executor_event"]["count"] == 3


async def test_clients_command_prints_legacy_first_and_the_verdict(
    aiohttp_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command prints a table with the legacy client on top and a NOT-ready verdict, exit 1."""
    ext = build_extension(Settings())
    send(ext, "aaa-canonical", "executor_event", 5)
    send(ext, "zzz-legacy", "worker_event", 2)
    server = await admin(ext, aiohttp_server)
    url = str(server.make_url("/")).rstrip("/")
    code = await asyncio.to_thread(main, ["clients", "--admin", url])
    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["CLIENT", "STATUS", "SHAPES", "LAST", "SEEN", "SHADOW", "FAILURES"]
    assert lines[1].split()[:3] == ["zzz-legacy", "legacy", "worker_event=2"]
    assert lines[2].split()[:3] == ["aaa-canonical", "canonical", "executor_event=5"]
    assert lines[-1] == (
        "verdict: NOT ready to sunset v1: 1 client sent legacy shapes in the last 1d: zzz-legacy"
    )


async def test_clients_command_json_and_unreachable_admin(
    aiohttp_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json (or --output json) prints the document with the verdict as exit status (a
    young ledger cannot tell: 2); an unreachable admin URL is exit 2 with a message."""
    ext = build_extension(Settings())
    send(ext, "only", "executor_event")
    server = await admin(ext, aiohttp_server)
    url = str(server.make_url("/"))
    assert await asyncio.to_thread(main, ["clients", "--admin", url, "--json"]) == 2
    report = orjson.loads(capsys.readouterr().out)
    assert (report["ready_to_sunset_v1"], report["window_observed"]) == (True, False)
    old = build_extension(Settings())
    old.ledger.tracking_since -= 86400
    send(old, "only", "executor_event")
    old_url = str((await admin(old, aiohttp_server)).make_url("/"))
    assert await asyncio.to_thread(main, ["clients", "--admin", old_url, "--output", "json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["window_observed"] is True
    port = server.port
    await server.close()
    code = await asyncio.to_thread(
        main, ["clients", "--admin", f"http://127.0.0.1:{port}", "--timeout", "2"]
    )
    assert code == 2
    assert "cannot read" in capsys.readouterr().err


async def test_several_workers_make_clients_partial_without_a_verdict(
    aiohttp_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """With workers > 1, /clients says it is partial and claims no verdict; the command warns."""
    ext = build_extension(Settings.model_validate({"workers": 2}))
    send(ext, "new-svc", "executor_event")
    server = await admin(ext, aiohttp_server)
    report = await fetch_clients(server)
    assert report["partial"] is True
    assert report["ready_to_sunset_v1"] is None
    assert report["blocking_clients"] == []
    url = str(server.make_url("/")).rstrip("/")
    assert await asyncio.to_thread(main, ["clients", "--admin", url]) == 2  # could not tell
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2] == PARTIAL_WARNING
    assert lines[-1] == "verdict: unknown: the ledger covers one worker's traffic only"
    single = await fetch_clients(await admin(build_extension(Settings()), aiohttp_server))
    assert "partial" not in single
    assert single["ready_to_sunset_v1"] is True


def test_render_ready_verdict_with_a_young_ledger() -> None:
    """A ready verdict on a ledger younger than the window carries the observed-since caveat."""
    ext = build_extension(Settings.model_validate({"clients": {"sunset_window_seconds": 3600}}))
    send(ext, "svc", "executor_event")
    text = render(ext.ledger.report(ext.ledger.tracking_since + 60))
    assert "verdict: ready to sunset v1: no legacy shape in the last 1h (observed since" in text
    empty = render(build_extension(Settings()).ledger.report(0.0))
    assert "(no event requests recorded yet)" in empty


def series(ext: ObservabilityExtension) -> dict[tuple[str, str | None, str | None], float]:
    """What the extension's /metrics exposes, by (name, client, shape)."""
    return {
        (sample.name, sample.labels.get("client"), sample.labels.get("shape")): sample.value
        for metric in ext.metrics.registry.collect()
        for sample in metric.samples
    }


async def test_ledger_survives_a_restart(tmp_path: Path, aiohttp_server: Any) -> None:
    """With state_file set, a new extension starts from what the previous one recorded, and
    exposes it on /metrics (last-seen times, ledger counts) before any new event."""
    settings = Settings.model_validate({"clients": {"state_file": str(tmp_path / "ledger.json")}})
    first = build_extension(settings)
    send(first, "old-svc", "emit_request", 4)
    send(first, "new-svc", "executor_event")
    await first.close()
    second = build_extension(settings)
    # Before any new event, /metrics already shows what the ledger read back holds.
    exposed = series(second)
    old_last = first.ledger.clients["old-svc"].shapes["emit_request"].last_seen
    assert exposed[("envelope_proxy_ledger_events", "old-svc", "emit_request")] == 4
    assert exposed[("envelope_proxy_ledger_events", "new-svc", "executor_event")] == 1
    last_seen = "envelope_proxy_client_last_seen_timestamp_seconds"
    assert exposed[(last_seen, "old-svc", "emit_request")] == old_last
    since = ("envelope_proxy_ledger_tracking_since_timestamp_seconds", None, None)
    assert exposed[since] == first.ledger.tracking_since
    send(second, "old-svc", "emit_request")
    assert series(second)[("envelope_proxy_ledger_events", "old-svc", "emit_request")] == 5
    report = await fetch_clients(await admin(second, aiohttp_server))
    assert report["clients"][0]["client"] == "old-svc"
    assert report["clients"][0]["shapes"]["emit_request"]["count"] == 5
    assert {c["client"] for c in report["clients"]} == {"old-svc", "new-svc"}
    assert report["tracking_since"] == first.ledger.report(0)["tracking_since"]
    await second.close()


async def test_corrupt_state_file_does_not_stop_the_proxy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt state file is set aside with a log line and the extension starts empty."""
    path = tmp_path / "ledger.json"
    path.write_text('{"format": "envelope-proxy-ledger/1", "clients": {"a": 1}}')
    settings = Settings.model_validate({"clients": {"state_file": str(path)}})
    with caplog.at_level(logging.ERROR):
        ext = build_extension(settings)
    assert ext.ledger.clients == {}
    assert "corrupt" in caplog.text
    assert any(name.startswith("ledger.json.corrupt-") for name in os.listdir(tmp_path))
    send(ext, "svc", "executor_event")
    await ext.close()
    assert (
        orjson.loads(path.read_bytes())["clients"]["svc"]["shapes"]["executor_event"]["count"] == 1
    )
