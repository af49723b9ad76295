"""`envelope-proxy demo`: the whole story on loopback, with nothing else installed or running.

Starts an emulated legacy NoETL control plane (Rust 2.9.0) and the proxy in front of it,
sends one body of every envelope shape, and prints what happened to each. Then it upgrades
the emulated upstream to a current release (3.83.1) at runtime, waits until the proxy's
version probe notices, and sends the same bodies again: this time they go out canonical.
Exit status 0 when every body was accepted both times. `--keep-running` leaves both up.
The emulator is imported only when the demo runs (the production image leaves it out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from proxy.emulator_commands import emulator_installed, report_not_installed
from proxy.server.dispatch import serve_events_directly

LEGACY_PROFILE = "rust-2.9.0"
CURRENT_PROFILE = "rust-2.19.1"
CURRENT_VERSION = "3.83.1"
PROBE_INTERVAL_SECONDS = 0.2
NOTICE_TIMEOUT_SECONDS = 15.0

# One body per shape, from the NoETL producers' own tests and code paths (ids are 63-bit
# snowflakes, beyond what a float holds exactly). Embedded so an installed copy needs no checkout.
DEMO_BODIES: tuple[tuple[str, str, bytes], ...] = (
    (
        "executor_event",
        "/api/events",
        b'{"execution_id":478775660589088776,"event_type":"command.started",'
        b'"step":"fetch_calendar","status":"STARTED",'
        b'"created_at":"2026-06-05T12:00:00.123456789Z",'
        b'"context":{"command_id":"cmd-123"},"worker_id":"worker-prod-7"}',
    ),
    (
        "event_request",
        "/api/events",
        b'{"execution_id":"478775660589088776","name":"call.done","step":"fetch",'
        b'"payload":{"result":"ok"},"worker_id":"noetl-worker-py-1"}',
    ),
    (
        "emit_request",
        "/api/events",
        b'{"execution_id":"478775660589088776","event_type":"step.exit","node_name":"fetch",'
        b'"node_type":"http","duration":0.42,"result":{"status":"ok"}}',
    ),
    (
        "worker_event",
        "/api/events",
        b'{"event_type":"command.started","execution_id":478775660589088776,'
        b'"payload":{"command_id":"478775660589088776:fetch:1","worker_id":"worker-rust-2"}}',
    ),
    (
        "batch",
        "/api/events/batch",
        b'{"execution_id":"478775660589088776","worker_id":"worker-cpu-01","events":['
        b'{"step":"fetch","name":"step.exit","payload":{"result":{"status":"COMPLETED"}},'
        b'"actionable":false,"informative":true},'
        b'{"step":"fetch","name":"command.completed",'
        b'"payload":{"command_id":"478775660589088790"},"actionable":true,"informative":true}]}',
    ),
)


@dataclass(frozen=True, slots=True)
class Row:
    shape: str
    target: str
    status: int
    stored: str


async def send_all(session: aiohttp.ClientSession, proxy_url: str) -> list[Row]:
    from proxy.server.exchange import event_ids

    rows = []
    for _, path, body in DEMO_BODIES:
        async with session.post(
            proxy_url + path, data=body, headers={"Content-Type": "application/json"}
        ) as response:
            answer = await response.read()
            if response.status < 300:
                stored = ", ".join(event_ids(answer)) or "-"
            else:
                stored = answer.decode()[:60]
            rows.append(
                Row(
                    shape=response.headers.get("X-Envelope-Shape", "?"),
                    target=response.headers.get("X-Envelope-Target", "?"),
                    status=response.status,
                    stored=stored,
                )
            )
    return rows


def print_table(title: str, rows: list[Row], out: TextIO) -> None:
    header = ("shape", "target", "upstream status", "stored id(s)")
    cells = [header, *[(r.shape, r.target, str(r.status), r.stored) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    print(f"\n{title}", file=out)
    for line in lines:
        print("  " + line.rstrip(), file=out)


async def _start(
    app: web.Application, host: str, port: int, *, proxy: bool = False, **kwargs: Any
) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, **kwargs)
    await runner.setup()
    if proxy:
        serve_events_directly(runner)
    await web.TCPSite(runner, host, port).start()
    address = runner.addresses[0]
    return runner, f"http://{address[0]}:{address[1]}"


async def run_demo(*, keep_running: bool, listen: str, out: TextIO) -> int:
    from proxy.compose import compose
    from proxy.config import load_settings, split_host_port
    from proxy.emulator import create_emulator_app

    upstream_runner, upstream_url = await _start(
        create_emulator_app(LEGACY_PROFILE, fast=True), "127.0.0.1", 0
    )
    host, port = split_host_port(listen)
    settings = load_settings(
        None,
        {
            "listen": listen,
            "admin_listen": "127.0.0.1:0",
            "upstream.url": upstream_url,
            "upstream.version": "auto",
            "upstream.probe_interval_seconds": PROBE_INTERVAL_SECONDS,
        },
        environ={},
    )
    proxy = compose(settings)
    proxy_runner, proxy_url = await _start(proxy.app, host, port, proxy=True, **proxy.app_kwargs)
    admin_runner, admin_url = await _start(proxy.admin, "127.0.0.1", 0, **proxy.admin_kwargs)
    state = proxy.state
    failed = 0
    try:
        async with aiohttp.ClientSession() as session:
            print(f"upstream: emulated NoETL {LEGACY_PROFILE} at {upstream_url}", file=out)
            print(f"proxy:    {proxy_url}  (target {state.snapshot.target})", file=out)
            rows = await send_all(session, proxy_url)
            print_table(f"1. legacy upstream ({LEGACY_PROFILE})", rows, out)
            failed += sum(1 for r in rows if not 200 <= r.status < 300)

            async with session.post(
                upstream_url + "/_emulator/profile",
                json={"profile": CURRENT_PROFILE, "version": CURRENT_VERSION},
            ) as response:
                response.raise_for_status()
            print(
                f"\nupstream upgraded to {CURRENT_PROFILE} reporting {CURRENT_VERSION}; "
                "waiting for the proxy's version probe...",
                file=out,
            )
            started = time.monotonic()
            while state.snapshot.upstream_version != CURRENT_VERSION:
                if time.monotonic() - started > NOTICE_TIMEOUT_SECONDS:
                    print("the proxy did not notice the upgrade", file=out)
                    return 1
                await asyncio.sleep(0.05)
            print(
                f"proxy switched to target {state.snapshot.target} "
                f"after {time.monotonic() - started:.1f} s",
                file=out,
            )
            rows = await send_all(session, proxy_url)
            print_table(f"2. current upstream ({CURRENT_PROFILE}, {CURRENT_VERSION})", rows, out)
            failed += sum(1 for r in rows if not 200 <= r.status < 300)
        print(
            f"\n{'every body was accepted' if not failed else f'{failed} body(ies) refused'}",
            file=out,
        )
        if keep_running:
            await _keep_running(proxy_url, admin_url, upstream_url, out)
        return 0 if not failed else 1
    finally:
        await proxy_runner.cleanup()
        await admin_runner.cleanup()
        await upstream_runner.cleanup()


async def _keep_running(proxy_url: str, admin_url: str, upstream_url: str, out: TextIO) -> None:
    body = DEMO_BODIES[3][2].decode()
    print(
        f"\nrunning until Ctrl-C:\n"
        f"  proxy     {proxy_url}\n"
        f"  admin     {admin_url}/readyz  {admin_url}/config  {admin_url}/metrics\n"
        f"  upstream  {upstream_url}  (emulated; stored: {upstream_url}/_emulator/events)\n"
        f"try:\n"
        f"  curl -s -H 'Content-Type: application/json' -d '{body}' {proxy_url}/api/events\n",
        file=out,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def _demo(args: argparse.Namespace) -> int:
    if not emulator_installed():
        return report_not_installed("demo")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(
            run_demo(keep_running=args.keep_running, listen=args.listen, out=sys.stdout)
        )
    return 130


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="show the proxy converting every shape for a legacy, then a current upstream",
        description=(
            "Start an emulated legacy NoETL upstream and the proxy on loopback, send one body "
            "of each envelope shape, upgrade the upstream, and send them again."
        ),
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the proxy and the emulated upstream running and print how to try them",
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="proxy listener (default: a free loopback port)",
    )
    parser.set_defaults(func=_demo)
