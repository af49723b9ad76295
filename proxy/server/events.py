"""`POST /api/events` and `POST /api/events/batch`: admit, read, convert, then the exchange.

Order of checks, cheapest first: what `admission.before_body` checks (protocol, framing,
content type, declared length), then the in-flight requests and bytes, in total and for the
client's address (503, see `budget`: body bytes count as they arrive, a declared length
against what is free), then the body under a size, time and budget bound (413 / 408 / 503).
The engine converts it for the snapshot's target (its refusals become problem+json with its
status) and the `Exchange` forwards it and relays the answer.

In observe mode (`mode: observe`) the body is converted all the same, but what is forwarded
is the body as received, byte for byte, refused or not; what enforce mode would have done
goes into the `EventRecord` (`would_refuse`).
"""

from __future__ import annotations

import asyncio

from aiohttp import hdrs, web

from proxy.contract import Kind
from proxy.envelope import EnvelopeError
from proxy.server import admission, budget, problems
from proxy.server.admission import Refusal
from proxy.server.budget import Ticket
from proxy.server.event_heads import EventHeads
from proxy.server.exchange import Exchange, as_received
from proxy.server.keys import PEERS, POOLS, STATE


class _Refused(Exception):
    def __init__(self, refusal: Refusal):
        super().__init__(refusal.detail)
        self.refusal = refusal


async def _read_body(request: web.BaseRequest, limit: int, seconds: float, ticket: Ticket) -> bytes:
    """The whole body, refused once past `limit` bytes or `seconds`, or when its bytes no
    longer fit the in-flight budget (counted on `ticket` as they arrive); copied once at most."""
    content = request.content
    if content.is_eof():
        # It arrived whole with the headers (the usual small event): no timer, no wait.
        body = content.read_nowait()
        _check_chunk(len(body), len(body), limit, ticket)
        return body
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            while chunk := await content.readany():
                size += len(chunk)
                _check_chunk(size, len(chunk), limit, ticket)
                chunks.append(chunk)
    except TimeoutError:
        raise _Refused(
            Refusal(problems.BODY_TIMEOUT, f"body not received within {seconds} s", at_once=True)
        ) from None
    except (ConnectionError, OSError, web.RequestPayloadError):
        raise _Refused(
            Refusal(problems.CLIENT_ABORTED, "the body was cut short or badly framed", close=True)
        ) from None
    # `join` hands back a lone chunk as it is: a body that arrived in one piece is not
    # copied at all.
    return b"".join(chunks)


def _check_chunk(size: int, chunk: int, limit: int, ticket: Ticket) -> None:
    if size > limit:
        raise _Refused(
            Refusal(problems.BODY_TOO_LARGE, f"body is over the {limit}-byte limit", close=True)
        )
    refused = ticket.add(chunk)
    if refused is not None:  # the rest of the body is not read
        raise _Refused(
            Refusal(problems.OVERLOADED, f"{refused}; the event was not sent", close=True)
        )


class EventEndpoint:
    """One event route of one application (`kind`): its handler and its `Expect` handler.

    It holds what every request needs from the application, looked up once.
    """

    __slots__ = ("app", "heads", "kind", "peers", "state")

    def __init__(self, app: web.Application, kind: Kind) -> None:
        self.app = app
        self.kind: Kind = kind
        self.state = app[STATE]
        self.peers = app[PEERS]
        self.heads = EventHeads()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        state, kind = self.state, self.kind
        exchange = Exchange(request, state, kind)
        snapshot = exchange.snapshot
        limits = snapshot.settings.limits
        declared = request.content_length
        refused = admission.before_body(request, limits, declared)
        if refused is not None:
            return await exchange.refuse(refused)
        ticket = budget.admit(state, self.peers, request.remote, limits, declared)
        if isinstance(ticket, str):
            return await exchange.refuse(Refusal(problems.OVERLOADED, ticket))
        try:
            try:
                body = await _read_body(
                    request, limits.max_body_bytes, limits.body_read_timeout_seconds, ticket
                )
            except _Refused as refused_body:
                return await exchange.refuse(refused_body.refusal)
            except asyncio.CancelledError:
                # The server cancels the handler when the client leaves (if so configured).
                exchange.record("rejected", error_code=problems.CLIENT_ABORTED.code)
                raise
            observing = snapshot.settings.mode == "observe"
            if snapshot.settings.shadow or observing:
                exchange.body = body  # the shadow check converts the original once more
            engine = snapshot.engine
            convert = engine.convert_batch if kind == "batch" else engine.convert_event
            try:
                conv = convert(body, snapshot.target)
            except EnvelopeError as err:
                if not observing:
                    return exchange.engine_refused(err, body)
                exchange.note_refusal(err, body)
                conv = as_received(body, None, snapshot.target)
            else:
                if observing:
                    conv = as_received(body, conv, snapshot.target)
            # The upstream may take long: only the converted body stays in memory meanwhile.
            del body
            return await exchange.forward(conv, self.app[POOLS], self.heads)
        finally:
            ticket.release()

    async def expect(self, request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue`: refuse a body before the client sends it, for what the
        handler would refuse it for before reading it (it checks the same again once the
        body is read). A refusal is sent at once and the connection closed: the body is not
        coming (and is not waited for), or comes anyway and must not be read as a request.
        aiohttp runs this before the middlewares, so such a refusal has no span."""
        state = self.state
        limits = state.snapshot.settings.limits
        declared = request.content_length
        refused = admission.before_body(request, limits, declared)
        if refused is None:
            overloaded = budget.refusal(state, self.peers, request.remote, limits, declared)
            if overloaded is not None:
                refused = Refusal(problems.OVERLOADED, overloaded)
        if refused is not None:
            closing = Refusal(refused.problem, refused.detail, at_once=True)
            return await Exchange(request, state, self.kind).refuse(closing)
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            unknown = web.Response(
                status=417, text=f"Unknown Expect: {request.headers[hdrs.EXPECT]}"
            )
            state.send_away(unknown)
            return unknown
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the interim answer is not part of the response
        return None


ROUTES: tuple[tuple[str, Kind], ...] = (("/api/events", "event"), ("/api/events/batch", "batch"))
# The application's endpoints and their routes by path, for the dispatcher.
ENDPOINTS = web.AppKey(
    "envelope_proxy_event_endpoints", dict[str, tuple[EventEndpoint, web.AbstractRoute]]
)


def add_routes(app: web.Application) -> None:
    """The event routes on `app` (whose state and peer load are set already)."""
    endpoints = app[ENDPOINTS] = {}
    for path, kind in ROUTES:
        endpoint = EventEndpoint(app, kind)
        route = app.router.add_post(path, endpoint.handle, expect_handler=endpoint.expect)
        endpoints[path] = (endpoint, route)
