"""The cached upstream request head of an event is byte for byte the one built each time."""

from __future__ import annotations

import tracemalloc

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from proxy.config import load_settings
from proxy.contract import TraceHeaders
from proxy.server.event_heads import EventHeads
from proxy.server.forward import UpstreamError
from proxy.server.headers import event_request_headers
from proxy.server.state import ProxyState, Snapshot
from proxy.server.upstream import request_bytes

HOST = b"upstream.example:8080"
TRACE = TraceHeaders(
    ((b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),),
    frozenset({b"traceparent", b"tracestate"}),
)
HEADS = [
    {"Host": "proxy:8080", "Content-Type": "application/json", "X-NoETL-Client": "w1"},
    {"Host": "proxy:8080", "Authorization": "Bearer t", "X-Forwarded-For": "10.0.0.1"},
    {"Connection": "keep-alive, X-Secret", "X-Secret": "s", "Traceparent": "00-old-01"},
    {"Host": "a", "Host ": "b", "Accept": "*/*", "Content-Length": "9"},
]


def _snapshot(url: str = "http://upstream.example:8080/noetl") -> Snapshot:
    return ProxyState(load_settings(None, {"upstream": {"url": url}})).snapshot


def _built(
    request: web.BaseRequest, snapshot: Snapshot, trace: TraceHeaders | None, body: bytes
) -> bytes:
    """What the head is without the cache: hygiene, then the request written out."""
    headers = event_request_headers(request, trace.replaces if trace else frozenset())
    if trace is not None:
        headers.extend(trace.headers)
    target = snapshot.upstream_target(request)
    return request_bytes(b"POST", target, HOST, headers, body)


@pytest.mark.parametrize("trace", [None, TRACE], ids=["untraced", "traced"])
@pytest.mark.parametrize("headers", HEADS)
def test_a_cached_head_is_the_built_one(
    headers: dict[str, str], trace: TraceHeaders | None
) -> None:
    heads, snapshot = EventHeads(), _snapshot()
    for body in (b'{"a":1}', b'{"event_id":"12345678901234567890"}'):  # first built, then cached
        request = make_mocked_request("POST", "/api/events?x=1", headers=headers)
        assert heads.request(request, snapshot, HOST, trace, body) == _built(
            request, snapshot, trace, body
        )


def test_what_the_head_is_built_from_is_what_it_is_cached_by() -> None:
    """Another path, another snapshot (base path) or another header value is another head."""
    heads, snapshot = EventHeads(), _snapshot()
    first = make_mocked_request("POST", "/api/events", headers=HEADS[0])
    assert b"POST /noetl/api/events " in heads.request(first, snapshot, HOST, None, b"{}")
    batch = make_mocked_request("POST", "/api/events/batch", headers=HEADS[0])
    assert b"POST /noetl/api/events/batch " in heads.request(batch, snapshot, HOST, None, b"{}")
    moved = _snapshot("http://upstream.example:8080/v2")
    assert b"POST /v2/api/events " in heads.request(first, moved, HOST, None, b"{}")
    other = make_mocked_request("POST", "/api/events", headers={**HEADS[0], "X-NoETL-Client": "w2"})
    assert b"\r\nX-NoETL-Client: w2\r\n" in heads.request(other, moved, HOST, None, b"{}")


def test_past_its_size_the_cache_starts_over_and_stays_exact() -> None:
    heads, snapshot = EventHeads(size=2), _snapshot()
    for round_ in range(3):
        for number in range(5):
            headers = {"X-Request-Id": f"{round_}-{number}"}
            request = make_mocked_request("POST", "/api/events", headers=headers)
            assert heads.request(request, snapshot, HOST, None, b"{}") == _built(
                request, snapshot, None, b"{}"
            )
            assert len(heads._heads) <= 2


def test_a_trace_header_the_wire_cannot_carry_is_never_sent() -> None:
    bad = TraceHeaders(((b"tracestate", b"a=b\r\nX-Injected: 1"),), frozenset({b"tracestate"}))
    request = make_mocked_request("POST", "/api/events", headers=HEADS[0])
    with pytest.raises(UpstreamError, match="cannot be sent"):
        EventHeads().request(request, _snapshot(), HOST, bad, b"{}")


def test_long_heads_are_built_and_not_kept() -> None:
    """A client may send about a megabyte of headers: such heads are exact, and not kept."""
    heads, snapshot = EventHeads(), _snapshot()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(10):
            headers = {f"X-Big-{n}": f"{number}-" + "v" * 8000 for n in range(10)}
            request = make_mocked_request("POST", "/api/events", headers=headers)
            assert heads.request(request, snapshot, HOST, None, b"{}") == _built(
                request, snapshot, None, b"{}"
            )
            del request, headers
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 600_000  # kept, ten heads and their keys would take 1.6 MB
