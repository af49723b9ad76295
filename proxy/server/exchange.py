"""One event request from admission to answer: its refusals, its upstream exchange, its record.

An `Exchange` is made when an event request arrives and gathers what it learns (shape,
conversion, the engine's refusal, the body when a check needs it). Every way it ends goes
through one of three doors, each of which records the outcome once for the extensions (and,
while the proxy drains, has the answer close its connection):
`refuse` (the proxy answers itself: problem+json),
`engine_refused` (the engine's own problem) and `forward` (the upstream's answer relayed as
it came — status, body bytes, content type, encoding, `Retry-After` — or the problem for an
upstream that gave none). The client therefore never sees a 2xx the upstream did not give.

The upstream exchange runs in the handler, over the event pool (`upstream.py`): the server
never cancels a handler whose client left, so a client that disconnects after sending its
body does not cancel the forwarding, and the outcome is still recorded.
"""

from __future__ import annotations

import logging
import time

import orjson
from aiohttp import hdrs, web

from proxy.contract import TRACE_HEADERS, ClientHints, EventRecord, Kind, Outcome
from proxy.envelope import Conversion, EnvelopeError
from proxy.server import problems
from proxy.server.admission import Refusal
from proxy.server.event_heads import EventHeads
from proxy.server.forward import Answer, UpstreamError
from proxy.server.state import ProxyState, Snapshot
from proxy.server.upstream import PoolBusy, UpstreamPools

log = logging.getLogger(__name__)

SHAPE_HEADER = "X-Envelope-Shape"
TARGET_HEADER = "X-Envelope-Target"


def stored_ids(answer: Answer) -> tuple[str, ...]:
    """`event_id` / `event_ids` from a 2xx JSON answer as exact decimal strings, else ()."""
    if not 200 <= answer.status < 300 or answer.content_encoding not in (None, "identity"):
        return ()
    return event_ids(answer.body)


def event_ids(body: bytes) -> tuple[str, ...]:
    """`event_id` / `event_ids` of a JSON answer body as exact decimal strings, else ()."""
    try:
        data = orjson.loads(body)  # integers stay exact up to 64 bits
    except orjson.JSONDecodeError:
        return ()
    if type(data) is not dict:
        return ()
    values = data.get("event_ids")
    if type(values) is not list:
        exact = _exact(data.get("event_id"))  # a single event's answer: no list to build
        return () if exact is None else (exact,)
    return tuple(exact for value in values if (exact := _exact(value)) is not None)


def _exact(value: object) -> str | None:
    # orjson gives exact types: `int` here is never a bool.
    if type(value) is int:
        return str(value)
    if type(value) is str and value.lstrip("-").isdigit():
        return value
    return None


def as_received(body: bytes, conv: Conversion | None, target: str) -> Conversion:
    """Observe mode: what is forwarded is the body as received, whatever the engine made
    of it (`conv`, None when it refused the body: then no shape is known)."""
    if conv is None:
        return Conversion("", target, body, "", None, False, None, None)
    # A minted id was never sent: it must not be reported as the request's.
    event_id = None if conv.event_id_minted else conv.event_id
    return conv._replace(body=body, event_id=event_id, event_id_minted=False)


