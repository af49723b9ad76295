"""The emulator's aiohttp application: NoETL's ingest API plus its control endpoints.

`create_emulator_app(profile)` serves `POST /api/events` and `/api/events/batch` with the
acceptance rules of the chosen server release (`profiles`, `ingest_rust`,
`ingest_python`), the health endpoints with their version, the pass-through routes of
`routes`, and `/_emulator/*` to switch the profile, inject faults and read what arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from proxy.emulator import ingest_python, ingest_rust, routes
from proxy.emulator.faults import FaultConfig, FaultConfigError, FaultPlan, Faults, injected_body
from proxy.emulator.profiles import (
    PROFILES,
    RUST_BODY_LIMIT,
    RUST_TOO_LARGE,
    TEXT_PLAIN,
    Decoded,
    ProfileSpec,
    Route,
    axum_accepts_content_type,
    decode_request,
    profile_for_version,
)
from proxy.emulator.python_models import BatchEventRequest, EventRequest
from proxy.emulator.state import IngestState, Reply, json_body
from proxy.emulator.store import MemoryStore, RequestRecord, SqliteStore, Store, now_iso

log = logging.getLogger(__name__)

# Room for bodies far over the Rust 2 MiB limit, so that limit answers, not aiohttp's.
CLIENT_MAX_SIZE = 64 * 1024 * 1024
_EVENT_PATHS: dict[Route, str] = {"event": "/api/events", "batch": "/api/events/batch"}


@dataclass
class Emulator:
    """Everything one emulator app holds: profile, server memory, store, faults."""

    spec: ProfileSpec
    version: str | None
    store: Store
    fast: bool = False
    state: IngestState = field(default_factory=IngestState)
    faults: Faults = field(default_factory=Faults)
    started: float = field(default_factory=time.monotonic)
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def switch(self, profile: str | None, version: str | None) -> None:
        """Change the emulated release; a version alone picks the Rust rules it implies."""
        if profile is None:
            if version is None:
                raise ValueError("give a profile, a version, or both")
            profile = profile_for_version(version)
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
        self.spec = PROFILES[profile]
        self.version = version if version is not None else self.spec.default_version

    def describe(self) -> dict[str, Any]:
        return {
            "profile": self.spec.name,
            "family": self.spec.family,
            "version": self.version if self.spec.family == "rust" else None,
            "summary": self.spec.summary,
            "fast": self.fast,
            "profiles": list(PROFILES),
        }


EMULATOR_KEY = web.AppKey("emulator", Emulator)


def _reply_response(reply: Reply) -> web.Response:
    headers = {"Content-Type": reply.content_type, **dict(reply.headers)}
    return web.Response(status=reply.status, body=reply.body, headers=headers)


def _handle(emu: Emulator, decoded: Decoded, request: web.Request) -> Reply:
    if decoded.rust is not None:
        if decoded.route == "batch":
            return ingest_rust.handle_batch(emu.state, decoded.rust)
        return ingest_rust.handle_event(emu.state, decoded.rust)
    if isinstance(decoded.python, BatchEventRequest):
        key = ingest_python.idempotency_key(request.headers)
        return ingest_python.handle_batch(emu.state, decoded.python, key)
    assert isinstance(decoded.python, EventRequest)
    return ingest_python.handle_event(emu.state, decoded.python)


def _process(
    emu: Emulator,
    spec: ProfileSpec,
    route: Route,
    request: web.Request,
    body: bytes,
    fault: str | None = None,
) -> Reply:
    """Body layer, then handler, then the record of what happened."""
    content_type = request.headers.get("Content-Type")
    outcome = decode_request(spec, route, content_type, body)
    if isinstance(outcome, Decoded):
        reply = _handle(emu, outcome, request)
    else:
        reply = Reply(outcome.status, outcome.body, outcome.content_type, outcome.headers)
    _record(emu, spec, route, content_type, body, reply, fault)
    return reply


def _record(
    emu: Emulator,
    spec: ProfileSpec,
    route: Route,
    content_type: str | None,
    body: bytes,
    reply: Reply,
    fault: str | None = None,
) -> None:
    if emu.state.store_down:
        emu.faults.counters["store_down"] += 1
    emu.store.record(
        RequestRecord(
            path=_EVENT_PATHS[route],
            profile=spec.name,
            version=emu.version,
            content_type=content_type,
            body=body,
            status=reply.status,
            event_ids=reply.event_ids if reply.accepted else (),
            duplicate=reply.duplicate,
            fault=fault,
            received_at=now_iso(),
        )
    )
    if not emu.fast:
        log.info(
            "%s %s -> %d %s",
            spec.name,
            _EVENT_PATHS[route],
            reply.status,
            list(reply.event_ids)
            if reply.accepted
            else reply.body[:200].decode("utf-8", "replace"),
        )


def _drop(request: web.Request) -> web.Response:
    """Close the connection without an answer (the response below is never written)."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


