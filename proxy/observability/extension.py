"""The observability extension the server consults: traces, metrics, sunset ledger, shadow check.

`ObservabilityExtension` implements `proxy.server.hooks.Extension`. The server puts its
middlewares first in the proxy app, its trace configs on the upstream ClientSession and its
routes (`/metrics`, `/clients`) on the admin app, and calls `on_event` inside each event
handler. Every hook is cheap and never raises: observability must not fail a request.
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

from proxy.envelope import Engine
from proxy.observability.identity import OTHER, ClientIdentifier
from proxy.observability.ledger import UNKNOWN_SHAPE, SunsetLedger
from proxy.observability.metrics import ProxyMetrics
from proxy.observability.shadow import ShadowChecker
from proxy.observability.store import LedgerFlusher, LedgerStore
from proxy.observability.tracing import (
    annotate_current_span,
    build_tracer_provider,
    server_middleware,
)
from proxy.server.hooks import EventRecord
from proxy.server.state import build_engine

if TYPE_CHECKING:
    from proxy.config import Settings

log = logging.getLogger(__name__)


class ObservabilityExtension:
    """Records every event request as span attributes, metrics and ledger entries."""

    def __init__(
        self,
        settings: Settings,
        engine_provider: Callable[[], Engine] | None = None,
        *,
        clock: Callable[[], float] = time.time,
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
        self._shadow: ShadowChecker | None = None
        if settings.shadow:
            if engine_provider is None:
                _, engine = build_engine(settings)
                engine_provider = lambda: engine  # noqa: E731
            self._shadow = ShadowChecker(engine_provider)
        self._failed_types: set[str] = set()
        self._closed = False

    # -- what the server installs ------------------------------------------------------

    def server_middlewares(self) -> Sequence[Middleware]:
        if self.tracer_provider is None:
            return ()
        return (server_middleware(self.tracer_provider),)

    def client_trace_configs(self) -> Sequence[aiohttp.TraceConfig]:
        return ()  # one span per hop: the server span's context goes upstream

    def admin_routes(self) -> Sequence[web.RouteDef]:
        return (web.get("/metrics", self._serve_metrics), web.get("/clients", self._serve_clients))

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

    def set_inflight_provider(self, provider: Callable[[], int]) -> None:
        self.metrics.set_inflight_provider(provider)

    async def close(self) -> None:
        """Write the ledger and flush pending spans; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            await self._flusher.close()
        if self.tracer_provider is not None:
            # Shutdown exports over the network and blocks: keep it off the loop.
            await asyncio.to_thread(self.tracer_provider.shutdown)

    # -- internals -----------------------------------------------------------------------

    def _on_event(self, record: EventRecord) -> None:
        now = self._clock()
        identity = self._identifier.identity(record.hints, record.worker_id)
        client = self._identifier.label(identity)
        shape = record.shape or UNKNOWN_SHAPE
        self.metrics.observe_event(
            client,
            shape,
            record.target,
            record.outcome,
            record.upstream_seconds,
            now,
            request_seconds=(
                time.perf_counter() - record.started if record.started is not None else None
            ),
            batch_size=record.batch_size,
        )
        self.ledger.record(client, shape, now)
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
        return web.Response(body=orjson.dumps(report), content_type="application/json")
