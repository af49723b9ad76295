"""The ceiling for `serve`'s design: the same aiohttp server and upstream pool, no work.

An aiohttp web.Application on uvloop whose one handler reads the body, sends it over the
proxy's own `UpstreamPool` (proxy/server/upstream.py) and relays the answer: no detection,
conversion, header hygiene, budgets, metrics or ledger. `serve`'s figures next to these say
what its features cost on top of the transport it is built on.
`python -m bench.pooled_proxy --port 8091 --upstream URL`.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import uvloop
from aiohttp import web

from proxy.server.upstream import UpstreamPool, request_bytes

POOL = web.AppKey("pool", UpstreamPool)
TIMEOUT = 10.0


def create_app(upstream: str) -> web.Application:
    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        app[POOL] = UpstreamPool(upstream, 100)
        yield
        app[POOL].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        pool = request.app[POOL]
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

    app = web.Application()
    app.cleanup_ctx.append(pool_ctx)
    app.router.add_post("/api/events", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="origin, e.g. http://127.0.0.1:8082")
    args = parser.parse_args()
    web.run_app(
        create_app(args.upstream.rstrip("/")),
        host="127.0.0.1",
        port=args.port,
        loop=uvloop.new_event_loop(),
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
