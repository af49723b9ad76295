"""Requests refused for their protocol version or transfer coding, before anything else.

The proxy speaks HTTP/1.0 and HTTP/1.1. A request line with another version (`HTTP/2.0`,
`HTTP/1.2`) is answered 505, one without a version (HTTP/0.9 style) 400, both with an
HTTP/1.1 status line. `Transfer-Encoding` may only be exactly `chunked`: any other coding
(`gzip, chunked`) would reach the upstream decoded of its chunking but still compressed, and
labelled as identity, so it is answered 501 (RFC 9112 section 6.1).
"""

from __future__ import annotations

from aiohttp import HttpVersion11, hdrs, web

from proxy.server import problems
from proxy.server.logsafe import printable

_SPOKEN = ((1, 0), (1, 1))


def refusal(request: web.BaseRequest) -> tuple[problems.ProxyProblem, str] | None:
    """Why the proxy will not handle this request at all, or None when it will."""
    version = request.version
    if version not in _SPOKEN:
        _answer_in_http11(request)
        if version < (1, 0):
            return problems.BAD_REQUEST_LINE, "the request line has no HTTP/1.x version"
        return (
            problems.HTTP_VERSION_NOT_SUPPORTED,
            f"HTTP/{version[0]}.{version[1]} is not supported; use HTTP/1.1",
        )
    if hdrs.TRANSFER_ENCODING in request.headers:
        codings = ",".join(request.headers.getall(hdrs.TRANSFER_ENCODING))
        tokens = [token.strip().lower() for token in codings.split(",") if token.strip()]
        if tokens != ["chunked"]:
            shown = printable(codings)[:100]
            return (
                problems.UNSUPPORTED_TRANSFER_CODING,
                f"Transfer-Encoding must be exactly chunked; got {shown}",
            )
    return None


def refuse(request: web.BaseRequest) -> web.Response | None:
    """The problem answer for a request `refusal` rejects (connection closed), else None."""
    found = refusal(request)
    if found is None:
        return None
    problem, detail = found
    return problems.proxy_problem(problem, detail, close=True)


def _answer_in_http11(request: web.BaseRequest) -> None:
    # aiohttp writes its status line in the request's version; a version the proxy does
    # not speak must not be echoed back as if it did. `version` is a cached property
    # (aiohttp's `reify`, kept in `_cache`); the hostile suite pins the status line.
    request._cache["version"] = HttpVersion11
