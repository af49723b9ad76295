"""Every request that is not an event: proxied untouched, streamed both ways.

Method, path and query go upstream as received; the body is streamed (with the client's
`Content-Length` when it gave one, else chunked), and so is the answer, chunk by chunk as it
arrives, so a server-sent-events stream reaches the client event by event. Bytes are never
decoded or re-encoded (the upstream session does not decompress), only hop-by-hop headers
are dropped. A failure before the answer starts is a problem+json 502/504; after it started,
the client connection is cut so the truncation is visible. Slow peers hold nothing forever:
a client body that stalls for `limits.body_read_timeout_seconds` is answered 408 (or cut),
and a client that stops reading the answer for `upstream.timeout_seconds` is cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import hdrs, web

from proxy.contract import TRACE_HEADERS
from proxy.server import budget, framing, problems
from proxy.server.forward import UpstreamError, classify, never_sent
from proxy.server.headers import (
    client_response_headers,
    upstream_request_headers,
)
from proxy.server.keys import PEERS, STATE, STREAM_SESSION, STREAMS
from proxy.server.logsafe import printable

log = logging.getLogger(__name__)


class _ClientBody:
    """The client's body, streamed chunk by chunk, with a bound on each wait for the next
    and, when `cap` is set, on its size."""

    def __init__(self, request: web.Request, seconds: float, cap: int | None):
        self._content = request.content
        self._seconds = seconds
        self._cap = cap
        self.stalled = False
        self.too_large = False

    async def chunks(self) -> AsyncIterator[bytes]:
        size = 0
        while True:
            try:
                async with asyncio.timeout(self._seconds):
                    chunk = await self._content.readany()
            except TimeoutError:
                self.stalled = True
                raise
            if not chunk:
                return
            size += len(chunk)
            if self._cap is not None and size > self._cap:
                # Cuts the upstream request short; the client is answered 413.
                self.too_large = True
                raise OSError(f"the body is over the {self._cap}-byte pass-through limit")
            yield chunk


async def _open(request: web.Request, body: _ClientBody | None) -> aiohttp.ClientResponse:
    snapshot = request.app[STATE].snapshot
    session = request.app[STREAM_SESSION]
    url = snapshot.upstream_url(request)
    headers = upstream_request_headers(request, keep_content_length=True)
    trace = request.get(TRACE_HEADERS)
    if trace is not None:  # the proxy's span is the upstream's parent, not the caller's
        for name in trace.replaces:
            headers.popall(name.decode(), None)
        for name, value in trace.headers:
            headers.add(name.decode(), value.decode())
    has_body = body is not None
    retried = False
    while True:
        try:
            return await session.request(
                request.method,
                url,
                headers=headers,
                data=body.chunks() if body is not None else None,
                timeout=snapshot.stream_timeouts,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            # A streamed body cannot be replayed once read; only a bodiless request can.
            if not retried and not has_body and never_sent(exc):
                retried = True
                continue
            raise classify(exc, snapshot.stream_timeouts) from exc


_EVENT_OUTCOME = "the event may or may not have been stored"


def _about_request(detail: str) -> str:
    """An upstream failure's detail, worded for a request that is not an event."""
    return detail.replace(_EVENT_OUTCOME, "the upstream may or may not have acted on the request")


