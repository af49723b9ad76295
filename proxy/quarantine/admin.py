"""Admin `GET /rejections`: the quarantined records, newest first, filtered and paged.

Query parameters: `client`, `code`, `since` / `until` (RFC 3339), `limit` (1..1000,
default 100), `cursor` (the previous page's `next`) and `body=1` (adds each record's
`body_b64`). The answer is `{"records": [...], "next": <cursor or null>}`. The files are
read in a thread: the store can be large, and the proxy keeps relaying meanwhile.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from aiohttp import web

from proxy.quarantine.records import Filter, parse_time
from proxy.quarantine.store import newest_first

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def _bad(detail: str) -> web.Response:
    return web.Response(
        status=400,
        body=orjson.dumps({"status": 400, "detail": detail}),
        content_type="application/json",
    )


def rejections_route(directory: Path | None) -> web.RouteDef:
    """The route; with the quarantine off (`directory` None) it answers 404 saying so."""

    async def rejections(request: web.Request) -> web.Response:
        if directory is None:
            return web.Response(
                status=404,
                body=orjson.dumps(
                    {"status": 404, "detail": "the quarantine is off (quarantine.enabled)"}
                ),
                content_type="application/json",
            )
        query = request.query
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
            since = parse_time(query["since"]) if "since" in query else None
            until = parse_time(query["until"]) if "until" in query else None
        except ValueError:
            return _bad("limit must be an integer; since and until RFC 3339 times")
        if not 1 <= limit <= MAX_LIMIT:
            return _bad(f"limit must be 1..{MAX_LIMIT}")
        flt = Filter(client=query.get("client"), code=query.get("code"), since=since, until=until)
        page = await asyncio.to_thread(
            newest_first,
            directory,
            flt,
            limit=limit,
            cursor=query.get("cursor") or None,
            bodies=query.get("body") in ("1", "true"),
        )
        return web.Response(
            body=orjson.dumps({"records": page.records, "next": page.next}),
            content_type="application/json",
        )

    return web.get("/rejections", rejections)
