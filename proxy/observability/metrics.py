"""The proxy's Prometheus metrics: one registry per extension, served as text on admin `/metrics`.

Every family is declared here, with its labels. Label values are bounded: `client` is the
capped client label (see `identity`), `shape` a shape name from the rules (or `unknown`),
`target` one of the two targets, `outcome`/`result` small fixed sets or engine error codes.
Event ids never become labels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from proxy.observability.identity import clean

log = logging.getLogger(__name__)

# Up to the upstream timeout (25 s by default); loopback exchanges sit in the first buckets.
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
)
UNVERSIONED = "unversioned"


@dataclass(slots=True)
class _EventSeries:
    events: Counter
    last_seen: Gauge
    ledger_events: Gauge
    duration: Histogram | None = None  # created on the first upstream exchange only


class ProxyMetrics:
    """All metric families of one proxy process, in their own CollectorRegistry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.events = Counter(
            "envelope_proxy_events_total",
            "Event requests by client, detected shape, target and outcome.",
            ["client", "shape", "target", "outcome"],
            registry=r,
        )
        self.last_seen = Gauge(
            "envelope_proxy_client_last_seen_timestamp_seconds",
            "Unix time of the last event of this shape from this client.",
            ["client", "shape"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "envelope_proxy_upstream_request_duration_seconds",
            "Duration of upstream exchanges for event requests.",
            ["target", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.target_info = Gauge(
            "envelope_proxy_upstream_target_info",
            "The target shape in use (value 1) and the upstream version it was chosen for.",
            ["target", "version"],
            registry=r,
        )
        self.reloads = Counter(
            "envelope_proxy_config_reloads_total",
            "Configuration and rules reloads by result.",
            ["result"],
            registry=r,
        )
        self.inflight = Gauge(
            "envelope_proxy_inflight_requests",
            "Requests the proxy is handling right now.",
            registry=r,
        )
        self.shadow = Counter(
            "envelope_proxy_shadow_total",
            "Shadow conversions to the other target by client, target and result (ok or code).",
            ["client", "target", "result"],
            registry=r,
        )
        for result in ("ok", "failed"):
            self.reloads.labels(result=result)
        # The sunset ledger as series (see `seed_ledger`): gauges rather than counters, so a
        # restart that keeps the ledger continues them and a replaced pod's first event is
        # not lost to increase() skipping a counter's first sample.
        self.ledger_events = Gauge(
            "envelope_proxy_ledger_events",
            "Events of this shape from this client in the sunset ledger (kept across restarts "
            "with clients.state_file).",
            ["client", "shape"],
            registry=r,
        )
        self.ledger_window = Gauge(
            "envelope_proxy_ledger_window_seconds",
            "The sunset window this proxy judges legacy traffic by (clients.sunset_window_seconds)",
            registry=r,
        )
        self.ledger_tracking_since = Gauge(
            "envelope_proxy_ledger_tracking_since_timestamp_seconds",
            "Unix time the sunset ledger started (kept across restarts with a state file).",
            registry=r,
        )
        self.ledger_partial = Gauge(
            "envelope_proxy_ledger_partial",
            "1 when this process is one of several workers: its series cover part of the traffic.",
            registry=r,
        )
        self._inflight_provider: Callable[[], int] = lambda: 0
        self.inflight.set_function(self._read_inflight)
        # labels() takes a lock and builds a key on every call; the label sets are bounded,
        # so the children are kept per combination (a third of the per-event cost).
        self._event_series: dict[tuple[str, str, str, str], _EventSeries] = {}

    def observe_event(
        self,
        client: str,
        shape: str,
        target: str,
        outcome: str,
        upstream_seconds: float | None,
        now: float,
    ) -> None:
        """Count one answered event request."""
        key = (client, shape, target, outcome)
        series = self._event_series.get(key)
        if series is None:
            series = self._event_series[key] = _EventSeries(
                self.events.labels(client=client, shape=shape, target=target, outcome=outcome),
                self.last_seen.labels(client=client, shape=shape),
                self.ledger_events.labels(client=client, shape=shape),
            )
        series.events.inc()
        series.last_seen.set(now)
        series.ledger_events.inc()
        if upstream_seconds is not None:
            if series.duration is None:
                series.duration = self.upstream_duration.labels(target=target, outcome=outcome)
            series.duration.observe(upstream_seconds)

    def seed_ledger(
        self,
        window_seconds: float,
        tracking_since: float,
        partial: bool,
        seen: Iterable[tuple[str, str, int, float]],
    ) -> None:
        """Expose what a loaded ledger already holds: (client, shape, count, last seen) each.

        A restart that keeps the ledger then shows the same last-seen times and counts as
        before it, so an event the last scrape before the restart missed is still seen.
        """
        self.ledger_window.set(window_seconds)
        self.ledger_tracking_since.set(tracking_since)
        self.ledger_partial.set(1 if partial else 0)
        for client, shape, count, last_seen in seen:
            self.last_seen.labels(client=client, shape=shape).set(last_seen)
            self.ledger_events.labels(client=client, shape=shape).set(count)

    def observe_shadow(self, client: str, target: str, result: str) -> None:
        self.shadow.labels(client=client, target=target, result=result).inc()

    def set_target(self, target: str, version: str | None) -> None:
        """Replace the single target_info series."""
        self.target_info.clear()
        label = clean(version) if version else ""
        self.target_info.labels(target=target, version=label or UNVERSIONED).set(1)

    def count_reload(self, ok: bool) -> None:
        self.reloads.labels(result="ok" if ok else "failed").inc()

    def set_inflight_provider(self, provider: Callable[[], int]) -> None:
        self._inflight_provider = provider

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _read_inflight(self) -> float:
        try:
            return float(self._inflight_provider())
        except Exception:  # a scrape must not fail because the provider did
            log.exception("in-flight provider failed")
            return 0.0
