"""The per-event families against prometheus_client's own metric types, sample for sample.

The same observations go into `EventFamilies` and into a registry of prometheus_client
Counters, Gauges and Histograms declared as the proxy declared them before; both
expositions (Prometheus text and OpenMetrics) must parse to the same families, with
`_created` samples present on both sides (their times differ by construction).
"""

from __future__ import annotations

from typing import Any

import prometheus_client.metrics
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from proxy.observability import event_series as es
from proxy.observability.metrics import DURATION_BUCKETS

Observation = tuple[str, str, str, str, float, float | None, float | None, int | None]

OBSERVATIONS: list[Observation] = [
    ("worker:a", "executor_event", "executor_event", "forwarded", 100.0, 0.0004, 0.0009, None),
    ("worker:a", "executor_event", "executor_event", "forwarded", 101.0, 0.001, 0.0015, None),
    ("worker:a", "emit_request", "executor_event", "rejected", 102.0, None, 0.0001, None),
    ("ua:b", "batch", "event_request", "upstream_failed", 103.0, 30.0, 31.0, 3),
    ("ua:b", "batch", "event_request", "upstream_failed", 104.0, 0.025, 0.05, 2),
    ("other", "unknown", "executor_event", "rejected", 105.0, None, 2.5, None),
]
SEEDED = [("worker:old", "event_request", 7, 50.0)]


def reference() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    events = Counter(
        es.EVENTS + "_total",
        es._HELP[es.EVENTS],
        ["client", "shape", "target", "outcome"],
        registry=registry,
    )
    last_seen = Gauge(es.LAST_SEEN, es._HELP[es.LAST_SEEN], ["client", "shape"], registry=registry)
    ledger = Gauge(
        es.LEDGER_EVENTS, es._HELP[es.LEDGER_EVENTS], ["client", "shape"], registry=registry
    )
    upstream = Histogram(
        es.UPSTREAM_DURATION,
        es._HELP[es.UPSTREAM_DURATION],
        ["target", "outcome"],
        buckets=DURATION_BUCKETS,
        registry=registry,
    )
    request = Histogram(
        es.REQUEST_DURATION,
        es._HELP[es.REQUEST_DURATION],
        ["target", "outcome"],
        buckets=DURATION_BUCKETS,
        registry=registry,
    )
    items = Counter(
        es.BATCH_ITEMS + "_total",
        es._HELP[es.BATCH_ITEMS],
        ["target", "outcome"],
        registry=registry,
    )
    for client, shape, count, seen in SEEDED:
        last_seen.labels(client, shape).set(seen)
        ledger.labels(client, shape).set(count)
    for client, shape, target, outcome, now, up, whole, batch in OBSERVATIONS:
        events.labels(client, shape, target, outcome).inc()
        last_seen.labels(client, shape).set(now)
        ledger.labels(client, shape).inc()
        if up is not None:
            upstream.labels(target, outcome).observe(up)
        if whole is not None:
            request.labels(target, outcome).observe(whole)
        if batch is not None:
            items.labels(target, outcome).inc(batch)
    return registry


def ours() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    families = es.EventFamilies(DURATION_BUCKETS)
    registry.register(families)
    families.seed(SEEDED)
    for observation in OBSERVATIONS:
        families.observe(*observation)
    return registry


def comparable(families: Any) -> dict[str, tuple[str, str, list[tuple[str, tuple[Any, ...], Any]]]]:
    out = {}
    for family in families:
        samples = sorted(
            (
                sample.name,
                tuple(sorted(sample.labels.items())),
                "created" if sample.name.endswith("_created") else sample.value,
            )
            for sample in family.samples
        )
        out[family.name] = (family.type, family.documentation, samples)
    return out


def openmetrics(registry: CollectorRegistry) -> Any:
    """The registry's OpenMetrics exposition, parsed (the parser and encoder are untyped)."""
    text = generate_openmetrics(registry).decode()  # type: ignore[no-untyped-call]
    return parse_om(text)  # type: ignore[no-untyped-call]


def test_the_text_exposition_matches_prometheus_clients_own_types() -> None:
    expected = comparable(parse_text(generate_latest(reference()).decode()))
    assert comparable(parse_text(generate_latest(ours()).decode())) == expected


def test_the_openmetrics_exposition_matches_prometheus_clients_own_types() -> None:
    expected = comparable(openmetrics(reference()))
    got = comparable(openmetrics(ours()))
    assert got == expected
    assert any(name == es.EVENTS for name in got)  # not vacuous


def test_nothing_is_exposed_before_the_first_event() -> None:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(es.EventFamilies(DURATION_BUCKETS))
    assert b"{" not in generate_latest(registry)


def test_created_series_can_be_turned_off_as_for_prometheus_clients_own(
    monkeypatch: Any,
) -> None:
    """PROMETHEUS_DISABLE_CREATED_SERIES (read by prometheus_client at import) drops
    `_created` from these families too."""
    monkeypatch.setattr(prometheus_client.metrics, "_use_created", False)
    expected = comparable(parse_text(generate_latest(reference()).decode()))
    got = comparable(parse_text(generate_latest(ours()).decode()))
    assert got == expected
    assert not any(name.endswith("_created") for name, _, _ in got[es.EVENTS][2])


def test_a_histogram_is_created_at_its_first_observation(monkeypatch: Any) -> None:
    """A timed-out exchange has no upstream duration: the upstream histogram of that
    outcome starts with the first answer that has one, not with the outcome's first event."""
    now = [1000.0]
    monkeypatch.setattr("proxy.observability.event_series.time.time", lambda: now[0])
    families = es.EventFamilies(DURATION_BUCKETS)
    families.observe("c", "executor_event", "executor_event", "upstream_failed", 1, None, 0.2, None)
    now[0] = 5000.0
    families.observe("c", "executor_event", "executor_event", "upstream_failed", 2, 0.5, 0.6, None)
    created = {
        sample.name: sample.value
        for family in families.collect()
        for sample in family.samples
        if sample.name.endswith("_created")
    }
    assert created[es.UPSTREAM_DURATION + "_created"] == 5000.0
    assert created[es.REQUEST_DURATION + "_created"] == 1000.0