async def _wait_until_gone(emu: Emulator, request: web.Request) -> None:
    while not emu.closing.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(emu.closing.wait(), 0.1)


def _injected(emu: Emulator, plan: FaultPlan) -> Reply:
    config = emu.faults.config
    headers: tuple[tuple[str, str], ...] = ()
    if config.retry_after is not None:
        value = config.retry_after
        text = str(int(value)) if float(value).is_integer() else str(value)
        headers = (("Retry-After", text),)
    assert plan.status is not None
    return Reply(plan.status, json_body(injected_body(config)), headers=headers)


async def _ingest(request: web.Request, route: Route) -> web.StreamResponse:
    emu = request.app[EMULATOR_KEY]
    spec = emu.spec
    plan = emu.faults.plan()
    content_type = request.headers.get("Content-Type")
    if (
        spec.family == "rust"
        and not plan.hang
        and axum_accepts_content_type(content_type)
        and (request.content_length or 0) > RUST_BODY_LIMIT
    ):
        # axum refuses on Content-Length without reading the body.
        reply = Reply(413, RUST_TOO_LARGE, TEXT_PLAIN)
        _record(emu, spec, route, content_type, b"", reply)
        return _reply_response(reply)
    body = await request.read()
    if plan.hang:
        await _wait_until_gone(emu, request)
        return _drop(request)
    if plan.drop:
        if plan.store_before_drop:
            _process(emu, spec, route, request, body, fault="dropped after processing")
        return _drop(request)
    if plan.status is not None:
        reply = _injected(emu, plan)
        _record(emu, spec, route, content_type, body, reply, fault=f"status {plan.status}")
        return _reply_response(reply)
    reply = _process(emu, spec, route, request, body)
    if plan.delay_seconds:
        await asyncio.sleep(plan.delay_seconds)
    return _reply_response(reply)


async def post_event(request: web.Request) -> web.StreamResponse:
    return await _ingest(request, "event")


async def post_batch(request: web.Request) -> web.StreamResponse:
    return await _ingest(request, "batch")


def _json(content: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json_body(content), content_type="application/json")


def _nats_field(version: str | None) -> str:
    numbers = tuple(int(p) for p in (version or "0").split(".")[:3] if p.isdigit())
    return "removed" if numbers >= (3,) else "not_configured"


async def api_health(request: web.Request) -> web.Response:
    """Rust: status, database, nats, uptime, version (503 with the same body when the
    store is down). Python: `{"status":"ok"}` and nothing else."""
    emu = request.app[EMULATOR_KEY]
    if emu.spec.family == "python":
        return _json({"status": "ok"})
    down = emu.state.store_down
    content = {
        "status": "unhealthy" if down else "ok",
        "database": "disconnected" if down else "connected",
        "nats": _nats_field(emu.version),
        "uptime_seconds": int(time.monotonic() - emu.started),
        "version": emu.version,
    }
    return _json(content, 503 if down else 200)


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def _read_json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError as exc:
        raise web.HTTPBadRequest(
            body=json_body({"error": f"invalid JSON: {exc}"}), content_type="application/json"
        ) from None


async def get_profile(request: web.Request) -> web.Response:
    return _json(request.app[EMULATOR_KEY].describe())


