"""Header hygiene between client and upstream, in both directions.

Hop-by-hop headers (RFC 9110 §7.6.1) and every header a `Connection` header names belong to
one connection and never cross the proxy; aiohttp's client would forward them verbatim.
End-to-end headers (`Authorization`, `Cookie`, `Accept-Encoding`, tracing headers...) pass
unchanged. The request gets `X-Forwarded-For` (appended), `-Proto` and `-Host`; `Host` is
left to the client library, which sets the upstream's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiohttp import hdrs
from aiohttp.web import BaseRequest
from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP: frozenset[str] = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "trailer",
        "trailers",
    }
)

# Set by the proxy on every forwarded request, never copied from the client.
_REQUEST_OWN: frozenset[str] = frozenset(
    {"host", "expect", "x-forwarded-proto", "x-forwarded-host"}
)

# aiohttp's client adds these when absent; the proxy adds nothing the client did not send.
SKIP_AUTO_HEADERS: frozenset[str] = frozenset(
    {hdrs.USER_AGENT, hdrs.ACCEPT_ENCODING, hdrs.ACCEPT, hdrs.CONTENT_TYPE}
)


def connection_tokens(headers: Mapping[str, str] | CIMultiDictProxy[str]) -> set[str]:
    """Lower-case header names listed in every `Connection` header."""
    getall = getattr(headers, "getall", None)
    values: Iterable[str] = getall(hdrs.CONNECTION, ()) if getall else ()
    return {
        token.strip().lower() for value in values for token in value.split(",") if token.strip()
    }


def _end_to_end(headers: CIMultiDictProxy[str], extra_drop: frozenset[str]) -> CIMultiDict[str]:
    drop = HOP_BY_HOP | extra_drop | connection_tokens(headers)
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in drop:
            kept.add(name, value)
    return kept


def upstream_request_headers(
    request: BaseRequest, *, keep_content_length: bool
) -> CIMultiDict[str]:
    """Headers to send upstream for `request`.

    `keep_content_length` is for streamed pass-through bodies; a rewritten event body gets a
    fresh length from the client library (a stale inbound length would desync the upstream).
    """
    drop = _REQUEST_OWN if keep_content_length else _REQUEST_OWN | {"content-length"}
    headers = _end_to_end(request.headers, drop)
    peer = request.remote or ""
    forwarded_for = headers.getall(hdrs.X_FORWARDED_FOR, ())
    if forwarded_for:
        del headers[hdrs.X_FORWARDED_FOR]
        headers[hdrs.X_FORWARDED_FOR] = ", ".join([*forwarded_for, peer])
    else:
        headers[hdrs.X_FORWARDED_FOR] = peer
    headers[hdrs.X_FORWARDED_PROTO] = request.scheme
    host = request.headers.get(hdrs.HOST)
    if host:
        headers[hdrs.X_FORWARDED_HOST] = host
    return headers


def client_response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones, for the client."""
    return _end_to_end(upstream, frozenset())


# What an event request to the upstream never carries from the client: hop-by-hop headers,
# what the proxy sets itself, and the body's old framing and type (the body is rewritten).
_EVENT_DROP: frozenset[bytes] = frozenset(
    name.encode()
    for name in HOP_BY_HOP | _REQUEST_OWN | {"content-length", "content-type", "x-forwarded-for"}
)


def event_request_headers(
    request: BaseRequest, replaced: frozenset[bytes] = frozenset()
) -> list[tuple[bytes, bytes]]:
    """Headers to send upstream with a rewritten event body, as raw bytes in arrival order.

    The same rules as `upstream_request_headers`, on the bytes the client sent (so values
    are never decoded and re-encoded), plus `Content-Type: application/json`. `replaced`
    names (lower case) headers the caller sets itself, such as the trace context.
    """
    raw = request.raw_headers
    tokens: set[bytes] = set()
    for name, value in raw:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    kept: list[tuple[bytes, bytes]] = []
    forwarded_for: list[bytes] = []
    host: bytes | None = None
    for name, value in raw:
        lower = name.lower()
        if lower in _EVENT_DROP or lower in tokens or lower in replaced:
            if lower == b"x-forwarded-for" and lower not in tokens:
                forwarded_for.append(value)
            elif lower == b"host" and host is None:
                host = value
            continue
        kept.append((name, value))
    forwarded_for.append((request.remote or "").encode())
    kept.append((b"Content-Type", b"application/json"))
    kept.append((b"X-Forwarded-For", b", ".join(forwarded_for)))
    kept.append((b"X-Forwarded-Proto", request.scheme.encode()))
    if host:
        kept.append((b"X-Forwarded-Host", host))
    return kept
