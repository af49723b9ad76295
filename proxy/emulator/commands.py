"""What `envelope-proxy upstream` runs: the NoETL ingest emulator until SIGINT or SIGTERM.

`proxy.emulator_commands` owns the command line (it parses without the emulator) and
calls `run_upstream` once the emulator is known to be installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable

from aiohttp import web

from proxy.emulator.app import EMULATOR_KEY, create_emulator_app


async def _serve(args: argparse.Namespace) -> int:
    app = create_emulator_app(
        args.emulate, version=args.report_version, db_path=args.db, fast=args.fast
    )
    runner = web.AppRunner(
        app, access_log=None if args.fast else logging.getLogger("aiohttp.access")
    )
    await runner.setup()
    host, port = args.listen
    site = web.TCPSite(runner, host, port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound_port = port
    for address in runner.addresses:
        bound_port = address[1]
        break
    shown_host = f"[{host}]" if ":" in host else host
    description = app_description(app)
    print(f"envelope-proxy upstream: {description} on http://{shown_host}:{bound_port}", flush=True)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    return 0


def app_description(app: web.Application) -> str:
    """`emulating rust-2.19.1 version 3.83.1`, as printed on start."""
    emu = app[EMULATOR_KEY]
    version = f" version {emu.version}" if emu.spec.family == "rust" else ""
    mode = ", fast mode" if emu.fast else ""
    return f"emulating {emu.spec.name}{version}{mode}"


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed, unless ENVELOPE_PROXY_NO_UVLOOP=1 (as `serve` does)."""
    if os.environ.get("ENVELOPE_PROXY_NO_UVLOOP", "").strip().lower() in ("1", "true", "yes"):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_upstream(args: argparse.Namespace) -> int:
    if not args.fast:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=_loop_factory()) as runner,
    ):
        return runner.run(_serve(args))
    return 130