async def handle_passthrough(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    response = await _admit(request)
    state = request.app[STATE]
    state.send_away(response)
    extensions = state.extensions
    if extensions:
        seconds = time.perf_counter() - started
        for ext in extensions:
            ext.on_passthrough(response.status, seconds)
    return response


async def _admit(request: web.Request) -> web.StreamResponse:
    refused = framing.refuse(request)
    if refused is not None:
        return refused
    state = request.app[STATE]
    limits = state.snapshot.settings.limits
    cap = limits.max_passthrough_body_bytes
    declared = request.content_length
    if cap is not None and declared is not None and declared > cap:
        return problems.proxy_problem(
            problems.BODY_TOO_LARGE,
            f"body of {declared} bytes is over the {cap}-byte pass-through limit",
            close=True,
        )
    # Pass-through bodies are streamed, never held: they count as requests, not bytes.
    ticket = budget.admit(state, request.app[PEERS], request.remote, limits)
    if isinstance(ticket, str):
        return problems.proxy_problem(problems.OVERLOADED, ticket)
    streams = request.app[STREAMS]
    task = asyncio.current_task()
    if task is not None:
        streams.add(task)
    try:
        return await _relay(request)
    finally:
        streams.discard(task)
        ticket.release()


async def _relay(request: web.Request) -> web.StreamResponse:
    settings = request.app[STATE].snapshot.settings
    limits = settings.limits
    body = (
        _ClientBody(request, limits.body_read_timeout_seconds, limits.max_passthrough_body_bytes)
        if request.body_exists
        else None
    )
    try:
        upstream = await _open(request, body)
    except UpstreamError as err:
        if body is not None and body.too_large:
            return problems.proxy_problem(
                problems.BODY_TOO_LARGE,
                f"body is over the {limits.max_passthrough_body_bytes}-byte pass-through limit",
                close=True,
            )
        if body is not None and body.stalled:
            timeout = problems.proxy_problem(
                problems.BODY_TIMEOUT,
                "the request body stalled for more than "
                f"{settings.limits.body_read_timeout_seconds} s",
                close=True,
            )
            await problems.send_and_close(request, timeout)
            return timeout
        detail = _about_request(err.detail)
        log.warning("%s %s: %s", printable(request.method), printable(request.path), detail)
        return problems.proxy_problem(err.problem, detail)
    if upstream.status < 200:
        # An interim answer as the final one: the proxy never asks for an upgrade (Upgrade
        # is hop-by-hop and not forwarded), so relaying it would hand the client a
        # connection in a protocol nobody agreed on.
        upstream.close()
        detail = f"the upstream answered {upstream.status} as its final answer"
        log.warning("%s %s: %s", printable(request.method), printable(request.path), detail)
        return problems.proxy_problem(problems.BAD_UPSTREAM_RESPONSE, detail)
    idle = settings.upstream.timeout_seconds
    complete = False
    watch = _fail_body_on_close(upstream)
    try:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(client_response_headers(upstream.headers))
        request.app[STATE].send_away(response)
        try:
            await response.prepare(request)
        except ConnectionError:
            return response  # the client went away before the answer's head could go out
        while True:
            try:
                chunk = await upstream.content.readany()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning(
                    "%s %s: upstream stream broke after %s bytes (%s); cutting the client off",
                    printable(request.method),
                    printable(request.path),
                    response.body_length,
                    exc.__class__.__name__,
                )
                if request.transport is not None:
                    request.transport.close()
                return response
            if not chunk:
                break
            try:
                async with asyncio.timeout(idle):
                    await response.write(chunk)
            except ConnectionError:
                return response  # the client went away
            except TimeoutError:
                log.warning(
                    "%s %s: the client read nothing for %s s; cutting it off",
                    printable(request.method),
                    printable(request.path),
                    idle,
                )
                if request.transport is not None:
                    request.transport.close()
                return response
        complete = True
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response
    finally:
        if watch is not None:
            watch.cancel()
        # A half-read answer must not go back to the pool.
        if complete:
            upstream.release()
        else:
            upstream.close()


def _fail_body_on_close(upstream: aiohttp.ClientResponse) -> asyncio.Task[None] | None:
    """For a chunked answer: when the upstream connection closes before the body ended,
    fail the body, so the client is cut off rather than kept waiting.

    aiohttp's client does not fail a chunked body whose framing breaks mid-way (its C
    parser hands the error to the connection, not to the body): without this, a read of
    the rest would wait forever on a connection that is already gone.
    """
    if "chunked" not in upstream.headers.get(hdrs.TRANSFER_ENCODING, "").lower():
        return None
    connection = upstream.connection
    protocol = connection.protocol if connection is not None else None
    if protocol is None:
        return None
    closed = protocol.closed

    async def watch() -> None:
        if closed is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(closed)
        if not upstream.content.is_eof():
            upstream.content.set_exception(
                aiohttp.ClientPayloadError("the upstream connection closed mid-answer")
            )

    return asyncio.get_running_loop().create_task(watch())


def add_routes(app: web.Application) -> None:
    # `[\s\S]`, not `.`: a percent-encoded line feed decodes into the path, and `.` stops there.
    app.router.add_route(hdrs.METH_ANY, r"/{tail:[\s\S]*}", handle_passthrough)
