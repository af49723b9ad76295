"""The admin listener: liveness, readiness, effective configuration, and extension routes.

- `GET /healthz`: 200 while the process runs.
- `GET /readyz`: 200 when the configuration is valid (always: an invalid one is never
  applied) and the upstream's health endpoint answered at least once or the version is
  pinned; 503 before that and from the moment shutdown starts. The JSON body tells the
  target, upstream version, rules digest and last reload.
- `GET /config`: the effective configuration, credentials redacted.
- whatever the extensions add (`/metrics`, `/clients`, `/rejections`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from proxy.config import redacted
from proxy.contract import Extension
from proxy.server.keys import STATE
from proxy.server.state import ProxyState

ADMIN_STATE = web.AppKey("envelope_proxy_admin_state", ProxyState)


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


def readiness(state: ProxyState) -> tuple[bool, dict[str, Any]]:
    """(ready, body) for `/readyz`."""
    snapshot = state.snapshot
    if state.draining:
        status = "draining"
    elif not state.ready():
        status = "waiting_for_upstream"
    else:
        status = "ready"
    last = state.last_reload
    body: dict[str, Any] = {
        "status": status,
        "target": snapshot.target,
        "upstream_version": snapshot.upstream_version,
        "version_mode": snapshot.settings.upstream.version,
        "upstream_reached": state.upstream_reached,
        "rules_digest": snapshot.rules.digest,
        "config_generation": snapshot.generation,
        "inflight": state.inflight,
        "inflight_bytes": state.inflight_bytes,
        "last_reload": None
        if last is None
        else {
            "ok": last.ok,
            "at": last.at,
            "problems": list(last.problems),
            "restart_needed": list(last.restart_needed),
        },
    }
    return status == "ready", body


async def readyz(request: web.Request) -> web.Response:
    ready, body = readiness(request.app[ADMIN_STATE])
    return _json(body, 200 if ready else 503)


async def config(request: web.Request) -> web.Response:
    return _json(redacted(request.app[ADMIN_STATE].snapshot.settings))


def create_admin_app(
    proxy_app: web.Application, extensions: Sequence[Extension] | None = None
) -> web.Application:
    """The admin application for a proxy app made by `create_app` (same state)."""
    state = proxy_app[STATE]
    app = web.Application()
    app[ADMIN_STATE] = state
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/config", config)
    for ext in state.extensions if extensions is None else extensions:
        app.router.add_routes(ext.admin_routes())
    return app
