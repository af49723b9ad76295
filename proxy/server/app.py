"""The proxy application factory: routes, extensions, the upstream session and background tasks.

`create_app(settings, extensions=...)` makes it; `proxy.compose` puts it together with its
extensions and the admin app for `serve`, the demo and the tests. Its start-up opens one
shared upstream `ClientSession` (connection pool sized by `upstream.pool_size`, no
decompression, no cookie jar: a proxy must not mix one client's cookies into another's
requests), probes the upstream version once before the first request, then keeps probing
and watching the configuration in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from proxy.config import Settings
from proxy.contract import Extension
from proxy.envelope.ids import SnowflakeMinter
from proxy.server import events, passthrough, problems
from proxy.server.access_log import AccessNotes, access_log_kwargs
from proxy.server.budget import PeerLoad
from proxy.server.forward import UpstreamError
from proxy.server.headers import SKIP_AUTO_HEADERS
from proxy.server.keys import PEERS, POOLS, STATE, STREAM_SESSION, STREAMS, UPSTREAM_STATS
from proxy.server.logsafe import ServerLog
from proxy.server.reload import ConfigReloader
from proxy.server.state import ProxyState
from proxy.server.upstream import UpstreamPools, UpstreamStats
from proxy.server.version import VersionProbe

log = logging.getLogger(__name__)

RELOADER = web.AppKey("envelope_proxy_reloader", ConfigReloader)
PROBE = web.AppKey("envelope_proxy_probe", VersionProbe)


def server_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for the aiohttp runner serving the proxy app (serve and tests alike).

    Request bodies are not decompressed, so pass-through bodies reach the upstream as sent.
    An idle keep-alive connection is closed after `limits.keepalive_timeout_seconds`
    (aiohttp's own default, 75 s, lets idle clients hold sockets and memory for long).
    Handlers are not cancelled when their client leaves (aiohttp's default, which its test
    server changes): an event exchange runs to its end and its outcome is recorded.
    With `log.access` the runner writes one access line per request (`access_log`).
    A request the server cannot parse is logged as one line quoting none of its bytes.
    """
    return {
        "auto_decompress": False,
        "keepalive_timeout": settings.limits.keepalive_timeout_seconds,
        **access_log_kwargs(settings.log.access),  # none unless `log.access` is on
        "logger": ServerLog(),
    }


def _cut_off(state: ProxyState, pools: UpstreamPools, streams: set[asyncio.Task[Any]]) -> None:
    """The shutdown budget is nearly spent: exchanges still waiting for the upstream give up
    (504), events still waiting for a connection are not sent (503), and pass-through streams
    still open are cut (an SSE stream may never end by itself)."""
    state.cut_off = True
    pools.cut_off(
        UpstreamError(
            problems.UPSTREAM_TIMEOUT,
            "the proxy is shutting down and the upstream has not answered yet; "
            "the event may or may not have been stored",
        )
    )
    if streams:
        log.warning("shutdown: cutting %d pass-through request(s) still open", len(streams))
    for stream in list(streams):
        stream.cancel()


async def _mark_shutdown(app: web.Application) -> None:
    """Runs when the listener has closed: in-flight requests now have the shutdown budget."""
    state = app[STATE]
    timeout = state.snapshot.settings.lifecycle.shutdown_timeout_seconds
    loop = asyncio.get_running_loop()
    state.shutdown_deadline = loop.time() + timeout
    # Answer (504) slightly before the server cancels the handlers at the deadline. One
    # timer for all exchanges, so a request pays for no deadline of its own.
    state.shutdown_cutoff = state.shutdown_deadline - min(0.5, timeout / 10)
    loop.call_at(state.shutdown_cutoff, _cut_off, state, app[POOLS], app[STREAMS])


async def _upstream(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    settings = state.snapshot.settings
    pool = settings.upstream.pool_size
    trace_configs = [tc for ext in state.extensions for tc in ext.client_trace_configs()]

    def client_session(timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool, limit_per_host=pool),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            # On the session rather than per call: aiohttp rebuilds a per-call set each time.
            skip_auto_headers=SKIP_AUTO_HEADERS,
            trace_configs=trace_configs or None,
            timeout=timeout,
        )

    app[POOLS] = pools = UpstreamPools(pool, app[UPSTREAM_STATS])
    app[STREAM_SESSION] = stream_session = client_session(state.snapshot.stream_timeouts)
    probe = VersionProbe(state)
    app[PROBE] = probe
    reloader = ConfigReloader(state, on_applied=probe.wake)
    app[RELOADER] = reloader
    await probe.probe_once()
    background = [asyncio.create_task(probe.run(), name="envelope-proxy version probe")]
    if state.load is not None:
        background.append(asyncio.create_task(reloader.watch(), name="envelope-proxy reload"))
    try:
        yield
    finally:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        pools.close()
        await stream_session.close()
        await probe.close()
        for ext in state.extensions:
            await ext.close()


def create_app(
    settings: Settings,
    *,
    extensions: Sequence[Extension] = (),
    config_file: Path | None = None,
    reload_from: Callable[[], Settings] | None = None,
    minter: SnowflakeMinter | None = None,
) -> web.Application:
    """The proxy application.

    `reload_from` re-reads the configuration (file, env, flags); when given, the config
    file's directory and the rules directory are watched and changes applied live.
    `minter` mints this process's event ids (default: one for `envelope.machine_id`).
    """
    if settings.log.access:
        extensions = [*extensions, AccessNotes()]
    state = ProxyState(
        settings, extensions=extensions, config_file=config_file, load=reload_from, minter=minter
    )
    app = web.Application(
        middlewares=state.middlewares, client_max_size=settings.limits.max_body_bytes
    )
    app[STATE] = state
    app[UPSTREAM_STATS] = UpstreamStats()
    app[STREAMS] = set()
    app[PEERS] = PeerLoad()
    events.add_routes(app)
    passthrough.add_routes(app)
    app.cleanup_ctx.append(_upstream)
    app.on_shutdown.append(_mark_shutdown)
    return app
