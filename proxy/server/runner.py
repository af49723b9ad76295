"""Process lifecycle for `serve`: listeners, signals, graceful drain, worker processes.

Shutdown on SIGTERM (or SIGINT): `/readyz` answers 503 at once while the proxy keeps serving
for `lifecycle.drain_seconds` (the time an orchestrator needs to stop routing here); then
the listener closes, in-flight requests get up to `lifecycle.shutdown_timeout_seconds` to
finish, and the process exits 0. A second signal cuts the drain short. SIGHUP reloads the
configuration.

`workers: N > 1` forks N processes that each bind the proxy port with SO_REUSEPORT (the
kernel spreads connections); only worker 0 serves the admin listener, so `/readyz` and
`/metrics` describe worker 0. Worker i mints event ids with machine id
`(envelope.machine_id + i) % 1024`, so the workers never mint the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from proxy.compose import compose
from proxy.config import MAX_MACHINE_ID, Settings, redact_url, resolve_machine_id, split_host_port
from proxy.envelope.ids import SnowflakeMinter
from proxy.server.app import RELOADER
from proxy.server.dispatch import serve_events_directly
from proxy.server.state import build_engine

log = logging.getLogger(__name__)

NO_UVLOOP_ENV = "ENVELOPE_PROXY_NO_UVLOOP"
SECOND_SIGNAL_AFTER = 0.5  # seconds: a stop signal closer to the first one is the same stop


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed and not turned off by ENVELOPE_PROXY_NO_UVLOOP=1."""
    if os.environ.get(NO_UVLOOP_ENV, "").strip().lower() in ("1", "true", "yes"):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _url(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"http://[{host}]:{address[1]}" if ":" in host else f"http://{host}:{address[1]}"
    return str(address)


class _Signals:
    """SIGTERM/SIGINT ask to stop (a second one cuts the drain short); SIGHUP reloads."""

    def __init__(self, app: web.Application):
        self.stop = asyncio.Event()
        self.hurry = asyncio.Event()
        self._stop_at = 0.0
        self._app = app
        self._reloads: set[asyncio.Task[bool | None]] = set()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)

    def _on_stop(self) -> None:
        now = time.monotonic()
        if self.stop.is_set():
            # With workers, a signal to the whole process group (Ctrl-C, `tini -g`) reaches
            # each worker twice within milliseconds: directly and forwarded by the parent.
            # Only a second signal sent on its own cuts the drain short.
            if now - self._stop_at >= SECOND_SIGNAL_AFTER:
                self.hurry.set()
            return
        self._stop_at = now
        self.stop.set()

    def _on_hup(self) -> None:
        reloader = self._app.get(RELOADER)
        if reloader is None:
            log.warning("SIGHUP during start-up ignored")
            return
        task = asyncio.get_running_loop().create_task(reloader.reload(force=True, reason="SIGHUP"))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)


async def _serve(
    settings: Settings,
    *,
    config_file: Path | None,
    reload_from: Callable[[], Settings] | None,
    worker: int,
    reuse_port: bool,
) -> int:
    if worker > 0:  # only worker 0 serves /clients, so only it keeps the ledger file
        clients = settings.clients.model_copy(update={"state_file": None})
        settings = settings.model_copy(update={"clients": clients})
    machine_id = worker_machine_id(settings, worker)
    proxy = compose(
        settings,
        worker=worker,
        config_file=config_file,
        reload_from=reload_from,
        minter=SnowflakeMinter(machine_id),
    )
    app = proxy.app
    signals = _Signals(app)  # before listening, so no early signal takes the default action
    lifecycle = settings.lifecycle
    runner = web.AppRunner(
        app, shutdown_timeout=lifecycle.shutdown_timeout_seconds, **proxy.app_kwargs
    )
    admin_runner = web.AppRunner(proxy.admin, shutdown_timeout=1.0, **proxy.admin_kwargs)
    await runner.setup()
    serve_events_directly(runner)
    host, port = split_host_port(settings.listen)
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        if worker == 0:
            await admin_runner.setup()
            admin_host, admin_port = split_host_port(settings.admin_listen)
            await web.TCPSite(admin_runner, admin_host, admin_port).start()
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        await runner.cleanup()
        await admin_runner.cleanup()
        return 2
    admin = ", ".join(_url(a) for a in admin_runner.addresses) or f"none in worker {worker}"
    log.info(
        "envelope-proxy listening on %s (admin %s), upstream %s",
        ", ".join(_url(a) for a in runner.addresses),
        admin,
        redact_url(settings.upstream.url),
    )
    log.info("worker %d mints event ids with machine id %d", worker, machine_id)
    # Start-up objects live for the whole process: keep the collector from rescanning them.
    gc.collect()
    gc.freeze()
    # Each request allocates many short-lived containers (headers, JSON members) and almost
    # never a reference cycle: at the default gen-0 threshold (700) the collector would run
    # several times per request under load, for nothing to collect.
    gc.set_threshold(50_000, 20, 20)

    await signals.stop.wait()
    state = proxy.state
    state.draining = True
    drain = state.snapshot.settings.lifecycle.drain_seconds
    log.info("shutting down: not ready; serving for %.1f s more, then closing the listener", drain)
    if drain > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(signals.hurry.wait(), drain)
    log.info("closing the listener; waiting for %d request(s) in flight", state.inflight)
    await runner.cleanup()
    await admin_runner.cleanup()
    log.info("stopped")
    return 0


def worker_machine_id(settings: Settings, worker: int) -> int:
    """The snowflake machine id worker `worker` mints event ids with."""
    return (resolve_machine_id(settings.envelope.machine_id) + worker) % (MAX_MACHINE_ID + 1)


def run_worker(
    settings: Settings,
    *,
    config_file: Path | None,
    reload_from: Callable[[], Settings] | None,
    worker: int = 0,
    reuse_port: bool = False,
) -> int:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(
            _serve(
                settings,
                config_file=config_file,
                reload_from=reload_from,
                worker=worker,
                reuse_port=reuse_port,
            )
        )


def serve(
    settings: Settings,
    *,
    config_file: Path | None,
    reload_from: Callable[[], Settings] | None,
) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    if settings.workers == 1:
        return run_worker(settings, config_file=config_file, reload_from=reload_from)
    _, port = split_host_port(settings.listen)
    if port == 0:
        log.error("workers > 1 need a fixed listen port (SO_REUSEPORT shares one port)")
        return 2
    build_engine(settings)  # refuse bad rules once here rather than in every worker
    children: dict[int, int] = {}
    for index in range(settings.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = run_worker(
                    settings,
                    config_file=config_file,
                    reload_from=reload_from,
                    worker=index,
                    reuse_port=True,
                )
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = index
    return _supervise(children)


def _supervise(children: dict[int, int]) -> int:
    """Forward signals to the workers; stop them all if one dies on its own."""
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    worst = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            worst = worst or (code if code > 0 else 1)
            log.error("worker %s exited with %d", index, code)
        if not stopping:
            log.error("worker %s stopped unexpectedly; stopping the others", index)
            forward(signal.SIGTERM, None)
            worst = worst or 1
    return worst