class Exchange:
    """What one event request learnt, and the three ways it ends."""

    __slots__ = (
        "body",
        "conversion",
        "kind",
        "refusal",
        "request",
        "snapshot",
        "started",
        "state",
    )

    def __init__(self, request: web.Request, state: ProxyState, kind: Kind):
        self.request = request
        self.state = state
        self.snapshot: Snapshot = state.snapshot
        self.kind = kind
        self.body = b""  # kept only for the shadow check, observe mode and the quarantine
        self.conversion: Conversion | None = None
        self.started = time.perf_counter()  # for the whole request's duration
        self.refusal: EnvelopeError | None = None  # what the engine said, if it refused

    # -- the three doors -------------------------------------------------------------------

    async def refuse(self, refusal: Refusal) -> web.Response:
        """The proxy's own answer: nothing (or nothing complete) reached the upstream."""
        problem = refusal.problem
        self.record("rejected", error_code=problem.code)
        response = self._sent(
            problems.proxy_problem(
                problem,
                refusal.detail,
                headers=self.headers(),
                close=refusal.close or refusal.at_once,
            )
        )
        if refusal.at_once:
            await problems.send_and_close(self.request, response)
        return response

    @property
    def shape(self) -> str | None:
        """The detected shape, once the body was converted (observe mode: when it could be)."""
        return (self.conversion.shape or None) if self.conversion is not None else None

    def note_refusal(self, err: EnvelopeError, body: bytes) -> None:
        """What the engine refused, and the body it refused (the quarantine keeps it)."""
        self.refusal = err
        self.body = body

    def engine_refused(self, err: EnvelopeError, body: bytes) -> web.Response:
        self.note_refusal(err, body)
        self.record("rejected", error_code=err.code)
        return self._sent(problems.engine_problem(err, headers=self.headers()))

    async def forward(
        self, conv: Conversion, pools: UpstreamPools, heads: EventHeads
    ) -> web.StreamResponse:
        """Send the converted body upstream and relay the answer (or the problem)."""
        self.conversion = conv
        request, snapshot = self.request, self.snapshot
        settings = snapshot.settings.upstream
        try:
            upstream = pools.get(snapshot.upstream_origin, snapshot.generation)
            # Only a middleware sets them; without one the lookup (a miss: an exception
            # inside the request's Mapping.get) is skipped.
            trace = request.get(TRACE_HEADERS) if self.state.middlewares else None
            outgoing = heads.request(request, snapshot, upstream.host_header, trace, conv.body)
            answer = await upstream.send(
                outgoing,
                within=settings.timeout_seconds,
                connect_timeout=settings.connect_timeout_seconds,
            )
        except PoolBusy:
            wait = settings.connect_timeout_seconds
            reason = (
                "the proxy is shutting down"
                if self.state.past_cutoff()
                else f"all upstream connections stayed busy for {wait} s"
            )
            return await self.refuse(
                Refusal(problems.OVERLOADED, f"{reason}; the event was not sent")
            )
        except UpstreamError as err:
            log.warning(
                "%s %s: %s (execution %s, event %s)",
                request.method,
                request.path,
                err.detail,
                conv.execution_id,
                conv.event_id,
            )
            self.record("upstream_failed", error_code=err.problem.code)
            return self._sent(
                problems.proxy_problem(err.problem, err.detail, headers=self.headers())
            )
        status = answer.status
        self.record(
            "forwarded"
            if 200 <= status < 300
            else "upstream_failed"
            if status >= 500
            else "upstream_rejected",
            answer=answer,
        )
        relayed = self.headers()
        if answer.content_type is not None:
            relayed[hdrs.CONTENT_TYPE] = answer.content_type
        if answer.content_encoding is not None:
            relayed[hdrs.CONTENT_ENCODING] = answer.content_encoding
        if answer.retry_after is not None:
            relayed[hdrs.RETRY_AFTER] = answer.retry_after
        return self._sent(web.Response(status=status, body=answer.body, headers=relayed))

    # -- what every door does --------------------------------------------------------------

    def record(
        self, outcome: Outcome, *, error_code: str | None = None, answer: Answer | None = None
    ) -> None:
        """Tell the extensions how the request ended (once per request)."""
        extensions = self.state.extensions
        if not extensions:
            return
        request, snapshot, conv, refusal = (
            self.request,
            self.snapshot,
            self.conversion,
            self.refusal,
        )
        headers = request.headers
        header = snapshot.client_header
        observing = snapshot.settings.mode == "observe"
        if conv is None:
            worker_id = shape = execution_id = event_id = batch_size = None
        else:
            worker_id, shape = conv.worker_id, conv.shape or None
            execution_id, event_id, batch_size = (
                conv.execution_id or None,
                conv.event_id,
                conv.batch_size,
            )
        if answer is None:
            status = seconds = None
            stored: tuple[str, ...] = ()
        else:
            status, seconds, stored = answer.status, answer.seconds, stored_ids(answer)
        # Positional, in the fields' order: a record per event, and keyword arguments cost
        # more to pass than the record's whole construction otherwise.
        record = EventRecord(
            request.path,
            ClientHints(
                headers.get(header) if header else None,
                headers.get(hdrs.USER_AGENT),
                request.remote,
            ),
            worker_id,
            shape,
            snapshot.target,
            snapshot.upstream_version,
            outcome,
            error_code,
            status,
            execution_id,
            event_id,
            stored,
            batch_size,
            seconds,
            self.body,
            self.started,
            refusal.field if refusal else None,
            refusal.index if refusal else None,
            headers,
            "observe" if observing else "enforce",
            refusal.code if refusal and observing else None,
            self.kind,
        )
        for ext in extensions:
            ext.on_event(record)

    def _sent(self, response: web.Response) -> web.Response:
        self.state.send_away(response)  # while draining: Connection: close
        return response

    def headers(self) -> dict[str, str]:
        headers = {TARGET_HEADER: self.snapshot.target}
        if self.shape:
            headers[SHAPE_HEADER] = self.shape
        return headers
