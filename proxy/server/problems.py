"""Every problem the server answers, as `application/problem+json` (RFC 9457).

The codes the proxy itself answers with live here; engine refusals (`EnvelopeError`) bring
their own code, status and title. One function, `problem_body`, builds both kinds of body.
The codes are public: they appear in problem bodies, in `EventRecord.error_code` and in the
failure table of docs/shapes-and-errors.md.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from proxy.envelope import EnvelopeError
from proxy.server.hooks import PROBLEM_CODE

PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class ProxyProblem:
    """One failure the proxy answers itself (nothing, or nothing complete, reached upstream)."""

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


def overloaded(detail: str) -> web.Response:
    return proxy_problem(OVERLOADED, detail, headers={"Retry-After": OVERLOAD_RETRY_AFTER})
