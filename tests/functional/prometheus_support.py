"""A real Prometheus server on loopback for the fleet-verdict tests, and the proxies it scrapes.

`PrometheusServer` runs Debian's `prometheus` binary on a free port with its own storage
directory and a generated config that scrapes the targets listed in a file (file service
discovery, re-read when the file changes), every second. `Proxy` is one `envelope-proxy
serve` process on fixed loopback ports, so a restart keeps its `instance` label.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.functional.server_support import ServeProcess
from tests.loopback import free_port

PROMETHEUS = shutil.which("prometheus")
JOB = "envelope-proxy"


async def poll(check: Callable[[], Awaitable[bool]], what: str, within: float = 20.0) -> None:
    """Wait until `check` holds, with a deadline (the machine may be loaded)."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        await asyncio.sleep(0.2)


class PrometheusServer:
    """`prometheus` on 127.0.0.1 with a 1 s scrape interval and file-listed targets."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.targets_file = directory / "targets.json"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None
        self.log = directory / "prometheus.log"

    async def start(self, targets: list[str]) -> None:
        assert PROMETHEUS is not None
        self.set_targets(targets)
        config = self.directory / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": JOB,
                            "file_sd_configs": [
                                {"files": [str(self.targets_file)], "refresh_interval": "1s"}
                            ],
                        }
                    ],
                }
            ),
            encoding="utf-8",
        )
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                assert self.process is not None
                assert self.process.returncode is None, self.log.read_text(encoding="utf-8")
                try:
                    async with session.get(self.url + "/-/ready") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await poll(ready, "prometheus ready", within=30)

    def set_targets(self, targets: list[str]) -> None:
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": targets}]), encoding="utf-8")
        tmp.replace(self.targets_file)  # atomic: the watcher never reads half a file

    async def query(self, expr: str) -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url + "/api/v1/query", data={"query": expr}) as response,
        ):
            answer = await response.json()
        assert answer["status"] == "success", answer
        rows: list[dict[str, Any]] = answer["data"]["result"]
        return rows

    async def has(self, expr: str, within: float = 20.0) -> None:
        """Wait until `expr` returns at least one series."""

        async def check() -> bool:
            return bool(await self.query(expr))

        await poll(check, expr, within)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


class Proxy:
    """`envelope-proxy serve` on fixed loopback ports with its own ledger state file."""

    def __init__(self, directory: Path, upstream: str, name: str) -> None:
        self.upstream = upstream
        self.state_file = directory / f"{name}-ledger.json"
        self.config = directory / f"{name}.yaml"
        self.config.write_text(
            "lifecycle:\n  drain_seconds: 0\n  shutdown_timeout_seconds: 5\n"
            f"clients:\n  state_file: {json.dumps(str(self.state_file))}\n",
            encoding="utf-8",
        )
        self.port = free_port()
        self.admin_port = free_port()
        self.target = f"127.0.0.1:{self.admin_port}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: ServeProcess | None = None

    async def start(self) -> None:
        self.process = await ServeProcess.start(
            "--config",
            str(self.config),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--admin-listen",
            self.target,
            "--upstream",
            self.upstream,
        )

    async def stop(self) -> None:
        """SIGTERM: the proxy drains and writes its ledger, as a pod being stopped does."""
        if self.process is not None and self.process.process.returncode is None:
            self.process.signal(signal.SIGTERM)
            assert await self.process.wait() == 0, self.process.output
        self.process = None

    async def kill(self) -> None:
        if self.process is not None:
            await self.process.stop()
        self.process = None

    async def send(self, session: aiohttp.ClientSession, body: bytes, client: str) -> None:
        headers = {"Content-Type": "application/json", "X-NoETL-Client": client}
        async with session.post(self.url + "/api/events", data=body, headers=headers) as response:
            assert 200 <= response.status < 300, await response.text()


@contextlib.asynccontextmanager
async def running(*things: PrometheusServer | Proxy) -> Any:
    try:
        yield
    finally:
        for thing in things:
            with contextlib.suppress(Exception):
                await (thing.kill() if isinstance(thing, Proxy) else thing.stop())
