"""The access log (`log.access: true`): one line per request on the proxy port, logged to
`proxy.server.access_log`.

`AccessLogger` is the aiohttp access logger class the runner is given (`server_kwargs`); it
runs after the response was sent and reads what the request already left: method, route,
status, duration, the shape and target the event handler put on the response headers, and
what `AccessNotes` (an `Extension`) saw in the request's `EventRecord`: event id, client
and refusal code, and, with tracing on, the request's trace and span ids. Bodies, query
strings and header values other than the client's identity header are never logged.

`AccessNotes`' middleware puts a per-request dict in a context variable; the event handler's
record fills it, and this logger reads it once the response was sent.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import trace

from proxy.contract import EventRecord, ProxyView
from proxy.server.exchange import SHAPE_HEADER, TARGET_HEADER

ACCESS_LOGGER = __name__  # proxy.server.access_log: its level can be set on its own
PASSTHROUGH_ROUTE = "(pass-through)"
_IN_MESSAGE = ("method", "route", "status", "duration_ms")  # text lines need them once

_NOTES: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "envelope_proxy_access_notes", default=None
)
_NOTES_KEY = web.RequestKey("envelope_proxy_access_notes", dict)


@web.middleware
async def _notes_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    notes: dict[str, Any] = {}
    # The line is written after the request's server span has ended: keep its ids now.
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        notes["trace_id"] = format(context.trace_id, "032x")
        notes["span_id"] = format(context.span_id, "016x")
    request[_NOTES_KEY] = notes
    _NOTES.set(notes)
    return await handler(request)


class AccessNotes:
    """The `Extension` that keeps what the access line needs from each event's record."""

    def attach(self, view: ProxyView) -> None:
        return None

    def server_middlewares(self) -> Sequence[Middleware]:
        return (_notes_middleware,)

    def client_trace_configs(self) -> Sequence[aiohttp.TraceConfig]:
        return ()

    def admin_routes(self) -> Sequence[web.RouteDef]:
        return ()

    def on_event(self, record: EventRecord) -> None:
        notes = _NOTES.get()
        if notes is None:
            return
        notes["event_id"] = record.request_event_id
        notes["client"] = record.hints.header or record.worker_id
        if record.error_code is not None:
            notes["error"] = record.error_code

    def on_passthrough(self, status: int, seconds: float) -> None:
        return None

    def on_reload(self, ok: bool) -> None:
        return None

    def on_target(self, target: str, version: str | None) -> None:
        return None

    async def close(self) -> None:
        return None


def _route(request: web.BaseRequest) -> str | None:
    try:
        match_info = getattr(request, "match_info", None)
    except AssertionError:  # a web.Request the server answered before routing asserts here
        return None
    route = getattr(match_info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None:
        return None  # answered before routing (a malformed request, an Expect refusal)
    canonical: str = resource.canonical
    return PASSTHROUGH_ROUTE if "{tail" in canonical else canonical


class AccessLogger(AbstractAccessLogger):
    """Writes one INFO record per request to `proxy.server.access_log`, fields in `fields`."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        route = _route(request)
        fields: dict[str, Any] = {
            "method": request.method,
            "route": route,
            "path": request.path if route == PASSTHROUGH_ROUTE else None,
            "status": response.status,
            "duration_ms": round(time * 1000, 3),
            "shape": response.headers.get(SHAPE_HEADER),
            "target": response.headers.get(TARGET_HEADER),
            "peer": request.remote,
        }
        notes = request.get(_NOTES_KEY) if isinstance(request, web.Request) else None
        if notes:
            fields.update(notes)
        fields = {key: value for key, value in fields.items() if value is not None}
        self.logger.info(
            "%s %s %s %.1f ms",
            request.method,
            route or request.path,
            response.status,
            time * 1000,
            extra={"fields": fields, "in_message": _IN_MESSAGE},
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def access_log_kwargs(enabled: bool) -> dict[str, Any]:
    """The runner's access-log arguments: this logger class, or no access log at all."""
    if not enabled:
        return {"access_log": None}
    return {"access_log": logging.getLogger(__name__), "access_log_class": AccessLogger}
