"""Admin `/metrics` as scrapers read it: format negotiation, gzip, promtool, the new families.

Real traffic goes through the proxy (with the observability extension) to a loopback
emulator; the exposition is read back as Prometheus and OpenMetrics text and checked by the
real `promtool`.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.metadata
import shutil
import subprocess
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from tests.functional.test_observability_proxy import Stack, start_stack
from tests.samples import sample_bytes

BATCH = "rust_batch_event_request__integer_execution_id"


@pytest.fixture
async def stack(aiohttp_server: Any) -> Stack:
    return await start_stack(aiohttp_server, {})


async def scrape(stack: Stack, **headers: str) -> tuple[aiohttp.ClientResponse, bytes]:
    headers.setdefault("Accept-Encoding", "identity")  # aiohttp's client asks for gzip
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(stack.admin.make_url("/metrics"), headers=headers) as response,
    ):
        assert response.status == 200
        return response, await response.read()


async def passthrough(stack: Stack, path: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(stack.proxy.make_url(path)) as r:
        await r.read()
        return r.status


async def traffic(stack: Stack) -> int:
    """Two events, one batch and three pass-through requests; the batch's item count."""
    assert (await stack.post("worker_event__call_done", client="a"))[0] == 200
    assert (await stack.post("executor_event__call_done_inline_result", client="a"))[0] == 200
    status, _ = await stack.post(BATCH, client="a", path="/api/events/batch")
    assert status == 200
    assert await passthrough(stack, "/api/health") == 200
    assert await passthrough(stack, "/api/health") == 200
    assert await passthrough(stack, "/no/such/route") == 404
    return len(orjson.loads(sample_bytes(BATCH))["events"])


async def test_new_families_after_real_traffic(stack: Stack) -> None:
    """build_info, whole-request durations, batch items and pass-through by status class."""
    items = await traffic(stack)
    metrics = await stack.metrics()
    (build,) = metrics["envelope_proxy_build_info"]
    assert build.labels == {"version": importlib.metadata.version("envelope-proxy")}
    assert build.value == 1
    whole = {
        s.labels["outcome"]: s.value
        for s in metrics["envelope_proxy_event_request_duration_seconds_count"]
    }
    assert whole == {"forwarded": 3}
    [whole_sum] = metrics["envelope_proxy_event_request_duration_seconds_sum"]
    [upstream_sum] = metrics["envelope_proxy_upstream_request_duration_seconds_sum"]
    assert whole_sum.value > upstream_sum.value > 0  # the proxy's own time is included
    (batch_items,) = metrics["envelope_proxy_batch_items_total"]
    assert (batch_items.labels, batch_items.value) == (
        {"target": "executor_event", "outcome": "forwarded"},
        items,
    )
    passed = {
        s.labels["status_class"]: s.value
        for s in metrics["envelope_proxy_passthrough_requests_total"]
    }
    assert passed == {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 1, "5xx": 0}
    timed = {
        s.labels["status_class"]: s.value
        for s in metrics["envelope_proxy_passthrough_request_duration_seconds_count"]
    }
    assert (timed["2xx"], timed["4xx"]) == (2, 1)


async def test_openmetrics_is_served_when_asked_for(stack: Stack) -> None:
    """`Accept: application/openmetrics-text` gets OpenMetrics (ends with # EOF); else text."""
    await traffic(stack)
    response, body = await scrape(stack, Accept="application/openmetrics-text; version=1.0.0")
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    families = openmetrics_families(text)  # type: ignore[no-untyped-call]  # strict: raises on bad input
    names = {family.name for family in families}
    assert {"envelope_proxy_events", "envelope_proxy_passthrough_requests"} <= names
    response, body = await scrape(stack)
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# EOF" not in body.decode()


async def test_gzip_when_the_scraper_accepts_it(stack: Stack) -> None:
    """`Accept-Encoding: gzip` gets a gzip body of the same exposition; without it, plain."""
    await traffic(stack)
    response, body = await scrape(stack, **{"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert b"envelope_proxy_build_info" in gzip.decompress(body)
    response, body = await scrape(stack, **{"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in response.headers
    assert b"envelope_proxy_build_info" in body


async def test_promtool_check_metrics_is_clean(stack: Stack) -> None:
    """The real promtool finds no problem in the exposition after real traffic.

    promtool reads the Prometheus text format (what a scrape without an OpenMetrics
    Accept gets); the OpenMetrics form is checked by prometheus_client's strict parser above.
    """
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed (Debian package prometheus)"
    await traffic(stack)
    _, body = await scrape(stack)
    result = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=body,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, b"")
