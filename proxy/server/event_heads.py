"""The head of an event's upstream request, built once per distinct client request head.

What goes upstream before the body (request line, `Host`, the client's end-to-end headers,
`X-Forwarded-*`, `Content-Type`) depends only on the configuration snapshot, the upstream
connection's `Host`, the request target, the client's raw header bytes and address, and the
trace headers the caller replaces. Producers send the same head request after request, so
the head is built (header hygiene, `event_request_headers`) and checked for what the wire
cannot carry (`request_head`) once, and looked up after that. Heads hold client-chosen
bytes: at most `size` are kept, none longer than `_MAX_KEPT`, and when full the cache
starts over, so clients whose heads differ on every request (a request id header) pay a
lookup and no more.
"""

from __future__ import annotations

from aiohttp import web

from proxy.contract import TraceHeaders
from proxy.server.headers import event_request_headers
from proxy.server.state import Snapshot
from proxy.server.upstream import checked_lines, request_head, with_body

_Key = tuple[object, ...]
# A longer head (a client may send up to about a megabyte of headers) is built, not kept.
_MAX_KEPT = 8192


class EventHeads:
    """Upstream request heads by what they are built from (see the module docstring)."""

    __slots__ = ("_heads", "_size", "_snapshot")

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._heads: dict[_Key, bytes] = {}
        self._snapshot: Snapshot | None = None

    def request(
        self,
        request: web.BaseRequest,
        snapshot: Snapshot,
        host: bytes,
        trace: TraceHeaders | None,
        body: bytes,
    ) -> bytes:
        """The whole upstream request for `body`. Raises UpstreamError (never sent) for a
        header the wire cannot carry."""
        if snapshot is not self._snapshot:  # a reload or a new upstream version
            self._heads.clear()
            self._snapshot = snapshot
        replaced = trace.replaces if trace is not None else None
        key = (
            request.raw_path,
            request.raw_headers,
            request.remote,
            request.scheme,
            host,
            replaced,
        )
        head = self._heads.get(key)
        if head is None:
            headers = event_request_headers(request, replaced or frozenset())
            head = request_head(b"POST", snapshot.upstream_target(request), host, headers)
            if len(head) <= _MAX_KEPT:
                if len(self._heads) >= self._size:
                    self._heads.clear()
                self._heads[key] = head
        if trace is not None and trace.headers:
            lines = b"".join(b"%s: %s\r\n" % pair for pair in trace.headers)
            head += checked_lines(lines, len(trace.headers))
        return with_body(head, body)
