"""What an upstream exchange ends with: the answer, or an error.

Every failure is classified by whether the upstream could have seen the request. Only a
request that provably never left the proxy (the connection could not be opened, or a pooled
connection was already closing when the first byte was to be written) is retried, once:
`POST /api/events` is not idempotent (the upstream mints ids), so a request that may have
been written is never sent twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from proxy.server.problems import (
    BAD_UPSTREAM_RESPONSE,
    UPSTREAM_DISCONNECTED,
    UPSTREAM_REQUEST_FAILED,
    UPSTREAM_TIMEOUT,
    UPSTREAM_UNAVAILABLE,
    ProxyProblem,
)

_CLOSING_TRANSPORT = "Cannot write to closing transport"


class UpstreamError(Exception):
    """The upstream gave no usable answer; `problem` says how to tell the client."""

    def __init__(self, problem: ProxyProblem, detail: str):
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Answer:
    """The upstream's answer to an event, as the client will get it."""

    status: int
    body: bytes
    content_type: str | None
    content_encoding: str | None
    retry_after: str | None
    seconds: float


def never_sent(exc: BaseException) -> bool:
    """True when the request cannot have reached the upstream, so one retry is safe."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return False  # deterministic: a retry would fail the same way
    if isinstance(exc, aiohttp.ClientConnectorError):
        return True  # refused, unreachable, DNS: no connection was ever open
    # A pooled connection the upstream had already closed: aiohttp refuses the first
    # write (headers and a bytes body go out in that one write), so no byte left.
    cause = exc.__cause__
    return (
        isinstance(exc, aiohttp.ClientOSError)
        and isinstance(cause, aiohttp.ClientConnectionResetError)
        and str(cause) == _CLOSING_TRANSPORT
    )


def classify(exc: BaseException, timeouts: aiohttp.ClientTimeout) -> UpstreamError:
    """The client-facing failure for an exception raised while talking to the upstream."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        pool_wait = (
            f", or no free pooled one within {timeouts.connect} s" if timeouts.connect else ""
        )
        return UpstreamError(
            UPSTREAM_UNAVAILABLE,
            f"no connection to the upstream within {timeouts.sock_connect} s{pool_wait}",
        )
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamError(
            UPSTREAM_TIMEOUT,
            f"the upstream did not answer within {timeouts.total or timeouts.sock_read} s; "
            "the event may or may not have been stored",
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError(UPSTREAM_UNAVAILABLE, f"cannot connect to the upstream: {exc}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamError(BAD_UPSTREAM_RESPONSE, f"the upstream's answer is malformed: {exc}")
    if isinstance(exc, ValueError):
        # Not a network failure: the client library refused to build or send the request
        # (aiohttp raises ValueError for values it will not put on the wire). The type only:
        # the message may quote a header value.
        return UpstreamError(
            UPSTREAM_REQUEST_FAILED,
            f"the request to the upstream failed ({exc.__class__.__name__}); "
            "the event may or may not have been stored",
        )
    if isinstance(exc, aiohttp.ClientError | OSError):
        return UpstreamError(
            UPSTREAM_DISCONNECTED,
            f"the connection to the upstream broke ({exc.__class__.__name__}); "
            "the event may or may not have been stored",
        )
    raise exc
