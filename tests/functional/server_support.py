"""Shared pieces for the proxy server's functional tests: real loopback servers, no mocks.

`start_stack` runs the emulator as upstream and the proxy app (plus its admin app) behind
aiohttp test servers; `Recorder` is a real `contract.Extension` that keeps what the server
told it, so tests can assert on `EventRecord`s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.compose import Composed, compose
from proxy.config import Settings, load_settings
from proxy.contract import EventRecord, ProxyView
from proxy.emulator import create_emulator_app
from proxy.envelope.ids import SnowflakeMinter
from proxy.server.dispatch import serve_events_directly
from proxy.server.keys import UPSTREAM_STATS
from proxy.server.state import ProxyState
from proxy.server.upstream import UpstreamStats
from tests.samples import REPO_ROOT

ServerFactory = Callable[..., Awaitable[TestServer]]
JSON = {"Content-Type": "application/json"}
EMIT_REQUEST = (
    b'{"execution_id":"478775660589088776","event_type":"step.exit","node_name":"fetch",'
    b'"node_type":"http","duration":0.42,"result":{"status":"ok"}}'
)


class Recorder:
    """An extension that remembers every call the server made to it."""

    def __init__(self) -> None:
        self.records: list[EventRecord] = []
        self.reloads: list[bool] = []
        self.targets: list[tuple[str, str | None]] = []
        self.passthrough: list[tuple[int, float]] = []
        self.view: ProxyView | None = None
        self.closed = False
        self.stats = UpstreamStats()  # the event client's, once the proxy app is built

    @property
    def attempts(self) -> int:
        """Event requests the proxy started upstream (a retried connect counts twice)."""
        return self.stats.attempts

    @property
    def connections(self) -> int:
        """Upstream connections the event client opened."""
        return self.stats.connections

    def attach(self, view: ProxyView) -> None:
        self.view = view

    def server_middlewares(self) -> Sequence[Any]:
        return ()

    def client_trace_configs(self) -> Sequence[aiohttp.TraceConfig]:
        return ()

    def admin_routes(self) -> Sequence[web.RouteDef]:
        async def hello(request: web.Request) -> web.Response:
            return web.json_response({"records": len(self.records)})

        return [web.get("/recorder", hello)]

    def on_event(self, record: EventRecord) -> None:
        self.records.append(record)

    def on_passthrough(self, status: int, seconds: float) -> None:
        self.passthrough.append((status, seconds))

    def on_reload(self, ok: bool) -> None:
        self.reloads.append(ok)

    def on_target(self, target: str, version: str | None) -> None:
        self.targets.append((target, version))

    async def close(self) -> None:
        self.closed = True


@dataclass
class Stack:
    """An emulated upstream, the proxy in front of it, and the proxy's admin listener."""

    upstream: str
    proxy: str
    admin: str
    state: ProxyState
    recorder: Recorder
    session: aiohttp.ClientSession
    extra: dict[str, Any] = field(default_factory=dict)

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        async with self.session.post(
            self.proxy + path, data=body, headers=headers or JSON
        ) as response:
            return response, await response.read()

    async def stored(self) -> list[dict[str, Any]]:
        """What the emulated upstream stored, one row per stored event, in order."""
        rows: list[dict[str, Any]] = await self._emulator_json("/_emulator/events")
        return rows

    async def upstream_requests(self) -> int:
        """How many requests reached the upstream's event endpoints (faulted ones included)."""
        stats = await self._emulator_json("/_emulator/stats")
        return int(stats["faults"].get("requests", 0))

    async def _emulator_json(self, path: str) -> Any:
        async with self.session.get(self.upstream + path) as response:
            assert response.status == 200
            return orjson.loads(await response.read())

    async def set_profile(self, profile: str, version: str | None = None) -> None:
        body: dict[str, Any] = {"profile": profile}
        if version is not None:
            body["version"] = version
        async with self.session.post(self.upstream + "/_emulator/profile", json=body) as response:
            assert response.status == 200, await response.text()

    async def fault(self, **fault: Any) -> None:
        async with self.session.post(self.upstream + "/_emulator/faults", json=fault) as response:
            assert response.status in (200, 204), await response.text()

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        async with self.session.get(self.admin + "/readyz") as response:
            return response.status, orjson.loads(await response.read())


def stored_body(event: dict[str, Any]) -> bytes:
    """The exact bytes the emulator stored for one request."""
    return base64.b64decode(event["body_b64"])


