"""Per-client metrics stay bounded: capped client labels, short values, never event ids."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from proxy.config import Settings
from proxy.envelope import Engine, EngineOptions, load_rules
from proxy.observability import ObservabilityExtension, build_extension
from proxy.observability.identity import MAX_IDENTITY_LENGTH, OTHER
from tests.builders import client_hints, event_record
from tests.fixed_view import FixedView

RULES = load_rules()  # read once, before any event loop runs


def samples(text: str, name: str) -> Iterator[Sample]:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                yield sample


async def scrape(ext: ObservabilityExtension, aiohttp_client: Any) -> str:
    app = web.Application()
    app.add_routes(ext.admin_routes())
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return await response.text()


@pytest.fixture
def extension() -> ObservabilityExtension:
    return build_extension(Settings.model_validate({"clients": {"max_clients": 5}}))


async def test_distinct_clients_beyond_the_cap_count_as_other(
    extension: ObservabilityExtension, aiohttp_client: Any
) -> None:
    """1000 distinct clients give max_clients labels plus `other`, and no event id appears."""
    event_ids = [str(700_000_000_000_000_000 + i) for i in range(1000)]
    for i, event_id in enumerate(event_ids):
        extension.on_event(
            event_record(
                hints=client_hints(header=f"client-{i}"),
                request_event_id=event_id,
                stored_event_ids=(event_id,),
            )
        )
    text = await scrape(extension, aiohttp_client)
    events = list(samples(text, "envelope_proxy_events_total"))
    clients = {s.labels["client"] for s in events}
    assert clients == {f"client-{i}" for i in range(5)} | {OTHER}
    assert sum(s.value for s in events) == 1000
    assert next(s.value for s in events if s.labels["client"] == OTHER) == 995
    assert len(list(samples(text, "envelope_proxy_client_last_seen_timestamp_seconds"))) == 6
    assert not any(event_id in text for event_id in event_ids)
    assert len(extension.ledger.clients) == 6


async def test_label_values_are_bounded_in_length(
    extension: ObservabilityExtension, aiohttp_client: Any
) -> None:
    """A 4 KiB client header becomes a label of at most MAX_IDENTITY_LENGTH characters."""
    extension.on_event(event_record(hints=client_hints(header="y" * 4096)))
    text = await scrape(extension, aiohttp_client)
    (sample,) = samples(text, "envelope_proxy_events_total")
    assert sample.labels["client"] == "y" * MAX_IDENTITY_LENGTH


async def test_outcomes_targets_and_durations_are_recorded(
    extension: ObservabilityExtension, aiohttp_client: Any
) -> None:
    """Each outcome is its own series; the upstream duration is observed only when it was called."""
    legacy = "event_request"
    extension.on_event(event_record(shape=legacy))
    extension.on_event(event_record(shape=legacy, outcome="upstream_rejected", upstream_status=409))
    extension.on_event(
        event_record(
            shape=legacy,
            outcome="upstream_failed",
            upstream_status=None,
            error_code="upstream_timeout",
        )
    )
    extension.on_event(
        event_record(
            outcome="rejected", shape=None, error_code="invalid_json", upstream_seconds=None
        )
    )
    text = await scrape(extension, aiohttp_client)
    outcomes = {
        (s.labels["shape"], s.labels["outcome"]): s.value
        for s in samples(text, "envelope_proxy_events_total")
    }
    assert outcomes == {
        ("event_request", "forwarded"): 1,
        ("event_request", "upstream_rejected"): 1,
        ("event_request", "upstream_failed"): 1,
        ("unknown", "rejected"): 1,
    }
    counts = {
        s.labels["outcome"]: s.value
        for s in samples(text, "envelope_proxy_upstream_request_duration_seconds_count")
    }
    assert counts == {"forwarded": 1, "upstream_rejected": 1, "upstream_failed": 1}


async def test_target_reload_and_inflight_gauges(
    extension: ObservabilityExtension, aiohttp_client: Any
) -> None:
    """target_info holds one series; reloads are counted; in-flight is read at scrape time."""
    extension.on_target("event_request", None)
    extension.on_target("executor_event", "3.83.1")
    extension.on_reload(True)
    extension.on_reload(False)
    extension.on_reload(False)
    view = FixedView(Engine(RULES, EngineOptions()), inflight=7)
    extension.attach(view)
    text = await scrape(extension, aiohttp_client)
    (info,) = samples(text, "envelope_proxy_upstream_target_info")
    assert info.labels == {"target": "executor_event", "version": "3.83.1"}
    assert info.value == 1
    reloads = {
        s.labels["result"]: s.value for s in samples(text, "envelope_proxy_config_reloads_total")
    }
    assert reloads == {"ok": 1, "failed": 2}
    (gauge,) = samples(text, "envelope_proxy_inflight_requests")
    assert gauge.value == 7
    view.inflight = 2
    (gauge,) = samples(await scrape(extension, aiohttp_client), "envelope_proxy_inflight_requests")
    assert gauge.value == 2


async def test_an_unversioned_upstream_is_labelled(
    extension: ObservabilityExtension, aiohttp_client: Any
) -> None:
    """An upstream without a version (Python server) is labelled `unversioned`, not empty."""
    extension.on_target("event_request", None)
    (info,) = samples(
        await scrape(extension, aiohttp_client), "envelope_proxy_upstream_target_info"
    )
    assert info.labels == {"target": "event_request", "version": "unversioned"}


def test_separate_extensions_have_separate_registries() -> None:
    """Two extensions in one process do not share or clash on metric families."""
    a = build_extension(Settings())
    b = build_extension(Settings())
    a.on_event(event_record())
    assert a.metrics.registry is not b.metrics.registry
    assert b"envelope_proxy_events_total{" not in b.metrics.render()[0]
    assert b"envelope_proxy_events_total{" in a.metrics.render()[0]
