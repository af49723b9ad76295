"""Tracing: the proxy's TracerProvider, its server middleware and upstream client hooks.

Tracing is on when an OTLP endpoint is named: `tracing.otlp_endpoint` in the config (a
collector base URL such as `http://collector:4318`, `/v1/traces` is appended unless the
path already ends in it), or the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
`OTEL_EXPORTER_OTLP_ENDPOINT`. Spans leave over OTLP/HTTP protobuf through a
BatchSpanProcessor. Everything else is the OpenTelemetry SDK's own environment handling:
`OTEL_SERVICE_NAME` and `service.name` in `OTEL_RESOURCE_ATTRIBUTES` win over
`tracing.service_name`; `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` choose the
sampler; `OTEL_PROPAGATORS` the propagation format (W3C trace context and baggage by
default); `OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`, `..._COMPRESSION` and `OTEL_BSP_*`
tune the exporter; `OTEL_SDK_DISABLED=true` turns tracing off;
`OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS` skips paths.

Without an endpoint nothing is installed: no middleware, no client hooks, no provider.

The server span comes from an explicit middleware built on the helpers of
`opentelemetry-instrumentation-aiohttp-server` (span name `"{METHOD} {route}"`,
`http.route`, HTTP attributes and status). Its own `create_aiohttp_middleware` depends on
module state that only the monkeypatching `instrument()` sets up, so it is not used. The
upstream client span and the `traceparent` the upstream receives come from
`opentelemetry-instrumentation-aiohttp-client`'s `create_trace_config`: the propagator
injects the client span's context, the inbound header is never copied.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import trace
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.instrumentation.aiohttp_server import (
    collect_request_attributes,
    get_default_span_name,
    getter,
    set_status_code,
)
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.propagate import extract
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.util.http import get_excluded_urls

from proxy.server.hooks import EventRecord
from proxy.server.logsafe import printable

TRACES_PATH = "/v1/traces"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def tracing_enabled(otlp_endpoint: str | None) -> bool:
    """Whether an endpoint is named (config or standard env) and the SDK is not disabled."""
    if os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return False
    return bool(
        otlp_endpoint
        or os.environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
        or os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)
    )


def traces_url(base: str) -> str:
    """The OTLP/HTTP traces URL for a collector base URL."""
    trimmed = base.rstrip("/")
    return trimmed if trimmed.endswith(TRACES_PATH) else trimmed + TRACES_PATH


def build_tracer_provider(otlp_endpoint: str | None, service_name: str) -> TracerProvider | None:
    """A TracerProvider exporting over OTLP/HTTP, or None when tracing is off."""
    if not tracing_enabled(otlp_endpoint):
        return None
    # Imported here so that a proxy without tracing never loads the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    env_attributes = OTELResourceDetector().detect().attributes
    attributes = {} if SERVICE_NAME in env_attributes else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes), shutdown_on_exit=False)
    exporter = OTLPSpanExporter(endpoint=traces_url(otlp_endpoint) if otlp_endpoint else None)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def server_middleware(provider: trace.TracerProvider) -> Middleware:
    """One SERVER span per request, continuing the caller's trace context."""
    tracer = provider.get_tracer("proxy.observability.tracing")
    excluded = get_excluded_urls("AIOHTTP_SERVER")

    @web.middleware
    async def trace_request(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if excluded is not None and excluded.url_disabled(request.url.path):
            return await handler(request)
        # Attributes are collected only for recorded spans: unsampled requests skip the work.
        with tracer.start_as_current_span(
            get_default_span_name(request),
            context=extract(request, getter=getter),
            kind=trace.SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if not span.is_recording():
                return await handler(request)
            attributes = safe_attributes(collect_request_attributes(request))
            span.set_attributes(attributes)
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                set_status_code(span, exc.status_code, attributes)
                if exc.status_code >= 500:
                    span.record_exception(exc)
                raise
            except Exception as exc:
                span.set_status(trace.StatusCode.ERROR, type(exc).__qualname__)
                span.record_exception(exc)
                raise
            set_status_code(span, response.status, attributes)
            return response

    return trace_request


def client_trace_config(provider: trace.TracerProvider) -> aiohttp.TraceConfig:
    """Hooks for the upstream ClientSession: one CLIENT span per call, context injected."""
    return create_trace_config(
        url_filter=lambda url: str(url.with_query(None)),
        tracer_provider=provider,
        meter_provider=NoOpMeterProvider(),
    )


_URL_ATTRIBUTES = ("http.url", "http.target", "url.full")


def safe_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """Request attributes fit for a span: the query string dropped from every URL (it may
    carry a credential, `?token=`) and control characters escaped (a User-Agent may hold
    any)."""
    for key in _URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and "?" in value:
            attributes[key] = value.split("?", 1)[0]
    attributes.pop("url.query", None)
    for key, value in attributes.items():
        if isinstance(value, str):
            attributes[key] = printable(value)
    return attributes


def annotate_current_span(record: EventRecord, client: str) -> None:
    """Put the event's identifiers on the current (server) span; never payloads or meta."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    stored = record.stored_event_ids[0] if record.stored_event_ids else None
    event_id = stored or record.request_event_id
    if event_id is not None:
        span.set_attribute("noetl.event_id", str(event_id))
    if (
        stored is not None
        and record.request_event_id is not None
        and record.request_event_id != stored
    ):
        span.set_attribute("noetl.request_event_id", str(record.request_event_id))
    if record.execution_id is not None:
        span.set_attribute("noetl.execution_id", str(record.execution_id))
    span.set_attribute("noetl.envelope.shape", record.shape or "unknown")
    span.set_attribute("noetl.envelope.target", record.target)
    span.set_attribute("noetl.client", client)
    span.set_attribute("noetl.outcome", record.outcome)
    if record.upstream_version is not None:
        span.set_attribute("noetl.upstream.version", record.upstream_version)
    if record.batch_size is not None:
        span.set_attribute("noetl.batch.size", record.batch_size)
        if record.stored_event_ids:
            span.set_attribute("noetl.batch.event_ids", [str(i) for i in record.stored_event_ids])
    if record.outcome != "forwarded":
        code = record.error_code or _fallback_code(record)
        span.set_attribute("noetl.error.code", code)
        if record.upstream_status is not None:
            span.set_attribute("noetl.upstream.status_code", record.upstream_status)
        span.set_status(trace.StatusCode.ERROR, code)


def _fallback_code(record: EventRecord) -> str:
    if record.upstream_status is not None:
        return f"upstream_{record.upstream_status}"
    return record.outcome
