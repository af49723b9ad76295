"""`POST /api/events` and `POST /api/events/batch`: read, convert, forward, relay, record.

Order of checks, cheapest first: protocol version and transfer coding (505/400/501, see
`framing`), content type (415), declared length (413, before reading), in-flight requests
and bytes, in total and for the client's address (503, see `budget`: body bytes count as they
arrive, a declared length against what is free), then the body under a size, time and budget
bound (413 / 408 / 503). The engine
converts it for the snapshot's target (its refusals become problem+json with its status);
the upstream's answer is relayed as it came (status, body bytes, content type, encoding,
`Retry-After`), so the client never sees a 2xx the upstream did not give.

In observe mode (`mode: observe`) the body is converted all the same, but what is forwarded
is the body as received, byte for byte, refused or not; what enforce mode would have done
goes into the `EventRecord` (`would_refuse`).

The upstream exchange runs in the handler, over the event pool (`upstream.py`): the server
never cancels a handler whose client left, so a client that disconnects after sending its
body does not cancel the forwarding, and the outcome is still recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

import orjson
from aiohttp import hdrs, web

from proxy.contract import TRACE_HEADERS, ClientHints, EventRecord, Outcome
from proxy.envelope import Conversion, EnvelopeError
from proxy.server import budget, framing, problems
from proxy.server.budget import Ticket
from proxy.server.forward import Answer, UpstreamError
from proxy.server.headers import event_request_headers
from proxy.server.keys import PEERS, POOLS, STATE
from proxy.server.state import ProxyState, Snapshot
from proxy.server.upstream import PoolBusy, request_bytes

log = logging.getLogger(__name__)

SHAPE_HEADER = "X-Envelope-Shape"
TARGET_HEADER = "X-Envelope-Target"

Kind = Literal["event", "batch"]


def is_json_content_type(request: web.BaseRequest) -> bool:
    """`application/json` or `application/*+json`, in UTF-8 (as the Rust server accepts)."""
    mime = request.content_type
    if mime != "application/json" and not (
        mime.startswith("application/") and mime.endswith("+json")
    ):
        return False
    charset = request.charset
    return charset is None or charset.lower() in ("utf-8", "utf8")


class _BodyTooLarge(Exception):
    pass


class _OverBudget(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


async def _read_body(request: web.BaseRequest, limit: int, seconds: float, ticket: Ticket) -> bytes:
    """The whole body, refused once past `limit` bytes or `seconds`, or when its bytes no
    longer fit the in-flight budget (counted on `ticket` as they arrive); copied once at most."""
    content = request.content
    if content.is_eof():
        # It arrived whole with the headers (the usual small event): no timer, no wait.
        body = content.read_nowait()
        if len(body) > limit:
            raise _BodyTooLarge
        if (refusal := ticket.add(len(body))) is not None:
            raise _OverBudget(refusal)
        return body
    chunks: list[bytes] = []
    size = 0
    async with asyncio.timeout(seconds):
        while chunk := await content.readany():
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge
            if (refusal := ticket.add(len(chunk))) is not None:
                raise _OverBudget(refusal)
            chunks.append(chunk)
    # `join` hands back a lone chunk as it is: a body that arrived in one piece is not
    # copied at all.
    return b"".join(chunks)


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
    if not isinstance(data, dict):
        return ()
    values = data.get("event_ids")
    if not isinstance(values, list):
        values = [data.get("event_id")]
    ids = []
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            ids.append(str(value))
        elif isinstance(value, str) and value.lstrip("-").isdigit():
            ids.append(value)
    return tuple(ids)


class _Exchange:
    """What one event request learnt, turned into the `EventRecord` at the end."""

    def __init__(self, request: web.Request, snapshot: Snapshot):
        self.request = request
        self.snapshot = snapshot
        self.body = b""  # kept only for the shadow check, observe mode and the quarantine
        self.conversion: Conversion | None = None
        self.shape: str | None = None
        self.started = time.perf_counter()  # for the whole request's duration
        self.refusal: EnvelopeError | None = None  # what the engine said, if it refused

    def record(
        self,
        state: ProxyState,
        outcome: Outcome,
        *,
        error_code: str | None = None,
        answer: Answer | None = None,
        upstream_seconds: float | None = None,
    ) -> None:
        if not state.extensions:
            return
        request, snapshot, conv = self.request, self.snapshot, self.conversion
        refusal = self.refusal
        header = snapshot.client_header
        observing = snapshot.settings.mode == "observe"
        record = EventRecord(
            path=request.path,
            hints=ClientHints(
                header=request.headers.get(header) if header else None,
                user_agent=request.headers.get(hdrs.USER_AGENT),
                peer=request.remote,
            ),
            worker_id=conv.worker_id if conv else None,
            shape=self.shape,
            target=snapshot.target,
            upstream_version=snapshot.upstream_version,
            outcome=outcome,
            error_code=error_code,
            upstream_status=answer.status if answer else None,
            execution_id=(conv.execution_id or None) if conv else None,
            request_event_id=conv.event_id if conv else None,
            stored_event_ids=stored_ids(answer) if answer else (),
            batch_size=conv.batch_size if conv else None,
            upstream_seconds=answer.seconds if answer else upstream_seconds,
            body=self.body,
            started=self.started,
            error_field=refusal.field if refusal else None,
            error_index=refusal.index if refusal else None,
            headers=request.headers,
            mode="observe" if observing else "enforce",
            would_refuse=refusal.code if refusal and observing else None,
        )
        for ext in state.extensions:
            ext.on_event(record)

    def headers(self) -> dict[str, str]:
        headers = {TARGET_HEADER: self.snapshot.target}
        if self.shape:
            headers[SHAPE_HEADER] = self.shape
        return headers


def as_received(body: bytes, conv: Conversion | None, target: str) -> Conversion:
    """Observe mode: what is forwarded is the body as received, whatever the engine made
    of it (`conv`, None when it refused the body: then no shape is known)."""
    if conv is None:
        return Conversion("", target, body, "", None, False, None, None)
    # A minted id was never sent: it must not be reported as the request's.
    event_id = None if conv.event_id_minted else conv.event_id
    return conv._replace(body=body, event_id=event_id, event_id_minted=False)


def _relay(answer: Answer, exchange: _Exchange) -> web.Response:
    headers = exchange.headers()
    if answer.content_type is not None:
        headers[hdrs.CONTENT_TYPE] = answer.content_type
    if answer.content_encoding is not None:
        headers[hdrs.CONTENT_ENCODING] = answer.content_encoding
    if answer.retry_after is not None:
        headers[hdrs.RETRY_AFTER] = answer.retry_after
    return web.Response(status=answer.status, body=answer.body, headers=headers)


async def _forward(
    request: web.Request, state: ProxyState, exchange: _Exchange, conv: Conversion
) -> web.StreamResponse:
    snapshot = exchange.snapshot
    settings = snapshot.settings.upstream
    err: UpstreamError | None = None
    try:
        upstream = request.app[POOLS].get(snapshot.upstream_origin, snapshot.generation)
        trace = request.get(TRACE_HEADERS)
        if trace is None:
            headers = event_request_headers(request)
        else:
            headers = event_request_headers(request, trace.replaces)
            headers.extend(trace.headers)
        outgoing = request_bytes(
            b"POST", snapshot.upstream_target(request), upstream.host_header, headers, conv.body
        )
        loop = asyncio.get_running_loop()
        answer = await upstream.send(
            outgoing,
            deadline=loop.time() + settings.timeout_seconds,
            connect_timeout=settings.connect_timeout_seconds,
            budget=settings.timeout_seconds,
        )
    except PoolBusy:
        reason = (
            "the proxy is shutting down"
            if state.past_cutoff()
            else f"all upstream connections stayed busy for {settings.connect_timeout_seconds} s"
        )
        exchange.record(state, "rejected", error_code=problems.OVERLOADED.code)
        response = problems.overloaded(f"{reason}; the event was not sent")
        response.headers.update(exchange.headers())
        return response
    except UpstreamError as caught:
        err = caught
    if err is None:
        outcome: Outcome = (
            "forwarded"
            if 200 <= answer.status < 300
            else "upstream_failed"
            if answer.status >= 500
            else "upstream_rejected"
        )
        exchange.record(state, outcome, answer=answer)
        return _relay(answer, exchange)
    log.warning(
        "%s %s: %s (execution %s, event %s)",
        request.method,
        request.path,
        err.detail,
        conv.execution_id,
        conv.event_id,
    )
    exchange.record(state, "upstream_failed", error_code=err.problem.code)
    return problems.proxy_problem(err.problem, err.detail, headers=exchange.headers())


async def _handle(request: web.Request, kind: Kind) -> web.StreamResponse:
    state = request.app[STATE]
    snapshot = state.snapshot
    limits = snapshot.settings.limits
    exchange = _Exchange(request, snapshot)

    def refuse(problem: problems.ProxyProblem, detail: str, **kw: bool) -> web.Response:
        exchange.record(state, "rejected", error_code=problem.code)
        return problems.proxy_problem(problem, detail, headers=exchange.headers(), **kw)

    def shed(detail: str) -> web.Response:
        exchange.record(state, "rejected", error_code=problems.OVERLOADED.code)
        response = problems.overloaded(detail)
        response.headers.update(exchange.headers())
        return response

    refused = framing.refusal(request)
    if refused is not None:
        return refuse(*refused, close=True)
    if not is_json_content_type(request):
        got = request.headers.get(hdrs.CONTENT_TYPE, "none")
        return refuse(
            problems.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type must be application/json (UTF-8); got {got}",
        )
    if request.headers.get(hdrs.CONTENT_ENCODING, "identity").lower() != "identity":
        return refuse(problems.UNSUPPORTED_MEDIA_TYPE, "compressed request bodies are not accepted")
    declared = request.content_length
    if declared is not None and declared > limits.max_body_bytes:
        return refuse(
            problems.BODY_TOO_LARGE,
            f"body of {declared} bytes is over the {limits.max_body_bytes}-byte limit",
            close=True,
        )
    # Bodies are held in memory while they are converted and forwarded: their bytes count
    # against the budgets as they arrive (a declared length is only checked against what
    # is free now).
    ticket = budget.admit(state, request.app[PEERS], request.remote, limits, declared)
    if isinstance(ticket, str):
        return shed(ticket)
    try:
        try:
            body = await _read_body(
                request, limits.max_body_bytes, limits.body_read_timeout_seconds, ticket
            )
        except _BodyTooLarge:
            return refuse(
                problems.BODY_TOO_LARGE,
                f"body is over the {limits.max_body_bytes}-byte limit",
                close=True,
            )
        except _OverBudget as over:
            response = shed(f"{over.reason}; the event was not sent")
            response.force_close()  # the rest of the body is not read
            return response
        except TimeoutError:
            response = refuse(
                problems.BODY_TIMEOUT,
                f"body not received within {limits.body_read_timeout_seconds} s",
                close=True,
            )
            await problems.send_and_close(request, response)
            return response
        except (ConnectionError, OSError, web.RequestPayloadError):
            return refuse(
                problems.CLIENT_ABORTED, "the body was cut short or badly framed", close=True
            )
        except asyncio.CancelledError:
            # The server cancels the handler when the client leaves (if so configured).
            exchange.record(state, "rejected", error_code=problems.CLIENT_ABORTED.code)
            raise
        observing = snapshot.settings.mode == "observe"
        if snapshot.settings.shadow or observing:
            exchange.body = body  # the shadow check converts the original once more

        convert = (
            snapshot.engine.convert_batch if kind == "batch" else snapshot.engine.convert_event
        )
        try:
            conv = convert(body, snapshot.target)
        except EnvelopeError as err:
            exchange.refusal = err
            exchange.body = body  # the quarantine keeps what was refused
            if not observing:
                exchange.record(state, "rejected", error_code=err.code)
                return problems.engine_problem(err, headers=exchange.headers())
            conv = as_received(body, None, snapshot.target)
        else:
            if observing:
                conv = as_received(body, conv, snapshot.target)
        # The upstream may take long: only the converted body stays in memory meanwhile.
        del body
        exchange.conversion = conv
        exchange.shape = conv.shape or None

        # The server never cancels a handler when its client leaves (`server_kwargs`): the
        # exchange runs to its end here and its outcome is recorded.
        return await _forward(request, state, exchange, conv)
    finally:
        ticket.release()


async def _expect(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue`: refuse a body before the client sends it, when its declared
    size is over the limit or the proxy is at its in-flight limits (the handler checks the
    same again once the body is read)."""
    refused = framing.refuse(request)
    if refused is not None:
        return refused
    state = request.app[STATE]
    limits = state.snapshot.settings.limits
    declared = request.content_length
    if declared is not None and declared > limits.max_body_bytes:
        return problems.proxy_problem(
            problems.BODY_TOO_LARGE,
            f"body of {declared} bytes is over the {limits.max_body_bytes}-byte limit",
            close=True,
        )
    overloaded = budget.refusal(state, request.app[PEERS], request.remote, limits, declared)
    if overloaded is not None:
        response = problems.overloaded(overloaded)
        response.force_close()  # the client may send its body anyway: do not read it
        return response
    if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {request.headers[hdrs.EXPECT]}")
    if request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim answer is not part of the response
    return None


async def handle_event(request: web.Request) -> web.StreamResponse:
    return await _handle(request, "event")


async def handle_batch(request: web.Request) -> web.StreamResponse:
    return await _handle(request, "batch")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/events", handle_event, expect_handler=_expect)
    app.router.add_post("/api/events/batch", handle_batch, expect_handler=_expect)
