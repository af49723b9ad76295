"""Every problem the server answers, as `application/problem+json` (RFC 9457).

The codes the proxy itself answers with are listed in `proxy.contract` (extensions count
them) and named here too; engine refusals (`EnvelopeError`) bring their own code, status and
title. One function, `problem_body`, builds both kinds of body. The codes are public: they
appear in problem bodies, in `EventRecord.error_code` and in the failure table of
docs/shapes-and-errors.md.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from aiohttp import web

from proxy.contract import (
    BAD_REQUEST_LINE,
    BAD_UPSTREAM_RESPONSE,
    BODY_TIMEOUT,
    BODY_TOO_LARGE,
    CLIENT_ABORTED,
    HTTP_VERSION_NOT_SUPPORTED,
    OVERLOADED,
    PROBLEM_CODE,
    UNSUPPORTED_MEDIA_TYPE,
    UNSUPPORTED_TRANSFER_CODING,
    UPSTREAM_DISCONNECTED,
    UPSTREAM_REQUEST_FAILED,
    UPSTREAM_TIMEOUT,
    UPSTREAM_UNAVAILABLE,
    ProxyProblem,
)
from proxy.envelope import EnvelopeError

__all__ = [
    "BAD_REQUEST_LINE",
    "BAD_UPSTREAM_RESPONSE",
    "BODY_TIMEOUT",
    "BODY_TOO_LARGE",
    "CLIENT_ABORTED",
    "HTTP_VERSION_NOT_SUPPORTED",
    "OVERLOADED",
    "OVERLOAD_RETRY_AFTER",
    "PROBLEM_CONTENT_TYPE",
    "UNSUPPORTED_MEDIA_TYPE",
    "UNSUPPORTED_TRANSFER_CODING",
    "UPSTREAM_DISCONNECTED",
    "UPSTREAM_REQUEST_FAILED",
    "UPSTREAM_TIMEOUT",
    "UPSTREAM_UNAVAILABLE",
    "ProxyProblem",
    "engine_problem",
    "problem_body",
    "problem_response",
    "proxy_problem",
    "send_and_close",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"


# Seconds a shed client is told to wait; short, because in-flight requests finish quickly.
OVERLOAD_RETRY_AFTER = "1"


def problem_body(
    problem: ProxyProblem, detail: str, *, field: str | None = None, index: int | None = None
) -> dict[str, Any]:
    """The RFC 9457 document, with the stable code (and where, when known) as extensions."""
    body: dict[str, Any] = {
        "type": f"urn:envelope-proxy:error:{problem.code}",
        "title": problem.title,
        "status": problem.status,
        "detail": detail,
        "code": problem.code,
    }
    if field is not None:
        body["field"] = field
    if index is not None:
        body["index"] = index
    return body


def problem_response(
    status: int,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    close: bool = False,
) -> web.Response:
    """A problem+json response; `close` ends the connection (an unread body is left on it)."""
    response = web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )
    response[PROBLEM_CODE] = str(body["code"])
    if close:
        response.force_close()
    return response


def proxy_problem(
    problem: ProxyProblem,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    close: bool = False,
) -> web.Response:
    """The proxy's own answer; an `overloaded` one tells the client when to retry."""
    if problem is OVERLOADED:
        headers = {**(headers or {}), "Retry-After": OVERLOAD_RETRY_AFTER}
    return problem_response(
        problem.status, problem_body(problem, detail), headers=headers, close=close
    )


async def send_and_close(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Send `response` now, then close the connection at once.

    For a client whose body stalled: aiohttp would otherwise keep the connection up to 10 s
    more, draining a body that is not coming.
    """
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        await response.write_eof()
    request.protocol.force_close()


def engine_problem(err: EnvelopeError, *, headers: dict[str, str] | None = None) -> web.Response:
    """The answer to a body the engine refused."""
    problem = ProxyProblem(err.code, err.http_status, err.title)
    body = problem_body(problem, err.message, field=err.field, index=err.index)
    return problem_response(problem.status, body, headers=headers)
