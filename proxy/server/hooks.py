"""What the server tells extensions (observability) about each request, and how it asks them.

The server owns the request path; extensions own what is recorded about it. They meet only
here: the server builds an `EventRecord` for every request to an event endpoint and calls
`Extension.on_event` inside the handler (so the request's server span is current), calls
`Extension.on_passthrough` when a pass-through request was answered, and it
lets extensions add middlewares, client trace configs and admin routes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

Outcome = Literal["forwarded", "upstream_rejected", "upstream_failed", "rejected"]


@dataclass(frozen=True, slots=True)
class TraceHeaders:
    """The trace context an extension wants the upstream request to carry: `headers` to
    add, and the (lower-case) names they replace in what the client sent."""

    headers: tuple[tuple[bytes, bytes], ...]
    replaces: frozenset[bytes]


# Put on a request by a tracing middleware; read by the code that calls the upstream.
TRACE_HEADERS = web.RequestKey("envelope_proxy_trace_headers", TraceHeaders)
# Put on a problem+json response: its stable code, for whatever records the answer.
PROBLEM_CODE = web.ResponseKey("envelope_proxy_problem_code", str)


@dataclass(slots=True)
class ClientHints:
    """Raw material for a client identity; the extension chooses the identity from it."""

    header: str | None  # the X-NoETL-Client header (or the configured header)
    user_agent: str | None
    peer: str | None  # remote address


# Not frozen: a frozen dataclass sets each of these fields through object.__setattr__,
# which made building one record per event cost more than the metrics it feeds.
@dataclass(slots=True)
class EventRecord:
    """One request to `POST /api/events` or `POST /api/events/batch`, after it was answered.
    Treat it as read-only: every extension sees the same record."""

    path: str
    hints: ClientHints
    worker_id: str | None  # from the envelope, when it carried one
    shape: str | None  # None when refused before a shape was known
    target: str
    upstream_version: str | None
    outcome: Outcome
    error_code: str | None  # engine or proxy code for `rejected` / `upstream_failed`
    upstream_status: int | None
    execution_id: str | None  # decimal string
    request_event_id: str | None  # given by the client or minted by the proxy
    stored_event_ids: tuple[str, ...]  # ids the upstream reported (decimal strings)
    batch_size: int | None
    upstream_seconds: float | None
    # The body as received when `shadow` is on or in observe mode (for their checks), and
    # when the engine refused it (for the quarantine); else b"".
    body: bytes
    started: float | None = None  # time.perf_counter() when the handler began
    error_field: str | None = None  # where the engine's refusal points, when it says
    error_index: int | None = None  # the batch item it refused
    headers: Mapping[str, str] | None = None  # the request's headers (not copied)
    mode: Literal["enforce", "observe"] = "enforce"
    # Observe mode: the code enforce mode would have refused the body with (None: accepted).
    would_refuse: str | None = None


class Extension(Protocol):
    """An add-on the server consults; every method must be cheap and must not raise."""

    def server_middlewares(self) -> Sequence[Middleware]: ...

    def client_trace_configs(self) -> Sequence[aiohttp.TraceConfig]: ...

    def admin_routes(self) -> Sequence[web.RouteDef]: ...

    def on_event(self, record: EventRecord) -> None: ...

    def on_passthrough(self, status: int, seconds: float) -> None: ...

    def on_reload(self, ok: bool) -> None: ...

    def on_target(self, target: str, version: str | None) -> None: ...

    def set_inflight_provider(self, provider: Callable[[], int]) -> None: ...

    async def close(self) -> None: ...
