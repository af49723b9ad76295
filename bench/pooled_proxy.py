"""The ceiling for `serve`'s design: the same aiohttp server and upstream pool, no work.

aiohttp's HTTP server on uvloop whose one handler (handed every request straight from the
server, as `serve` hands it its event requests ahead of the router) reads the body, sends it
over the proxy's own `UpstreamPool` (proxy/server/upstream.py) and relays the answer: no
detection, conversion, header hygiene, budgets, metrics or ledger. `serve`'s figures next
to these say what its features cost on top of the transport it is built on.
`python -m bench.pooled_proxy --port 8091 --upstream URL`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import uvloop
from aiohttp import web

from proxy.server.upstream import UpstreamPool, request_bytes

POOL = web.AppKey("pool", UpstreamPool)
Handler = Callable[[web.Request], Awaitable[web.Response]]
TIMEOUT = 10.0


def create_app(upstream: str) -> tuple[web.Application, Handler]:
    app = web.Application()

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        app[POOL] = UpstreamPool(upstream, 100)
        yield
        app[POOL].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        pool = app[POOL]
        wire = request_bytes(
            b"POST",
            request.raw_path.encode(),
            pool.host_header,
            [(b"Content-Type", b"application/json")],
            body,
        )
        answer = await pool.send(wire, within=TIMEOUT, connect_timeout=2.0)
        return web.Response(
            status=answer.status,
            body=answer.body,
            headers={"Content-Type": answer.content_type or "application/octet-stream"},
        )

    app.cleanup_ctx.append(pool_ctx)
    app.router.add_post("/api/events", forward)
    return app, forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="origin, e.g. http://127.0.0.1:8082")
    args = parser.parse_args()
    uvloop.run(_serve(*create_app(args.upstream.rstrip("/")), args.port))


async def _serve(app: web.Application, forward: Handler, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert runner.server is not None

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        return await forward(cast(web.Request, request))

    runner.server.request_handler = dispatch
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    main()
