"""The observability extension the server consults: traces, metrics, sunset ledger, shadow
check, observe mode's would-be outcomes and the quarantine of refused bodies.

`ObservabilityExtension` implements `proxy.contract.Extension`. The server attaches its view
(the current engine, the in-flight count), puts the extension's middlewares first in the
proxy app, its trace configs on the upstream ClientSession and its routes (`/metrics`,
`/clients`, `/rejections`) on the admin app, and calls `on_event` inside each event handler.
Every hook is cheap and never raises: observability must not fail a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry.sdk.trace import TracerProvider

from proxy.contract import PROXY_CODES, EventRecord, ProxyView
from proxy.envelope import ERROR_CODES
from proxy.observability.identity import OTHER, ClientIdentifier
from proxy.observability.ledger import UNKNOWN_SHAPE, SunsetLedger
from proxy.observability.metrics import ProxyMetrics
from proxy.observability.shadow import OTHER_TARGET, ShadowChecker
from proxy.observability.store import LedgerFlusher, LedgerStore
from proxy.observability.tracing import (
    annotate_current_span,
    build_tracer_provider,
    server_middleware,
)
from proxy.quarantine.admin import rejections_route
from proxy.quarantine.records import Refusal, kept_headers
from proxy.quarantine.writer import Outcome, QuarantineWriter

if TYPE_CHECKING:
    from proxy.config import Settings

log = logging.getLogger(__name__)

# The codes a refusal can carry: the engine's and the proxy's own, a fixed set, so the
# `code` label of envelope_proxy_rejections_total stays bounded whatever happens.
REFUSAL_CODES = frozenset(ERROR_CODES) | PROXY_CODES
OTHER_CODE = "other"
ENGINE_CODES = frozenset(ERROR_CODES)  # refusals whose body the quarantine keeps


def refusal_code(code: str) -> str:
    """`code` when it is one of the fixed refusal codes, else `other`."""
    return code if code in REFUSAL_CODES else OTHER_CODE


class ObservabilityExtension:
    """Records every event request as span attributes, metrics and ledger entries."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        worker: int = 0,
    ) -> None:
        self._clock = clock
        # With several worker processes each keeps its own ledger, and admin `/clients`
        # shows worker 0's: no verdict can be drawn from a part of the traffic.
        self._partial = settings.workers > 1
        self.metrics = ProxyMetrics()
        clients = settings.clients
        self._identifier = ClientIdentifier(clients.sources, clients.max_clients)
        window = float(clients.sunset_window_seconds)
        store = LedgerStore(Path(clients.state_file)) if clients.state_file else None
        loaded = store.load(window) if store is not None else None
        self.ledger = loaded or SunsetLedger(window, tracking_since=clock())
        by_recency = sorted(self.ledger.clients, key=lambda n: -self.ledger.clients[n].last_seen())
        self._identifier.seed(by_recency)
        self.metrics.seed_ledger(
            window, self.ledger.tracking_since, self._partial, self._seeded(by_recency)
        )
        self._flusher = LedgerFlusher(store, self.ledger) if store is not None else None
        self.tracer_provider: TracerProvider | None = build_tracer_provider(
            settings.tracing.otlp_endpoint, settings.tracing.service_name
        )
        # The server's view, from `attach`: the shadow and observe checks use its engine,
        # so they follow reloads; until then they are not made.
        self._view: ProxyView | None = None
        self._shadow_on = settings.shadow
        self._shadow: ShadowChecker | None = None
        self._checker: ShadowChecker | None = None
        self._observed: dict[str, dict[str, dict[str, int]]] = {}
        quarantine = settings.quarantine
        self._quarantine_dir = quarantine.dir if quarantine.enabled else None
        self._quarantine: QuarantineWriter | None = None
        if quarantine.enabled and quarantine.dir is not None:
            self._quarantine = QuarantineWriter(
                quarantine.dir,
                quarantine.max_bytes,
                worker=worker,
                workers=settings.workers,
                on_written=self._quarantined,
                on_overflow=lambda: self.metrics.observe_quarantine(queue_full=1),
            )
            self._quarantine.open()
            self.metrics.observe_quarantine(size=self._quarantine.store.size)
        self._failed_types: set[str] = set()
        self._closed = False

    # -- what the server installs ------------------------------------------------------

    def attach(self, view: ProxyView) -> None:
        self._view = view
        # Observe mode can be switched on by a reload: its checker is always at hand.
        self._checker = ShadowChecker(lambda: view.engine)
        if self._shadow_on:
            self._shadow = self._checker
        self.metrics.set_inflight_provider(lambda: view.inflight)

    def server_middlewares(self) -> Sequence[Middleware]:
        if self.tracer_provider is None:
            return ()
        return (server_middleware(self.tracer_provider),)

    def client_trace_configs(self) -> Sequence[aiohttp.TraceConfig]:
        return ()  # one span per hop: the server span's context goes upstream

    def admin_routes(self) -> Sequence[web.RouteDef]:
        return (
            web.get("/metrics", self._serve_metrics),
            web.get("/clients", self._serve_clients),
            rejections_route(self._quarantine_dir),
        )

    # -- what the server tells us --------------------------------------------------------

    def on_event(self, record: EventRecord) -> None:
        """Count, ledger, shadow-check and annotate one answered event request."""
        try:
            self._on_event(record)
        except Exception as exc:  # observability never fails a request
            name = type(exc).__name__
            if name not in self._failed_types:
                self._failed_types.add(name)
                log.error("recording an event failed: %s (logged once per type)", name)

    def on_passthrough(self, status: int, seconds: float) -> None:
        try:
            self.metrics.observe_passthrough(status, seconds)
        except Exception:  # observability never fails a request
            log.exception("counting a pass-through request failed")

    def on_reload(self, ok: bool) -> None:
        self.metrics.count_reload(ok)

    def on_target(self, target: str, version: str | None) -> None:
        self.metrics.set_target(target, version)

    async def close(self) -> None:
        """Write the ledger and flush pending spans; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._quarantine is not None:
            await self._quarantine.close()
        if self._flusher is not None:
            await self._flusher.close()
        if self.tracer_provider is not None:
            # Shutdown exports over the network and blocks: keep it off the loop.
            await asyncio.to_thread(self.tracer_provider.shutdown)

    # -- internals -----------------------------------------------------------------------

    def _on_event(self, record: EventRecord) -> None:
        now = self._clock()
        identity, client = self._identifier.identify(record.hints, record.worker_id)
        shape = record.shape or UNKNOWN_SHAPE
        self.metrics.event_families.observe(
            client,
            shape,
            record.target,
            record.outcome,
            now,
            record.upstream_seconds,
            time.perf_counter() - record.started if record.started is not None else None,
            record.batch_size,
        )
        self.ledger.record(client, shape, now)
        if record.outcome == "rejected" and record.error_code is not None:
            self.metrics.observe_rejection(client, refusal_code(record.error_code))
            if self._quarantine is not None and record.error_code in ENGINE_CODES and record.body:
                self._quarantine.submit(
                    Refusal(
                        received_at=now,
                        client=client,
                        path=record.path,
                        kind=record.kind,
                        target=record.target,
                        code=record.error_code,
                        field=record.error_field,
                        index=record.error_index,
                        headers=kept_headers(
                            record.headers,
                            self._view.client_header if self._view is not None else None,
                        ),
                        body=record.body,
                    ),
                    self._view.engine if self._view is not None else None,
                )
        if record.mode == "observe":
            self._observe(record, client)
        if self._shadow is not None:
            checked = self._shadow.check(record)
            if checked is not None:
                other, result = checked
                self.metrics.observe_shadow(client, other, result)
                if result != "ok":
                    self.ledger.record_shadow_failure(client, result, now)
        if self._flusher is not None:
            self._flusher.mark_dirty()
        if self.tracer_provider is not None:
            annotate_current_span(record, identity)

    def _seeded(self, by_recency: list[str]) -> Iterator[tuple[str, str, int, float]]:
        # Only the clients that keep their own label (the cap), plus `other`.
        kept = set(by_recency[: self._identifier.max_clients]) | {OTHER}
        for name in by_recency:
            if name in kept:
                for shape, seen in self.ledger.clients[name].shapes.items():
                    yield name, shape, seen.count, seen.last_seen

    def _observe(self, record: EventRecord, client: str) -> None:
        """Observe mode: what enforce mode would have done, for both targets."""
        results = {record.target: record.would_refuse or "ok"}
        other = OTHER_TARGET.get(record.target)
        if other is not None and self._checker is not None and record.body:
            results[other] = self._checker.result(record.body, record.kind, other)
        per_client = self._observed.setdefault(client, {})
        for target, result in results.items():
            self.metrics.observe_would(client, target, result)
            counts = per_client.setdefault(target, {})
            counts[result] = counts.get(result, 0) + 1

    def _quarantined(self, outcome: Outcome) -> None:
        result = outcome.result
        self.metrics.observe_quarantine(
            written=result.written,
            too_large=result.too_large,
            failed=outcome.failed,
            dropped_segments=result.dropped_segments,
            dropped_records=result.dropped_records,
            size=outcome.size,
        )
        if result.dropped_segments:
            log.warning(
                "quarantine full: dropped %d oldest segment(s), %d record(s)",
                result.dropped_segments,
                result.dropped_records,
            )

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        # In a thread: the process collector reads /proc, and a registry near the
        # client cap takes milliseconds to render; the loop keeps relaying events.
        body, content_type, gzipped = await asyncio.to_thread(
            self.metrics.render,
            request.headers.get("Accept", ""),
            request.headers.get("Accept-Encoding", ""),
        )
        headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def _serve_clients(self, request: web.Request) -> web.Response:
        report = self.ledger.report(self._clock())
        if self._partial:
            report["partial"] = True
            report["ready_to_sunset_v1"] = None
        if self._observed:
            report["observed"] = self._observed
        return web.Response(body=orjson.dumps(report), content_type="application/json")
