"""The emulator's ordinary routes, used to test pass-through: SSE, echo, gzip, 404/405."""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from proxy.emulator import create_emulator_app
from proxy.emulator.routes import GZIP_PAYLOAD

Client = TestClient[Any, Any]
ClientFactory = Callable[[TestServer], Awaitable[Client]]
ServerFactory = Callable[..., Awaitable[TestServer]]
BIG_ID = 478775660589088776


@pytest.fixture
async def client(aiohttp_server: ServerFactory, aiohttp_client: ClientFactory) -> Client:
    return await aiohttp_client(await aiohttp_server(create_emulator_app("rust-2.19.1")))


async def test_sse_events_arrive_one_by_one(client: Client) -> None:
    """Each server-sent event is flushed when produced: the first arrives long before the end."""
    began = time.monotonic()
    response = await client.get(f"/api/executions/{BIG_ID}/stream?count=3&interval=0.4")
    assert response.headers["Content-Type"] == "text/event-stream"
    first = await response.content.readuntil(b"\n\n")
    first_at = time.monotonic() - began
    rest = await response.read()
    ended_at = time.monotonic() - began
    assert first.startswith(b"id: 0\nevent: progress\n")
    assert ended_at - first_at >= 0.7  # two more intervals of 0.4 s came after it
    events = (first + rest).decode().strip().split("\n\n")
    assert len(events) == 4
    assert events[-1] == "event: end\ndata: {}"
    data = json.loads(events[2].split("data: ", 1)[1])
    assert data == {"execution_id": BIG_ID, "seq": 2}


async def test_status_keeps_the_id_exact(client: Client) -> None:
    """A big integer id in the path comes back as the same JSON number, every digit kept."""
    response = await client.get(f"/api/executions/{BIG_ID}/status")
    raw = await response.read()
    assert f'"execution_id":{BIG_ID}'.encode() in raw
    assert json.loads(raw)["execution_id"] == BIG_ID


async def test_execute_echoes_bytes(client: Client) -> None:
    """`POST /api/execute` answers with exactly the bytes it received."""
    body = b'{"path":"demo/hello", "payload": {"n": 1.0e2, "id": 478775660589088776}}'
    response = await client.post("/api/execute", data=body)
    assert response.headers["Content-Type"] == "application/json"
    assert await response.read() == body


async def test_echo_reports_what_arrived(client: Client) -> None:
    """The echo route shows method, raw path and query, headers in order, and the body."""
    response = await client.request(
        "PATCH",
        "/_emulator/echo/a%2Fb/c?x=1&y=%20z&x=2",
        data=b"\x00\x01raw",
        headers=[
            ("X-Trace", "one"),
            ("X-Trace", "two"),
            ("Content-Type", "application/octet-stream"),
        ],
    )
    echo = await response.json()
    assert echo["method"] == "PATCH"
    assert echo["path"] == "/_emulator/echo/a%2Fb/c"
    assert echo["query_string"] == "x=1&y=%20z&x=2"
    traces = [value for name, value in echo["headers"] if name.lower() == "x-trace"]
    assert traces == ["one", "two"]
    assert base64.b64decode(echo["body_b64"]) == b"\x00\x01raw"


async def test_gzip_reply(client: Client) -> None:
    """The gzip route sends compressed bytes labelled `Content-Encoding: gzip`."""
    response = await client.get("/_emulator/gzip", auto_decompress=False)
    raw = await response.read()
    assert response.headers["Content-Encoding"] == "gzip"
    assert int(response.headers["Content-Length"]) == len(raw)
    assert gzip.decompress(raw) == GZIP_PAYLOAD


async def test_unknown_routes_look_like_the_server(
    aiohttp_server: ServerFactory, aiohttp_client: ClientFactory
) -> None:
    """axum answers 404/405 with empty bodies; FastAPI with `{"detail": ...}`."""
    rust = await aiohttp_client(await aiohttp_server(create_emulator_app("rust-2.9.0")))
    missing = await rust.get("/api/nothing")
    assert (missing.status, await missing.read()) == (404, b"")
    wrong_method = await rust.get("/api/events")
    assert (wrong_method.status, await wrong_method.read()) == (405, b"")
    assert wrong_method.headers["Allow"] == "POST"
    python = await aiohttp_client(await aiohttp_server(create_emulator_app("python")))
    missing = await python.get("/api/nothing")
    assert (missing.status, await missing.json()) == (404, {"detail": "Not Found"})
    wrong_method = await python.get("/api/events")
    assert (wrong_method.status, await wrong_method.json()) == (
        405,
        {"detail": "Method Not Allowed"},
    )


async def test_stream_arguments_are_bounded(client: Client) -> None:
    """The stream refuses unbounded counts or intervals instead of running forever."""
    for query in ("count=100000", "interval=60", "count=x"):
        response = await client.get(f"/api/executions/1/stream?{query}")
        assert response.status == 400
    with pytest.raises(aiohttp.ClientResponseError):
        (await client.get("/api/executions/1/stream?count=-1")).raise_for_status()
