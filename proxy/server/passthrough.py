"""Every request that is not an event: proxied untouched, streamed both ways.

Method, path and query go upstream as received; the body is streamed (with the client's
`Content-Length` when it gave one, else chunked), and so is the answer, chunk by chunk as it
arrives, so a server-sent-events stream reaches the client event by event. Bytes are never
decoded or re-encoded (the upstream session does not decompress), only hop-by-hop headers
are dropped. A failure before the answer starts is a problem+json 502/504; after it started,
the client connection is cut so the truncation is visible.
"""

from __future__ import annotations

import contextlib
import logging

import aiohttp
from aiohttp import hdrs, web

from proxy.server import problems
from proxy.server.forward import UpstreamError, classify, never_sent
from proxy.server.headers import (
    client_response_headers,
    upstream_request_headers,
)
from proxy.server.keys import STATE, STREAM_SESSION

log = logging.getLogger("envelope_proxy.server")


async def _open(request: web.Request) -> aiohttp.ClientResponse:
    snapshot = request.app[STATE].snapshot
    session = request.app[STREAM_SESSION]
    url = snapshot.upstream_url(request)
    headers = upstream_request_headers(request, keep_content_length=True)
    has_body = request.body_exists
    retried = False
    while True:
        try:
            return await session.request(
                request.method,
                url,
                headers=headers,
                data=request.content if has_body else None,
                timeout=snapshot.stream_timeouts,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            # A streamed body cannot be replayed once read; only a bodiless request can.
            if not retried and not has_body and never_sent(exc):
                retried = True
                continue
            raise classify(exc, snapshot.stream_timeouts) from exc


async def handle_passthrough(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    limit = state.snapshot.settings.limits.max_inflight
    if state.inflight >= limit:
        return problems.overloaded(f"more than {limit} requests in flight; retry shortly")
    state.inflight += 1
    try:
        return await _relay(request)
    finally:
        state.inflight -= 1


async def _relay(request: web.Request) -> web.StreamResponse:
    try:
        upstream = await _open(request)
    except UpstreamError as err:
        log.warning("%s %s: %s", request.method, request.path, err.detail)
        return problems.proxy_problem(err.problem, err.detail)
    complete = False
    try:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(client_response_headers(upstream.headers))
        await response.prepare(request)
        while True:
            try:
                chunk = await upstream.content.readany()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning(
                    "%s %s: upstream stream broke after %s bytes (%s); cutting the client off",
                    request.method,
                    request.path,
                    response.body_length,
                    exc.__class__.__name__,
                )
                if request.transport is not None:
                    request.transport.close()
                return response
            if not chunk:
                break
            try:
                await response.write(chunk)
            except ConnectionError:
                return response  # the client went away
        complete = True
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response
    finally:
        # A half-read answer must not go back to the pool.
        if complete:
            upstream.release()
        else:
            upstream.close()


def add_routes(app: web.Application) -> None:
    app.router.add_route(hdrs.METH_ANY, "/{tail:.*}", handle_passthrough)
