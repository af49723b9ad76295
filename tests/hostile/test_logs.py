"""What the proxy logs about hostile requests: one line each, no credential, no control byte."""

from __future__ import annotations

import aiohttp
import pytest

from tests.functional.server_support import ServerFactory, raw_exchange, start_stack
from tests.hostile.conftest import Captured

SECRET = "s3cr3t-token-Zq9"

MALFORMED = [
    pytest.param(
        f"GET /api/health HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {SECRET}\x01x\r\n\r\n",
        id="control-byte-in-authorization",
    ),
    pytest.param(
        f"GET /api/health HTTP/1.1\r\nHost: p\r\nX-Api-Key: {SECRET}{'a' * 9000}\r\n\r\n",
        id="oversized-header-line",
    ),
    pytest.param(
        f"GET /api/health?token={SECRET}\x01 HTTP/1.1\r\nHost: p\r\n\r\n",
        id="control-byte-in-query",
    ),
    pytest.param(
        f"GET /api/health?token={SECRET}{'b' * 9000} HTTP/1.1\r\nHost: p\r\n\r\n",
        id="oversized-request-line",
    ),
    pytest.param(
        f"GET /api/health HTTP/1.1\r\nHost: p\r\nX-A: 1\r\n  {SECRET}\r\n\r\n",
        id="obs-fold",
    ),
    pytest.param(
        f"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\n"
        f"Transfer-Encoding: chunked\r\nCookie: {SECRET}\r\n\r\n{{}}",
        id="content-length-and-chunked",
    ),
]


@pytest.mark.parametrize("request_text", MALFORMED)
async def test_a_malformed_request_costs_one_line_quoting_nothing_it_sent(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    all_logs: Captured,
    request_text: str,
) -> None:
    stack = await start_stack(aiohttp_server, session)
    all_logs.records.clear()
    response = await raw_exchange(stack, request_text.encode("latin-1"))
    assert response.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), response[:200]
    text = all_logs.text()
    assert SECRET not in text
    assert "\x01" not in text
    lines = all_logs.lines("aiohttp.server")
    assert len(lines) == 1, lines
    assert lines[0].startswith("INFO aiohttp.server: refused a malformed request from "), lines
    assert "127.0.0.1" in lines[0]
    assert " 400 " in lines[0]
