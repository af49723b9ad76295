"""Event requests handed from the HTTP server straight to their handler, ahead of the router.

The application's routing (router, match info, response-prepare signals) cost ~20 µs of
CPU a request on this path, a tenth of a forwarded event (bench/README.md), spent to find
one of two fixed routes. `serve_events_directly(runner)` puts a dispatcher in front of the
application of a set-up runner: `POST /api/events` and `POST /api/events/batch` go to their
handlers, wrapped in the application's middlewares and with the `Expect` handling the
application gives them; every other request goes to the application as before.

Each request gets the match info the router would have given it, made once per route (it
is frozen, so requests can share it): `request.app` and the route in spans and access lines
work as on any routed request. The routes stay registered on the application, so a server
without the dispatcher serves them the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import hdrs, web

from proxy.server.events import ENDPOINTS, EventEndpoint

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def serve_events_directly(runner: web.AppRunner) -> None:
    """Dispatch the event routes of `runner`'s application ahead of its router (after
    `runner.setup()`, before requests arrive)."""
    server = runner.server
    assert server is not None, "call after runner.setup()"
    app = runner.app
    application = server.request_handler
    routes: dict[str, tuple[_Handler, EventEndpoint, web.UrlMappingMatchInfo]] = {}
    for path, (endpoint, route) in app[ENDPOINTS].items():
        handler: _Handler = endpoint.handle
        for middleware in reversed(app.middlewares):
            handler = functools.partial(middleware, handler=handler)
        match_info = web.UrlMappingMatchInfo({}, route)
        match_info.add_app(app)
        match_info.freeze()
        routes[path] = (handler, endpoint, match_info)

    async def dispatch(base: web.BaseRequest) -> web.StreamResponse:
        request = cast(web.Request, base)  # the application's request factory made it
        found = routes.get(request.rel_url.path_safe) if request.method == "POST" else None
        if found is None:
            return await application(request)
        handler, endpoint, match_info = found
        # What the application's own handling sets first; aiohttp has no public setter.
        request._match_info = match_info
        if request.headers.get(hdrs.EXPECT):
            refused = await endpoint.expect(request)
            await request.writer.drain()
            if refused is not None:
                return refused
        return await handler(request)

    server.request_handler = dispatch
