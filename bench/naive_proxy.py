"""The floor for any aiohttp proxy: read the body, forward it, return the answer.

Default aiohttp settings throughout (one `ClientSession`, default connector, `run_app`),
no rewriting, no checks. `python -m bench.naive_proxy --port 8090 --upstream URL`;
`--uvloop` runs it on uvloop's event loop instead of asyncio's default one.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)


def create_app(upstream: str) -> web.Application:
    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession()
        yield
        await app[SESSION].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        url = upstream + request.path_qs
        async with app[SESSION].request(request.method, url, data=body, headers=headers) as up:
            answer = await up.read()
            content_type = up.headers.get("Content-Type", "application/octet-stream")
        return web.Response(status=up.status, body=answer, headers={"Content-Type": content_type})

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8082")
    parser.add_argument("--uvloop", action="store_true", help="use uvloop's event loop")
    args = parser.parse_args()
    loop = None
    if args.uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(create_app(args.upstream.rstrip("/")), host="127.0.0.1", port=args.port, loop=loop)


if __name__ == "__main__":
    main()