async def set_profile(request: web.Request) -> web.Response:
    """`{"profile": "rust-2.19.1", "version": "3.83.1"}` (either key may be left out)."""
    emu = request.app[EMULATOR_KEY]
    data = await _read_json(request)
    profile = data.get("profile") if isinstance(data, dict) else None
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(profile, str | None):
        return _json({"error": "expected an object with `profile` and/or `version`"}, 400)
    if not isinstance(version, str | None):
        return _json({"error": "`version` must be a string"}, 400)
    try:
        emu.switch(profile, version)
    except ValueError as exc:
        return _json({"error": str(exc)}, 400)
    log.info("profile switched to %s (version %s)", emu.spec.name, emu.version)
    return _json(emu.describe())


async def get_faults(request: web.Request) -> web.Response:
    return _json(request.app[EMULATOR_KEY].faults.snapshot())


async def set_faults(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR_KEY]
    try:
        config = FaultConfig.from_json(await _read_json(request))
    except FaultConfigError as exc:
        return _json({"error": str(exc)}, 400)
    emu.faults.configure(config)
    emu.state.store_down = config.store_down
    return _json(emu.faults.snapshot())


async def clear_faults(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR_KEY]
    emu.faults.clear()
    emu.state.store_down = False
    return _json(emu.faults.snapshot())


def _since(request: web.Request) -> int:
    try:
        return int(request.query.get("since", "0"))
    except ValueError:
        raise web.HTTPBadRequest(text="since must be an integer") from None


async def list_events(request: web.Request) -> web.Response:
    return _json(request.app[EMULATOR_KEY].store.events(_since(request)))


async def list_requests(request: web.Request) -> web.Response:
    return _json(request.app[EMULATOR_KEY].store.requests(_since(request)))


async def clear_events(request: web.Request) -> web.Response:
    """Forget stored requests and the server's memory (claims, dedup, idempotency)."""
    emu = request.app[EMULATOR_KEY]
    emu.store.clear()
    emu.state.forget()
    return _json(emu.store.counts())


async def get_stats(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR_KEY]
    return _json({**emu.store.counts(), "faults": dict(emu.faults.counters)})


@web.middleware
async def _server_style_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """404/405 outside `/_emulator` look like the emulated server's (axum: empty body;
    FastAPI: `{"detail": ...}`)."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
        if request.path.startswith("/_emulator"):
            raise
        emu = request.app[EMULATOR_KEY]
        headers = {}
        if isinstance(exc, web.HTTPMethodNotAllowed):
            headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        if emu.spec.family == "python":
            return web.Response(
                status=exc.status,
                body=json_body({"detail": exc.reason}),
                headers={**headers, "Content-Type": "application/json"},
            )
        return web.Response(status=exc.status, headers=headers)


async def _on_shutdown(app: web.Application) -> None:
    app[EMULATOR_KEY].closing.set()


async def _on_cleanup(app: web.Application) -> None:
    app[EMULATOR_KEY].store.close()


def create_emulator_app(
    profile: str,
    *,
    version: str | None = None,
    db_path: str | None = None,
    fast: bool = False,
) -> web.Application:
    """An aiohttp app emulating the NoETL control plane of `profile` (see `PROFILES`).

    `version` overrides what `/api/health` reports; `db_path` keeps the store in a SQLite
    file; `fast` keeps only counters and recent requests in memory and logs nothing.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    store: Store = MemoryStore() if fast else SqliteStore(db_path)
    emulator = Emulator(spec=PROFILES[profile], version=None, store=store, fast=fast)
    emulator.switch(profile, version)
    app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=[_server_style_errors])
    app[EMULATOR_KEY] = emulator
    app.router.add_post("/api/events", post_event)
    app.router.add_post("/api/events/batch", post_batch)
    app.router.add_get("/api/health", api_health)
    app.router.add_get("/health", health)
    app.router.add_get("/_emulator/profile", get_profile)
    app.router.add_post("/_emulator/profile", set_profile)
    app.router.add_get("/_emulator/faults", get_faults)
    app.router.add_post("/_emulator/faults", set_faults)
    app.router.add_delete("/_emulator/faults", clear_faults)
    app.router.add_get("/_emulator/events", list_events)
    app.router.add_delete("/_emulator/events", clear_events)
    app.router.add_get("/_emulator/requests", list_requests)
    app.router.add_get("/_emulator/stats", get_stats)
    routes.add_routes(app)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app