async def wait_for(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Wait until an asynchronous check (e.g. a question to the emulator) holds."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def settings_for(upstream: str, overrides: dict[str, Any] | None = None) -> Settings:
    values: dict[str, Any] = {
        "upstream.url": upstream,
        "upstream.probe_interval_seconds": 0.1,
        "upstream.timeout_seconds": 5,
        "upstream.connect_timeout_seconds": 1,
    }
    values.update(overrides or {})
    return load_settings(None, values, environ={})


async def start_upstream(
    aiohttp_server: ServerFactory, profile: str, version: str | None = None
) -> str:
    server = await aiohttp_server(create_emulator_app(profile, version=version, fast=True))
    return str(server.make_url("")).rstrip("/")


def as_served(server: TestServer) -> None:
    """Run a test server's handlers as `serve` does: not cancelled when their client leaves
    (aiohttp's test server turns cancellation on)."""
    assert server.runner is not None
    assert server.runner.server is not None
    server.runner.server.handler_cancellation = False
    assert isinstance(server.runner, web.AppRunner)
    serve_events_directly(server.runner)


def base_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def serve_composed(
    aiohttp_server: ServerFactory, proxy: Composed
) -> tuple[TestServer, TestServer]:
    """A composed proxy and its admin app behind loopback test servers, served as `serve`
    serves them: (proxy server, admin server)."""
    server = await aiohttp_server(proxy.app, **proxy.app_kwargs)
    as_served(server)
    admin = await aiohttp_server(proxy.admin, **proxy.admin_kwargs)
    return server, admin


async def start_proxy(
    aiohttp_server: ServerFactory,
    settings: Settings,
    *,
    recorder: Recorder | None = None,
    config_file: Path | None = None,
    reload_from: Callable[[], Settings] | None = None,
    minter: SnowflakeMinter | None = None,
) -> tuple[str, str, ProxyState, Recorder]:
    recorder = recorder or Recorder()
    proxy = compose(
        settings,
        extensions=[recorder],
        config_file=config_file,
        reload_from=reload_from,
        minter=minter,
    )
    recorder.stats = proxy.app[UPSTREAM_STATS]
    server, admin = await serve_composed(aiohttp_server, proxy)
    return base_url(server), base_url(admin), proxy.state, recorder


async def start_stack(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    profile: str = "rust-2.19.1",
    *,
    version: str | None = None,
    overrides: dict[str, Any] | None = None,
    recorder: Recorder | None = None,
) -> Stack:
    upstream = await start_upstream(aiohttp_server, profile, version)
    proxy, admin, state, recorder = await start_proxy(
        aiohttp_server, settings_for(upstream, overrides), recorder=recorder
    )
    return Stack(upstream, proxy, admin, state, recorder, session)


async def open_raw(stack: Stack) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP connection to the proxy port, for requests aiohttp's client cannot send."""
    host, port = stack.proxy.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def raw_exchange(stack: Stack, request: bytes) -> bytes:
    """Send raw bytes to the proxy and return what it answers before closing or 5 s."""
    reader, writer = await open_raw(stack)
    writer.write(request)
    await writer.drain()
    try:
        async with asyncio.timeout(5):
            data = await reader.read(65536)
    finally:
        writer.close()
    return data


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


_LISTENING = re.compile(r"listening on (http://\S+) \(admin (http://\S+)\)")


class ServeProcess:
    """A real `envelope-proxy serve` subprocess; its combined output is kept in `lines`."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.lines: list[str] = []
        self.proxy = ""
        self.admin = ""
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None) -> ServeProcess:
        process = await asyncio.create_subprocess_exec(
            *cli("serve", *args),
            cwd=REPO_ROOT,
            env=cli_env(**(env or {})),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: workers included, nothing else
        )
        serve = cls(process)
        await serve._wait_listening()
        return serve

    async def _wait_listening(self) -> None:
        assert self.process.stdout is not None
        async with asyncio.timeout(30):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    raise AssertionError("serve exited early:\n" + "".join(self.lines))
                line = raw.decode()
                self.lines.append(line)
                match = _LISTENING.search(line)
                if match:
                    self.proxy, self.admin = match[1], match[2]
                    break
        self._reader = asyncio.create_task(self._drain_output())

    async def _drain_output(self) -> None:
        assert self.process.stdout is not None
        while raw := await self.process.stdout.readline():
            self.lines.append(raw.decode())

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait(self, within: float = 30.0) -> int:
        async with asyncio.timeout(within):
            code = await self.process.wait()
            if self._reader is not None:
                await self._reader
        return code

    def signal_group(self, signum: int) -> None:
        """Signal the whole process group, as a terminal's Ctrl-C or `tini -g` does."""
        os.killpg(self.process.pid, signum)

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # workers too
            await self.process.wait()
        if self._reader is not None:
            self._reader.cancel()

    @property
    def output(self) -> str:
        return "".join(self.lines)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "proxy", *args]


def cli_env(**extra: str) -> dict[str, str]:
    """The test environment without stray ENVELOPE_PROXY_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVELOPE_PROXY_")}
    env.update(extra)
    return env
