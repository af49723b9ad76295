"""The fleet-wide sunset verdict against a real Prometheus scraping real proxies.

Two or three `envelope-proxy serve` processes in front of the emulator, a Prometheus on
loopback scraping them every second, clients' shapes sent through different proxies, one
proxy restarted with its ledger kept and then replaced by a fresh one; `envelope-proxy
clients --prometheus` must answer for the whole fleet. Everything waits on deadlines.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.cli import main
from tests.functional.prometheus_support import (
    PROMETHEUS,
    PrometheusServer,
    Proxy,
    poll,
    running,
)
from tests.functional.server_support import ServerFactory, closed_port_url, start_upstream
from tests.samples import sample_bytes

pytestmark = [
    pytest.mark.skipif(PROMETHEUS is None, reason="needs Debian's prometheus (.ci/run has it)"),
    pytest.mark.timeout(150),
]
LEGACY = sample_bytes("python_event_request__legacy_worker")
CANONICAL = sample_bytes("executor_event__call_done_inline_result")


async def fleet(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`envelope-proxy clients --prometheus ...`: exit code, stdout, stderr."""
    code = await asyncio.to_thread(main, ["clients", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def fleet_json(
    capsys: pytest.CaptureFixture[str], prometheus: PrometheusServer, window: str
) -> tuple[int, dict[str, Any]]:
    code, out, err = await fleet(
        capsys, "--prometheus", prometheus.url, "--window", window, "--output", "json"
    )
    assert out, err
    report: dict[str, Any] = orjson.loads(out)
    return code, report


def shapes(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {c["client"]: {s: v["count"] for s, v in c["shapes"].items()} for c in report["clients"]}


async def test_restarted_and_replaced_pods_keep_the_fleet_not_ready(
    tmp_path: Path, aiohttp_server: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only one pod saw the legacy client; restarting it with its ledger, then replacing it
    with a fresh pod, leaves the fleet verdict "not ready" (exit 1) with that client, and an
    event the last scrape before the restart missed is still counted."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    a, b = Proxy(tmp_path, upstream, "a"), Proxy(tmp_path, upstream, "b")
    prometheus = PrometheusServer(tmp_path)
    async with running(a, b, prometheus), aiohttp.ClientSession() as session:
        await asyncio.gather(a.start(), b.start())
        await prometheus.start([a.target, b.target])
        await a.send(session, CANONICAL, "new-svc")
        await b.send(session, LEGACY, "old-svc")
        await prometheus.has('envelope_proxy_client_last_seen_timestamp_seconds{client="old-svc"}')
        await prometheus.has('envelope_proxy_client_last_seen_timestamp_seconds{client="new-svc"}')

        code, report = await fleet_json(capsys, prometheus, "1h")
        assert code == 1, report
        assert report["ready_to_sunset_v1"] is False
        assert report["blocking_clients"] == ["old-svc"]
        assert report["instances"] == 2
        assert shapes(report) == {
            "old-svc": {"event_request": 1},
            "new-svc": {"executor_event": 1},
        }

        # B is no longer scraped, then sees one more legacy event and restarts with its
        # ledger: only the restarted process can tell Prometheus about that event.
        prometheus.set_targets([a.target])
        await poll(
            lambda: _absent(prometheus, f'up{{instance="{b.target}"}}'), "b dropped from targets"
        )
        await b.send(session, LEGACY, "old-svc")
        await b.stop()
        await b.start()
        prometheus.set_targets([a.target, b.target])
        await prometheus.has(f'envelope_proxy_ledger_events{{instance="{b.target}"}} == 2')

        code, report = await fleet_json(capsys, prometheus, "1h")
        assert code == 1, report
        assert report["blocking_clients"] == ["old-svc"]
        assert shapes(report)["old-svc"] == {"event_request": 2}
        assert report["instances"] == 2

        # B is replaced by a fresh pod (new address, empty ledger) that sees no legacy shape.
        fresh = Proxy(tmp_path, upstream, "b2")
        async with running(fresh):
            await b.stop()
            await fresh.start()
            prometheus.set_targets([a.target, fresh.target])
            await fresh.send(session, CANONICAL, "new-svc")
            await prometheus.has(
                f'envelope_proxy_client_last_seen_timestamp_seconds{{instance="{fresh.target}"}}'
            )
            code, out, _ = await fleet(capsys, "--prometheus", prometheus.url, "--window", "1h")
            assert code == 1, out
            lines = out.splitlines()
            assert lines[0].split()[:3] == ["CLIENT", "STATUS", "SHAPES"]
            assert lines[1].split()[:3] == ["old-svc", "legacy", "event_request=2"]
            assert lines[2].split()[:3] == ["new-svc", "canonical", "executor_event=2"]
            assert any(line.startswith("instances: 3;") for line in lines), out
            assert lines[-1] == (
                "verdict: NOT ready to sunset v1: 1 client sent legacy shapes in the last 1h:"
                " old-svc"
            )


async def _absent(prometheus: PrometheusServer, expr: str) -> bool:
    return not await prometheus.query(expr)


async def test_ready_then_could_not_tell_and_bad_input(
    tmp_path: Path, aiohttp_server: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Canonical traffic only, series covering the window: ready (exit 0). A proxy that
    stops being scraped makes it "could not tell" (exit 2), as do a window longer than the
    data, an unreachable or non-Prometheus URL, a refused query and an empty selector."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    a, b = Proxy(tmp_path, upstream, "a"), Proxy(tmp_path, upstream, "b")
    prometheus = PrometheusServer(tmp_path)
    async with running(a, b, prometheus), aiohttp.ClientSession() as session:
        await asyncio.gather(a.start(), b.start())
        await prometheus.start([a.target, b.target])
        await a.send(session, CANONICAL, "svc-a")
        await b.send(session, CANONICAL, "svc-b")
        await prometheus.has("count(envelope_proxy_client_last_seen_timestamp_seconds) == 2")

        async def ready() -> bool:
            code, out, _ = await fleet(capsys, "--prometheus", prometheus.url, "--window", "3s")
            return code == 0 and out.endswith(
                "verdict: ready to sunset v1: no legacy shape in the last 3s on 2 instances\n"
            )

        await poll(ready, "a ready verdict over a covered 3 s window", within=30)

        # A window longer than Prometheus has data: no legacy seen, but not covered.
        code, report = await fleet_json(capsys, prometheus, "1h")
        assert code == 2, report
        assert report["ready_to_sunset_v1"] is None
        assert any("the series begin at" in w for w in report["warnings"]), report

        # One proxy is down: its failed scrapes leave the window uncovered.
        await a.kill()
        await prometheus.has(f'up{{instance="{a.target}"}} == 0')
        code, out, _ = await fleet(capsys, "--prometheus", prometheus.url, "--window", "3s")
        assert code == 2, out
        assert f"warning: {a.target} is not scraped now" in out
        assert out.splitlines()[-1].startswith("verdict: could not tell:")

        selector_cases = {
            'job="no-such-job"': "no envelope-proxy series found",
            'job=~"("': "Prometheus refused the query",
        }
        for selector, message in selector_cases.items():
            code, out, err = await fleet(
                capsys, "--prometheus", prometheus.url, "--selector", selector
            )
            assert code == 2, (selector, out, err)
            assert message in out + err, (selector, out, err)

        for url, message in (
            (closed_port_url(), "cannot reach Prometheus"),
            (f"http://{b.target}", "not the Prometheus HTTP API"),
        ):
            code, out, err = await fleet(capsys, "--prometheus", url, "--timeout", "5")
            assert (code, out) == (2, ""), (url, out, err)
            assert message in err, err
