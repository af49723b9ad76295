"""Ordinary control-plane routes, so that pass-through can be tested end to end.

None of these touch the event rules. They exercise what a reverse proxy must carry
untouched: exact ids in JSON, server-sent events flushed one by one, a JSON echo, every
request header and the raw query string (`/_emulator/echo`), and a gzip-encoded reply.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re

from aiohttp import web

_INTEGER = re.compile(r"-?[0-9]+")
_MAX_STREAM_EVENTS = 1000
_MAX_STREAM_INTERVAL = 10.0
GZIP_PAYLOAD = b'{"compressed":true,"event_id":478775660589088777,"note":"gzip from the emulator"}'


def _exact_id(text: str) -> int | str:
    """A path id as a JSON number when it is an integer (kept exact), else as a string."""
    return int(text) if _INTEGER.fullmatch(text) and len(text) <= 40 else text


def _json(content: object, status: int = 200) -> web.Response:
    body = json.dumps(content, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, content_type="application/json")


async def execution_status(request: web.Request) -> web.Response:
    """`GET /api/executions/{id}/status`: a small status document carrying the id exactly."""
    execution_id = request.match_info["execution_id"]
    return _json({"execution_id": _exact_id(execution_id), "status": "RUNNING", "steps": []})


async def execution_stream(request: web.Request) -> web.StreamResponse:
    """`GET /api/executions/{id}/stream?count=N&interval=S`: SSE, each event flushed alone."""
    try:
        count = int(request.query.get("count", "3"))
        interval = float(request.query.get("interval", "0.1"))
    except ValueError:
        return _json({"detail": "count must be an integer and interval a number"}, 400)
    if not (0 <= count <= _MAX_STREAM_EVENTS and 0 <= interval <= _MAX_STREAM_INTERVAL):
        return _json({"detail": f"count <= {_MAX_STREAM_EVENTS}, interval <= 10"}, 400)
    execution_id = _exact_id(request.match_info["execution_id"])
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    for seq in range(count):
        data = json.dumps({"execution_id": execution_id, "seq": seq}, separators=(",", ":"))
        await response.write(f"id: {seq}\nevent: progress\ndata: {data}\n\n".encode())
        if seq + 1 < count:
            await asyncio.sleep(interval)
    await response.write(b"event: end\ndata: {}\n\n")
    await response.write_eof()
    return response


async def execute(request: web.Request) -> web.Response:
    """`POST /api/execute`: the request body back, byte for byte, as JSON."""
    body = await request.read()
    return web.Response(status=200, body=body, content_type="application/json")


async def echo(request: web.Request) -> web.Response:
    """`ANY /_emulator/echo[/...]`: what arrived, as JSON (headers in order, body base64)."""
    body = await request.read()
    raw_path = request.raw_path
    path, _, query = raw_path.partition("?")
    headers = [
        [name.decode("latin-1"), value.decode("latin-1")] for name, value in request.raw_headers
    ]
    return _json(
        {
            "method": request.method,
            "path": path,
            "query_string": query,
            "headers": headers,
            "body_b64": base64.b64encode(body).decode("ascii"),
        }
    )


async def gzip_reply(request: web.Request) -> web.Response:
    """`GET /_emulator/gzip`: a gzip-encoded JSON body with `Content-Encoding: gzip`."""
    return web.Response(
        status=200,
        body=gzip.compress(GZIP_PAYLOAD, mtime=0),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/executions/{execution_id}/status", execution_status)
    app.router.add_get("/api/executions/{execution_id}/stream", execution_stream)
    app.router.add_post("/api/execute", execute)
    app.router.add_route("*", "/_emulator/echo", echo)
    app.router.add_route("*", "/_emulator/echo/{tail:.*}", echo)
    app.router.add_get("/_emulator/gzip", gzip_reply)
