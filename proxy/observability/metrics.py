"""The proxy's Prometheus metrics: one registry per extension, served on admin `/metrics`.

`render` speaks what the scraper asks for, through prometheus_client's own negotiation:
OpenMetrics for `Accept: application/openmetrics-text`, else the Prometheus text format,
gzip-compressed when `Accept-Encoding` allows it.

Every family is declared here, with its labels. Label values are bounded: `client` is the
capped client label (see `identity`), `shape` a shape name from the rules (or `unknown`),
`target` one of the two targets, `outcome`/`result` small fixed sets or engine error codes,
`code` one of the fixed engine and proxy codes (anything else counts as `other`).
Event ids never become labels.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder, gzip_accepted

from proxy import __version__
from proxy.observability.event_series import EventFamilies
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
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class ProxyMetrics:
    """All metric families of one proxy process, in their own CollectorRegistry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        # The per-event families (events, last seen, ledger counts, durations, batch items).
        self.event_families = EventFamilies(DURATION_BUCKETS)
        r.register(self.event_families)
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
        self.build_info = Gauge(
            "envelope_proxy_build_info",
            "The running envelope-proxy's version (value 1).",
            ["version"],
            registry=r,
        )
        self.build_info.labels(version=__version__).set(1)
        self.passthrough = Counter(
            "envelope_proxy_passthrough_requests_total",
            "Pass-through requests (every path but the event endpoints) by status class.",
            ["status_class"],
            registry=r,
        )
        self.passthrough_duration = Histogram(
            "envelope_proxy_passthrough_request_duration_seconds",
            "Pass-through requests, until the answer was sent in full, by status class.",
            ["status_class"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._passthrough_series = {
            status_class: (
                self.passthrough.labels(status_class=status_class),
                self.passthrough_duration.labels(status_class=status_class),
            )
            for status_class in STATUS_CLASSES
        }
        self.rejections = Counter(
            "envelope_proxy_rejections_total",
            "Event requests the proxy refused, by client and refusal code.",
            ["client", "code"],
            registry=r,
        )
        self.observe = Counter(
            "envelope_proxy_observe_total",
            "Observe mode: what enforce mode would have done with each event, by client and "
            "target (result ok, or the code it would have refused with).",
            ["client", "target", "result"],
            registry=r,
        )
        self.quarantine_records = Counter(
            "envelope_proxy_quarantine_records_total",
            "Refused bodies offered to the quarantine, by result (written, too_large, "
            "queue_full, failed).",
            ["result"],
            registry=r,
        )
        self.quarantine_dropped_segments = Counter(
            "envelope_proxy_quarantine_dropped_segments_total",
            "Quarantine segments deleted, oldest first, to keep the store within max_bytes.",
            registry=r,
        )
        self.quarantine_dropped_records = Counter(
            "envelope_proxy_quarantine_dropped_records_total",
            "Quarantined records deleted with those segments.",
            registry=r,
        )
        self.quarantine_bytes = Gauge(
            "envelope_proxy_quarantine_bytes",
            "Bytes in this process's quarantine segments.",
            registry=r,
        )
        for result in ("ok", "failed"):
            self.reloads.labels(result=result)
        # The sunset ledger as series (see `seed_ledger`): gauges rather than counters, so a
        # restart that keeps the ledger continues them and a replaced pod's first event is
        # not lost to increase() skipping a counter's first sample.
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

    def observe_passthrough(self, status: int, seconds: float) -> None:
        """Count one answered pass-through request."""
        series = self._passthrough_series.get(f"{status // 100}xx")
        if series is None:
            return  # aiohttp answers only 1xx..5xx
        counter, duration = series
        counter.inc()
        duration.observe(seconds)

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
        self.event_families.seed(seen)

    def observe_rejection(self, client: str, code: str) -> None:
        """Count one refusal; `code` must come from a fixed set (the caller folds others)."""
        self.rejections.labels(client=client, code=code).inc()

    def observe_would(self, client: str, target: str, result: str) -> None:
        self.observe.labels(client=client, target=target, result=result).inc()

    def observe_quarantine(
        self,
        *,
        written: int = 0,
        too_large: int = 0,
        queue_full: int = 0,
        failed: int = 0,
        dropped_segments: int = 0,
        dropped_records: int = 0,
        size: int | None = None,
    ) -> None:
        """Count what the quarantine did with a batch of refusals."""
        for result, count in (
            ("written", written),
            ("too_large", too_large),
            ("queue_full", queue_full),
            ("failed", failed),
        ):
            if count:
                self.quarantine_records.labels(result=result).inc(count)
        if dropped_segments:
            self.quarantine_dropped_segments.inc(dropped_segments)
        if dropped_records:
            self.quarantine_dropped_records.inc(dropped_records)
        if size is not None:
            self.quarantine_bytes.set(size)

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

    def render(self, accept: str = "", accept_encoding: str = "") -> tuple[bytes, str, bool]:
        """The exposition for these request headers: body, content type, gzip-compressed."""
        encoder, content_type = choose_encoder(accept)
        body = encoder(self.registry)
        if gzip_accepted(accept_encoding):
            return gzip.compress(body, compresslevel=6), content_type, True
        return body, content_type, False

    def _read_inflight(self) -> float:
        try:
            return float(self._inflight_provider())
        except Exception:  # a scrape must not fail because the provider did
            log.exception("in-flight provider failed")
            return 0.0
