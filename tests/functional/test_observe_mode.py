"""Observe mode through the real proxy: every event body reaches the emulator byte for byte,
while metrics and `/clients` say what enforce mode would have done; a reload switches it
to enforce without a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from proxy.config import Settings
from tests.functional.cutover_support import settings_with, start_cutover_stack
from tests.functional.refused_bodies import LIMITS, REFUSED
from tests.functional.server_support import ServerFactory, eventually
from tests.samples import sample_bytes

# What a legacy server takes as it is (cutover step 1 runs observe in front of one).
LEGACY = sample_bytes("rust_event_request__v1_legacy_full")
LEGACY_TOO = sample_bytes("rust_event_request__minimal_defaults")
# Converted in enforce mode for the canonical server of the reload test.
WORKER_EVENT = sample_bytes("worker_event__call_done")


async def test_observe_forwards_every_body_as_received_and_reports_enforce(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Accepted and refused bodies alike arrive upstream unchanged; the would-be outcome
    for both targets is in envelope_proxy_observe_total and /clients; nothing is
    quarantined and nothing counts as rejected by the proxy."""
    config: dict[str, Any] = {
        "mode": "observe",
        "upstream": {"version": "v1"},
        "limits": LIMITS,
        "quarantine": {"enabled": True, "dir": str(tmp_path)},
    }
    stack = await start_cutover_stack(aiohttp_server, session, config, "rust-2.9.0")
    sent: list[tuple[str, bytes]] = [("/api/events", LEGACY), ("/api/events", LEGACY_TOO)]
    sent += [(path, body) for path, body, _ in REFUSED.values()]
    for path, body in sent:
        status, _ = await stack.post(body, client="producer", path=path)
        assert status == 200 or body not in (LEGACY, LEGACY_TOO)
    arrived = await stack.arrived()
    assert [(path, body) for path, _, body in arrived] == sent
    # What the emulator stored is exactly what was sent: no rewrite, no minted id (the
    # legacy server also takes some bodies the rules refuse, as it did without the proxy).
    stored = await stack.stored_bodies()
    assert stored[:2] == [LEGACY, LEGACY_TOO]
    assert set(stored) <= {body for _, body in sent}
    observed = await stack.metric("envelope_proxy_observe_total")

    def results(target: str) -> dict[str, float]:
        return {dict(k)["result"]: v for k, v in observed.items() if dict(k)["target"] == target}

    expected = dict.fromkeys(REFUSED, 1.0)
    expected["ok"] = 2.0
    assert results("event_request") == expected
    assert sum(results("executor_event").values()) == len(sent)
    assert {dict(k)["client"] for k in observed} == {"producer"}
    report = await stack.admin_json("/clients")
    counts = report["observed"]["producer"]
    assert counts["event_request"]["ok"] == 2
    assert counts["event_request"]["unknown_shape"] == 1
    assert await stack.metric("envelope_proxy_rejections_total") == {}
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []


async def test_a_reload_switches_observe_to_enforce_without_a_restart(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """The same refused body is forwarded in observe mode and refused (never sent) once a
    reload says enforce; a legacy body is then converted again."""
    config: dict[str, Any] = {"mode": "observe", "limits": LIMITS}
    current: list[Settings] = []
    stack = await start_cutover_stack(
        aiohttp_server, session, config, reload_from=lambda: current[0]
    )
    refused = REFUSED["unknown_shape"][1]
    await stack.post(refused)
    assert len(await stack.arrived()) == 1
    current.append(settings_with({**config, "mode": "enforce"}, stack.upstream))
    await stack.reload()
    assert stack.state.snapshot.settings.mode == "enforce"
    status, _ = await stack.post(refused)
    assert status == 422
    assert (await stack.post(WORKER_EVENT))[0] == 200
    arrived = await stack.arrived()
    assert len(arrived) == 2
    assert arrived[-1][2] != WORKER_EVENT  # converted to executor_event now

    async def counted() -> bool:
        rejections = await stack.metric("envelope_proxy_rejections_total")
        return sum(rejections.values()) == 1

    await eventually(counted)
