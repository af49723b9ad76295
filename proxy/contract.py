"""What the server and its extensions (observability) share, and nothing else.

The server owns the request path; extensions own what is recorded about it. They meet only
here. At start-up the server gives each extension a `ProxyView` (`Extension.attach`), lets
it add middlewares, client trace configs and admin routes, then builds an `EventRecord` for
every request to an event endpoint and calls `Extension.on_event` inside the handler (so the
request's server span is current), and calls `Extension.on_passthrough` when a pass-through
request was answered. The proxy's own refusal codes, which a record's `error_code` may
carry beside the engine's, are listed here too.

This module imports nothing from `proxy.server` or `proxy.observability`: both import it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

if TYPE_CHECKING:
    from proxy.envelope import Engine

Outcome = Literal["forwarded", "upstream_rejected", "upstream_failed", "rejected"]
Kind = Literal["event", "batch"]  # the endpoint: /api/events or /api/events/batch


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
    kind: Kind = "event"


@dataclass(frozen=True, slots=True)
class ProxyProblem:
    """One failure the proxy answers itself (nothing, or nothing complete, reached upstream).

    The codes are public: they appear in problem bodies, in `EventRecord.error_code` and in
    the failure table of docs/shapes-and-errors.md."""

    code: str
    status: int
    title: str


OVERLOADED = ProxyProblem("overloaded", 503, "Too many requests in flight")
UNSUPPORTED_MEDIA_TYPE = ProxyProblem("unsupported_media_type", 415, "Body must be JSON")
BODY_TOO_LARGE = ProxyProblem("body_too_large", 413, "Body is larger than allowed")
BODY_TIMEOUT = ProxyProblem("body_timeout", 408, "Body did not arrive in time")
CLIENT_ABORTED = ProxyProblem("client_aborted", 400, "Client closed the connection mid-body")
UNSUPPORTED_TRANSFER_CODING = ProxyProblem(
    "unsupported_transfer_coding", 501, "Transfer coding not implemented"
)
HTTP_VERSION_NOT_SUPPORTED = ProxyProblem(
    "http_version_not_supported", 505, "HTTP version not supported"
)
BAD_REQUEST_LINE = ProxyProblem("bad_request_line", 400, "Request line is not HTTP/1.x")
UPSTREAM_UNAVAILABLE = ProxyProblem("upstream_unavailable", 502, "Upstream unreachable")
UPSTREAM_TIMEOUT = ProxyProblem("upstream_timeout", 504, "Upstream did not answer in time")
BAD_UPSTREAM_RESPONSE = ProxyProblem("bad_upstream_response", 502, "Upstream answer unusable")
UPSTREAM_DISCONNECTED = ProxyProblem(
    "upstream_disconnected", 502, "Upstream closed the connection before answering"
)
UPSTREAM_REQUEST_FAILED = ProxyProblem(
    "upstream_request_failed", 502, "The request to the upstream failed"
)

# Every code the proxy answers with itself (engine refusals bring their own).
PROXY_CODES = frozenset(
    value.code for value in globals().values() if isinstance(value, ProxyProblem)
)


class ProxyView(Protocol):
    """What an extension may read of the running proxy, always as it is now (a reload or
    a new upstream version shows at once). Given once, at `Extension.attach`."""

    @property
    def engine(self) -> Engine:
        """The engine requests are converted with now."""
        ...

    @property
    def inflight(self) -> int:
        """Requests the proxy is serving at this moment."""
        ...

    @property
    def client_header(self) -> str | None:
        """The request header the server passes as `ClientHints.header`, if any."""
        ...


class Extension(Protocol):
    """An add-on the server consults; every method must be cheap and must not raise."""

    def attach(self, view: ProxyView) -> None: ...

    def server_middlewares(self) -> Sequence[Middleware]: ...

    def client_trace_configs(self) -> Sequence[aiohttp.TraceConfig]: ...

    def admin_routes(self) -> Sequence[web.RouteDef]: ...

    def on_event(self, record: EventRecord) -> None: ...

    def on_passthrough(self, status: int, seconds: float) -> None: ...

    def on_reload(self, ok: bool) -> None: ...

    def on_target(self, target: str, version: str | None) -> None: ...

    async def close(self) -> None: ...
