"""Raw-socket request framing and request targets: what is refused, how, and what reaches
the upstream (a scripted one, so every byte it got is known)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from tests.functional.server_support import ServerFactory, Stack, raw_exchange
from tests.hostile.wire import start_wire_stack
from tests.loopback import WireUpstream

EVENT = b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
OTHER = b"POST /api/execute HTTP/1.1\r\nHost: p\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

# (request, status line, problem code or None for aiohttp's own plain-text 400)
REFUSED = [
    pytest.param(
        EVENT + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 501 Not Implemented",
        "unsupported_transfer_coding",
        id="event-gzip-chunked",
    ),
    pytest.param(
        OTHER + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 501 Not Implemented",
        "unsupported_transfer_coding",
        id="passthrough-gzip-chunked",
    ),
    pytest.param(
        OTHER + b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 501 Not Implemented",
        "unsupported_transfer_coding",
        id="identity-chunked",
    ),
    pytest.param(
        b"GET /api/x HTTP/2.0\r\nHost: p\r\n\r\n",
        b"HTTP/1.1 505 HTTP Version Not Supported",
        "http_version_not_supported",
        id="http-2.0",
    ),
    pytest.param(
        b"POST /api/events HTTP/2.0\r\nHost: p\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 505 HTTP Version Not Supported",
        "http_version_not_supported",
        id="event-http-2.0",
    ),
    pytest.param(
        b"GET /api/x\r\n\r\n", b"HTTP/1.1 400 Bad Request", "bad_request_line", id="http-0.9"
    ),
    pytest.param(
        b"GET /api/x\r\nHost: p\r\n\r\n",
        b"HTTP/1.1 400 Bad Request",
        "bad_request_line",
        id="http-0.9-with-headers",
    ),
    pytest.param(OTHER + b"Transfer-Encoding: chunked, gzip\r\n\r\n", None, None, id="te-not-last"),
    pytest.param(OTHER + b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n", None, None, id="te-only"),
    pytest.param(
        OTHER + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        None,
        None,
        id="te-twice",
    ),
    pytest.param(
        OTHER + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        None,
        None,
        id="cl-and-te",
    ),
    pytest.param(
        EVENT + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        None,
        None,
        id="event-cl-and-te",
    ),
    pytest.param(
        OTHER + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", None, None, id="two-cl"
    ),
    pytest.param(OTHER + b"Content-Length: 5, 5\r\n\r\nabcde", None, None, id="cl-list"),
    pytest.param(OTHER + b"Content-Length: +5\r\n\r\nabcde", None, None, id="cl-signed"),
    pytest.param(OTHER + b"Content-Length: 0x5\r\n\r\nabcde", None, None, id="cl-hex"),
    pytest.param(
        OTHER + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        None,
        None,
        id="chunk-size-not-hex",
    ),
    pytest.param(
        EVENT + b"Transfer-Encoding: chunked\r\n\r\n-1\r\nab\r\n0\r\n\r\n",
        None,
        None,
        id="event-chunk-size-negative",
    ),
    pytest.param(
        OTHER + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 21 + b"\r\nab\r\n0\r\n\r\n",
        None,
        None,
        id="chunk-size-overflow",
    ),
    pytest.param(
        b"GET /api/x HTTP/1.1\r\nHost: p\r\nX-A: 1\r\n folded\r\n\r\n", None, None, id="obs-fold"
    ),
    pytest.param(b"GET /api/x HTTP/1.2\r\nHost: p\r\n\r\n", None, None, id="http-1.2"),
    pytest.param(b"GET /api/x http/1.1\r\nHost: p\r\n\r\n", None, None, id="lowercase-http"),
    pytest.param(b"GET /api/x HTTP/1.1\nHost: p\n\n", None, None, id="bare-lf"),
    pytest.param(b"GET /api/x HTTP/1.1\r\nHost: p\r\nHost: q\r\n\r\n", None, None, id="two-hosts"),
    pytest.param(
        b"GET /api/x HTTP/1.1\r\nHost: p\r\nX-A : 1\r\n\r\n", None, None, id="space-colon"
    ),
    pytest.param(b"GET /api/x HTTP/1.1\r\nHost: p\r\nX-A: a\x00b\r\n\r\n", None, None, id="nul"),
    pytest.param(b"GET /api/x HTTP/1.1\r\nHost: p\r\nX-A: \x7f\r\n\r\n", None, None, id="del"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None, None, id="h2-preface"),
]


async def _answer_ok(
    head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    writer.write(OK)
    await writer.drain()


@pytest.fixture
async def wire(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> AsyncIterator[tuple[WireUpstream, Stack]]:
    upstream = WireUpstream(_answer_ok)
    stack = await start_wire_stack(aiohttp_server, session, upstream)
    yield upstream, stack
    await upstream.close()


@pytest.mark.parametrize(("request_bytes", "status_line", "code"), REFUSED)
async def test_refused_framing_never_reaches_the_upstream(
    wire: tuple[WireUpstream, Stack],
    request_bytes: bytes,
    status_line: bytes | None,
    code: str | None,
) -> None:
    upstream, stack = wire
    answer = await raw_exchange(stack, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    if status_line is None:
        assert head.split(b"\r\n")[0].split(b" ", 1)[1].startswith(b"400 "), answer[:200]
    else:
        assert head.split(b"\r\n")[0] == status_line, answer[:200]
        assert orjson.loads(body)["code"] == code
        assert b"\r\nConnection: close" in head
    await asyncio.sleep(0.05)
    assert upstream.heads == []


# (request target, what the upstream's request line must be; None: not forwarded)
TARGETS = [
    pytest.param("http://evil.example/api/x?q=1", b"GET /api/x?q=1 HTTP/1.1", id="absolute-form"),
    pytest.param("//evil.example/x", b"GET //evil.example/x HTTP/1.1", id="network-path"),
    pytest.param("/api/../admin/./x", b"GET /api/../admin/./x HTTP/1.1", id="dot-segments"),
    pytest.param("/api/%2e%2e/admin", b"GET /api/%2e%2e/admin HTTP/1.1", id="encoded-dots"),
    pytest.param("/api/a%2Fb", b"GET /api/a%2Fb HTTP/1.1", id="encoded-slash"),
    pytest.param("/api/x%0D%0AHost:%20evil", b"GET /api/x%0D%0AHost:%20evil HTTP/1.1", id="crlf"),
]


@pytest.mark.parametrize(("target", "upstream_line"), TARGETS)
async def test_request_targets_reach_the_configured_upstream_as_sent(
    wire: tuple[WireUpstream, Stack], target: str, upstream_line: bytes
) -> None:
    """Whatever the target names, the request goes to the configured upstream only, with
    the path and query exactly as sent (no normalisation, no decoding, no SSRF)."""
    upstream, stack = wire
    answer = await raw_exchange(stack, f"GET {target} HTTP/1.1\r\nHost: p\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:200]
    assert len(upstream.heads) == 1
    request_line, *headers = upstream.heads[0].split(b"\r\n")
    assert request_line == upstream_line
    assert not any(b"evil" in header.lower() for header in headers)


@pytest.mark.parametrize(
    "request_line",
    [
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443",
        b"OPTIONS * HTTP/1.1\r\nHost: p",
    ],
)
async def test_connect_and_asterisk_form_are_not_forwarded(
    wire: tuple[WireUpstream, Stack], request_line: bytes
) -> None:
    upstream, stack = wire
    answer = await raw_exchange(stack, request_line + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
    await asyncio.sleep(0.05)
    assert upstream.heads == []


async def test_chunked_in_any_letter_case_is_accepted(
    wire: tuple[WireUpstream, Stack],
) -> None:
    upstream, stack = wire
    answer = await raw_exchange(
        stack,
        OTHER + b"Transfer-Encoding: ChUnKeD\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:200]
    assert len(upstream.heads) == 1


async def test_expect_100_continue_with_a_refused_coding_gets_no_100(
    wire: tuple[WireUpstream, Stack],
) -> None:
    """The refusal is decided before `100 Continue`: the client keeps its body."""
    upstream, stack = wire
    answer = await raw_exchange(
        stack, EVENT + b"Expect: 100-continue\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 501 "), answer[:200]
    assert b"100 Continue" not in answer
    assert upstream.heads == []
