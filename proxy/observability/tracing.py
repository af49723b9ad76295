"""Tracing: the proxy's TracerProvider and its one SERVER span per request.

Tracing is on when an OTLP endpoint is named: `tracing.otlp_endpoint` in the config (a
collector base URL such as `http://collector:4318`, `/v1/traces` is appended unless the
path already ends in it), or the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
`OTEL_EXPORTER_OTLP_ENDPOINT`. Spans leave over OTLP/HTTP protobuf: each is written to
bytes as it ends and sent in batches by `export.EncodingSpanProcessor` through the stock
exporter's HTTP client (`otlp.py`). Everything
else is the OpenTelemetry SDK's own environment handling: `OTEL_SERVICE_NAME` and
`service.name` in `OTEL_RESOURCE_ATTRIBUTES` win over `tracing.service_name`;
`OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` choose the sampler; `OTEL_PROPAGATORS`
the propagation format (W3C trace context and baggage by default);
`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`, `..._COMPRESSION` and `OTEL_BSP_*` tune the
exporter; `OTEL_SDK_DISABLED=true` turns tracing off;
`OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS` skips paths; `OTEL_SEMCONV_STABILITY_OPT_IN`
set to `http/dup` adds the old HTTP attribute names to the stable ones (the default).

Without an endpoint nothing is installed: no middleware, no provider.

One span per hop, as Envoy does: the SERVER span of each request (continuing the caller's
trace context) is the parent the upstream sees, its context injected by the configured
propagator into the upstream request (events and pass-through alike); there is no separate
CLIENT span. The sampler decides before any attribute is collected. HTTP attributes come
from `opentelemetry-instrumentation-aiohttp-server`'s helpers in the stable semantic
conventions; the span is named `"{method} {http.route}"` for the event routes and
`"{method}"` for pass-through (whose route is any path); a server span's status is left
unset for 4xx and is ERROR for 5xx, and `error.type` carries the problem code (such as
`unknown_shape` or `upstream_timeout`) or else the status code.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation._semconv import _StabilityMode
from opentelemetry.instrumentation.aiohttp_server import (
    collect_request_attributes,
    set_status_code,
)
from opentelemetry.propagate import get_global_textmap
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.resources import (
    SERVICE_NAME,
    SERVICE_VERSION,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.http import get_excluded_urls, sanitize_method

from proxy.contract import PROBLEM_CODE, TRACE_HEADERS, EventRecord, TraceHeaders
from proxy.observability.span_attributes import set_span_attributes
from proxy.observability.trace_context import Propagation
from proxy.server.logsafe import printable

TRACES_PATH = "/v1/traces"
SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _package_version() -> str:
    try:
        return version("envelope-proxy")
    except PackageNotFoundError:  # a checkout used without installing it
        return "0+unknown"


# `service.version` of every span; read once, at import (it reads package metadata files).
SERVICE_VERSION_VALUE = _package_version()


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


def semconv_mode() -> _StabilityMode:
    """Stable HTTP conventions, plus the old names when `http/dup` is opted into."""
    opted = {t.strip().lower() for t in os.environ.get(SEMCONV_OPT_IN, "").split(",")}
    return _StabilityMode.HTTP_DUP if "http/dup" in opted else _StabilityMode.HTTP


def build_tracer_provider(otlp_endpoint: str | None, service_name: str) -> TracerProvider | None:
    """A TracerProvider exporting over OTLP/HTTP, or None when tracing is off."""
    if not tracing_enabled(otlp_endpoint):
        return None
    # Imported here so that a proxy without tracing never loads the exporter.
    from proxy.observability.export import EncodingSpanProcessor
    from proxy.observability.otlp import FastOTLPSpanExporter

    env_attributes = OTELResourceDetector().detect().attributes
    attributes = {} if SERVICE_NAME in env_attributes else {SERVICE_NAME: service_name}
    if SERVICE_VERSION not in env_attributes:
        attributes[SERVICE_VERSION] = SERVICE_VERSION_VALUE
    provider = TracerProvider(resource=Resource.create(attributes), shutdown_on_exit=False)
    exporter = FastOTLPSpanExporter(endpoint=traces_url(otlp_endpoint) if otlp_endpoint else None)
    provider.add_span_processor(EncodingSpanProcessor(exporter))
    return provider


def _fixed_route(request: web.Request) -> str | None:
    """The route of a request when it names one path (the event routes), else None: the
    pass-through route matches any path, which says nothing about the request."""
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else None
    return canonical if canonical and "{" not in canonical else None


class RequestAttributes:
    """The HTTP attributes of an event request's span, computed once per distinct request.

    They depend only on the method, scheme, Host, path (the query string is dropped from
    them), User-Agent, HTTP version and route, which repeat request after request on the
    event routes; computing them costs more than the rest of the span. Pass-through
    requests (any path) are computed each time. At most `size` distinct ones are kept (the
    key holds client-chosen values); past that they are computed each time too.
    """

    def __init__(self, mode: _StabilityMode, size: int = 512) -> None:
        self.mode = mode
        self.size = size
        self._known: dict[tuple[Any, ...], dict[str, Any]] = {}

    def get(self, request: web.Request, route: str | None) -> dict[str, Any]:
        if route is None:
            attributes = safe_attributes(collect_request_attributes(request, self.mode))
            attributes.pop("http.route", None)
            return attributes
        headers = request.headers
        key = (
            request.method,
            request.scheme,
            headers.get("Host"),
            request.raw_path.partition("?")[0],
            headers.get("User-Agent"),
            request.version,
            route,
        )
        known = self._known.get(key)
        if known is None:
            known = safe_attributes(collect_request_attributes(request, self.mode))
            if len(self._known) < self.size:
                self._known[key] = known
        return known


class _Recorder:
    """Stands in for a span to read what `set_status_code` would set on one."""

    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}
        self.status: Status | None = None

    def is_recording(self) -> bool:
        return True

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_status(self, status: Status | trace.StatusCode, description: str | None = None) -> None:
        self.status = status if isinstance(status, Status) else Status(status, description)


class Outcomes:
    """What a server span gets from its answer: the attributes and status that
    `set_status_code` sets for the status, plus `error.type` (the problem code, else the
    status) from 400 on. Computed once per (status, problem code); at most `size` kept."""

    def __init__(self, mode: _StabilityMode, size: int = 256) -> None:
        self.mode = mode
        self.size = size
        self._known: dict[tuple[int, str | None], tuple[dict[str, Any], Status | None]] = {}

    def get(self, status: int, code: str | None) -> tuple[dict[str, Any], Status | None]:
        known = self._known.get((status, code))
        if known is None:
            recorder = _Recorder()
            set_status_code(recorder, status, sem_conv_opt_in_mode=self.mode)  # type: ignore[arg-type]
            if status >= 400:
                recorder.attributes["error.type"] = code or str(status)
            # Setting UNSET is a no-op on an SDK span: not worth a call per request.
            unset = recorder.status is None or recorder.status.status_code is StatusCode.UNSET
            known = (recorder.attributes, None if unset else recorder.status)
            if len(self._known) < self.size:
                self._known[(status, code)] = known
        return known


# sanitize_method reads the environment on every call; methods are client-chosen tokens.
_sanitized_method = functools.lru_cache(maxsize=64)(sanitize_method)


def server_middleware(provider: trace.TracerProvider) -> Middleware:
    """One SERVER span per request, continuing the caller's trace context, whose context
    the upstream request carries."""
    tracer = provider.get_tracer("proxy.observability.tracing", SERVICE_VERSION_VALUE)
    excluded = get_excluded_urls("AIOHTTP_SERVER")
    propagation = Propagation(get_global_textmap())
    replaces = propagation.replaces
    mode = semconv_mode()
    request_attributes = RequestAttributes(mode)
    outcomes = Outcomes(mode)

    @web.middleware
    async def trace_request(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if excluded is not None and excluded.url_disabled(request.path):
            return await handler(request)
        method = _sanitized_method(request.method)
        route = _fixed_route(request)
        verb = "HTTP" if method == "_OTHER" else method  # as the conventions name it
        name = verb if route is None else f"{verb} {route}"
        parent = propagation.extract(request.headers)
        span = tracer.start_span(
            name,
            context=parent,
            kind=trace.SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,
        )
        current = trace.set_span_in_context(span, parent)
        request[TRACE_HEADERS] = TraceHeaders(propagation.headers(current), replaces)
        token = otel_context.attach(current)
        if not span.is_recording():  # not sampled: no attribute work at all
            try:
                return await handler(request)
            finally:
                span.end()
                otel_context.detach(token)
        # The request's attributes and the answer's go on in one call, after the handler
        # (the SDK validates and locks per call); the event's own come from the handler.
        attributes = request_attributes.get(request, route)
        status: Status | None = None
        event: dict[str, Any] = {}  # what `annotate_current_span` adds meanwhile
        gathering = _EVENT_ATTRIBUTES.set(event)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            outcome, status = outcomes.get(exc.status_code, None)
            attributes = {**attributes, **outcome}
            raise
        except Exception as exc:
            kind = type(exc).__qualname__
            attributes = {**attributes, "error.type": kind}
            status = Status(StatusCode.ERROR, kind)
            span.record_exception(exc)
            raise
        else:
            outcome, status = outcomes.get(response.status, response.get(PROBLEM_CODE))
            attributes = {**attributes, **outcome}
            return response
        finally:
            _EVENT_ATTRIBUTES.reset(gathering)
            set_span_attributes(span, {**attributes, **event})
            if status is not None:
                span.set_status(status)
            span.end()
            otel_context.detach(token)

    return trace_request


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


# The event attributes of the request whose span the middleware is recording: gathered
# while its handler runs and set with the request's own in one call as the span ends (the
# SDK validates and locks per call).
_EVENT_ATTRIBUTES: ContextVar[dict[str, Any] | None] = ContextVar(
    "envelope_proxy_event_span_attributes", default=None
)


def annotate_current_span(record: EventRecord, client: str) -> None:
    """Put the event's identifiers on the request's server span (the middleware sets them
    when it ends), when it records one; never payloads or meta."""
    attributes = _EVENT_ATTRIBUTES.get()
    if attributes is None:  # no span, an unsampled one, or an excluded path
        return
    stored = record.stored_event_ids[0] if record.stored_event_ids else None
    event_id = stored or record.request_event_id
    if event_id is not None:
        attributes["noetl.event_id"] = str(event_id)
    if (
        stored is not None
        and record.request_event_id is not None
        and record.request_event_id != stored
    ):
        attributes["noetl.request_event_id"] = str(record.request_event_id)
    if record.execution_id is not None:
        attributes["noetl.execution_id"] = str(record.execution_id)
    attributes["noetl.envelope.shape"] = record.shape or "unknown"
    attributes["noetl.envelope.target"] = record.target
    attributes["noetl.client"] = client
    attributes["noetl.outcome"] = record.outcome
    if record.upstream_version is not None:
        attributes["noetl.upstream.version"] = record.upstream_version
    if record.batch_size is not None:
        attributes["noetl.batch.size"] = record.batch_size
        if record.stored_event_ids:
            attributes["noetl.batch.event_ids"] = [str(i) for i in record.stored_event_ids]
    if record.outcome != "forwarded":
        attributes["noetl.error.code"] = record.error_code or _fallback_code(record)
        if record.upstream_status is not None:
            attributes["noetl.upstream.status_code"] = record.upstream_status


def _fallback_code(record: EventRecord) -> str:
    if record.upstream_status is not None:
        return f"upstream_{record.upstream_status}"
    return record.outcome
