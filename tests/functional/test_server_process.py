"""`envelope-proxy serve` as a real process: start-up, precedence of flags, SIGTERM drain."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.functional.server_support import (
    JSON,
    ServeProcess,
    ServerFactory,
    cli,
    cli_env,
    eventually,
    start_upstream,
    wait_for,
)
from tests.loopback import free_port
from tests.samples import REPO_ROOT, sample_bytes

WORKER_EVENT = sample_bytes("worker_event__command_started")


async def serve_two_workers(upstream: str, env: dict[str, str]) -> ServeProcess:
    """`serve --workers 2` on a fixed free loopback port (workers cannot share port 0)."""
    port = free_port()
    return await ServeProcess.start(
        "--listen",
        f"127.0.0.1:{port}",
        "--admin-listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--workers",
        "2",
        env=env,
    )


async def serve_with_lifecycle(
    tmp_path: Path, upstream: str, *, drain: float, budget: float
) -> ServeProcess:
    """`serve` on free loopback ports in front of `upstream`, with these shutdown timings."""
    config = tmp_path / "config.yaml"
    config.write_text(
        f"lifecycle:\n  drain_seconds: {drain}\n  shutdown_timeout_seconds: {budget}\n",
        encoding="utf-8",
    )
    return await ServeProcess.start(
        "--config",
        str(config),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
    )


async def test_sigterm_drains_then_answers_in_flight_requests_and_exits_0(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """SIGTERM: /readyz 503 at once, new requests still served during the drain, the slow
    in-flight one answered after the listener closed, exit status 0."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    # Margins wide enough for a loaded machine: the drain (2 s) is far longer than the
    # few steps that must happen within it, and the upstream's delay (3 s) keeps the
    # first request in flight until the listener has closed.
    serve = await serve_with_lifecycle(tmp_path, upstream, drain=2, budget=10)
    try:
        async with session.get(serve.admin + "/readyz") as response:
            assert response.status == 200
        async with session.post(
            upstream + "/_emulator/faults", json={"delay_seconds": 3.0}
        ) as response:
            assert response.status == 200

        async def post() -> tuple[int, bytes]:
            async with session.post(
                serve.proxy + "/api/events", data=WORKER_EVENT, headers=JSON
            ) as response:
                return response.status, await response.read()

        async def readyz() -> tuple[int, dict[str, Any]]:
            async with session.get(serve.admin + "/readyz") as response:
                return response.status, orjson.loads(await response.read())

        async def upstream_has(count: int) -> bool:
            async with session.get(upstream + "/_emulator/events") as response:
                return len(orjson.loads(await response.read())) == count

        in_flight = asyncio.create_task(post())
        await eventually(lambda: upstream_has(1))  # the upstream holds it for 3 s
        serve.signal(signal.SIGTERM)

        async def draining() -> bool:
            status, body = await readyz()
            return status == 503 and body["status"] == "draining"

        await eventually(draining)
        during_drain = asyncio.create_task(post())
        await eventually(lambda: upstream_has(2))
        assert not in_flight.done()

        status, body = await in_flight
        assert status == 200, body
        assert orjson.loads(body)["status"] == "ok"
        status, body = await during_drain
        assert status == 200, body
        assert await serve.wait() == 0
    finally:
        await serve.stop()
    assert "shutting down" in serve.output
    assert "stopped" in serve.output
    with socket.socket() as probe:
        port = int(serve.proxy.rsplit(":", 1)[1])
        assert probe.connect_ex(("127.0.0.1", port)) != 0


async def test_sigterm_with_a_hanging_upstream_answers_504_within_the_budget(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """An exchange the upstream never answers gets 504 before the shutdown budget ends."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    serve = await serve_with_lifecycle(tmp_path, upstream, drain=0, budget=1)
    try:
        async with session.post(upstream + "/_emulator/faults", json={"hang": True}) as response:
            assert response.status == 200
        async with asyncio.timeout(10):
            request = asyncio.create_task(
                session.post(serve.proxy + "/api/events", data=WORKER_EVENT, headers=JSON)
            )

            async def upstream_has_it() -> bool:
                async with session.get(upstream + "/_emulator/faults") as response:
                    return bool(orjson.loads(await response.read())["counters"].get("hang"))

            await eventually(upstream_has_it)
            serve.signal(signal.SIGTERM)
            async with await request as response:
                assert response.status == 504
                assert orjson.loads(await response.read())["code"] == "upstream_timeout"
        assert await serve.wait() == 0
    finally:
        await serve.stop()
    assert "the proxy is shutting down and the upstream has not answered yet" in serve.output


async def test_sighup_reloads_the_configuration(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """SIGHUP re-reads the configuration even when no file changed (a new generation)."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    serve = await ServeProcess.start(
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        env={"ENVELOPE_PROXY_LIFECYCLE__DRAIN_SECONDS": "0"},
    )
    try:
        serve.signal(signal.SIGHUP)
        await wait_for(lambda: "config reload (SIGHUP) applied" in serve.output)
        async with session.get(serve.admin + "/readyz") as response:
            ready = orjson.loads(await response.read())
        assert ready["config_generation"] == 2
        assert ready["last_reload"]["ok"] is True
        serve.signal(signal.SIGTERM)
        assert await serve.wait() == 0
    finally:
        await serve.stop()


async def test_flags_beat_env_which_beats_the_file(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """`--upstream-version` wins over ENVELOPE_PROXY_UPSTREAM__VERSION, which wins over the file."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"upstream:\n  url: {upstream}\n  version: '2.9.0'\nlifecycle:\n  drain_seconds: 0\n",
        encoding="utf-8",
    )
    args = ("--config", str(config), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0")
    env = {"ENVELOPE_PROXY_UPSTREAM__VERSION": "v2", "ENVELOPE_PROXY_LIMITS__MAX_INFLIGHT": "9"}
    for extra, target in (((), "executor_event"), (("--upstream-version", "v1"), "event_request")):
        serve = await ServeProcess.start(*args, *extra, env=env)
        try:
            async with session.get(serve.admin + "/readyz") as response:
                assert orjson.loads(await response.read())["target"] == target
            async with session.get(serve.admin + "/config") as response:
                assert orjson.loads(await response.read())["limits"]["max_inflight"] == 9
            serve.signal(signal.SIGTERM)
            assert await serve.wait() == 0
        finally:
            await serve.stop()


def test_invalid_configuration_exits_2_naming_the_setting(tmp_path: Path) -> None:
    """A bad value stops `serve` before it listens, with the setting and its source named."""
    config = tmp_path / "config.yaml"
    config.write_text("upstream:\n  version: 2.10\nworkerz: 2\n", encoding="utf-8")
    result = subprocess.run(
        cli("serve", "--config", str(config)),
        cwd=REPO_ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "upstream.version: write the release as a quoted string" in result.stderr
    assert f"workerz: unknown setting [from config file {config}]" in result.stderr


async def test_workers_share_one_port_and_stop_together(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """`--workers 2` runs two processes on one port that both serve traffic and mint event ids
    with machine ids of their own (wrapping at 1023); worker 0 serves admin, whose `/clients`
    says it is partial; SIGTERM stops both."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    serve = await serve_two_workers(
        upstream,
        {
            "ENVELOPE_PROXY_LIFECYCLE__DRAIN_SECONDS": "0",
            "ENVELOPE_PROXY_ENVELOPE__MACHINE_ID": "1023",
        },
    )
    try:
        await wait_for(lambda: serve.output.count("listening on") == 2, within=30)
        # A fresh connection each time: the kernel spreads connections, not requests. With
        # 20 of them, both workers are reached unless the odds (2 in a million) say otherwise.
        for _ in range(20):
            async with (
                aiohttp.ClientSession() as fresh,
                fresh.post(
                    serve.proxy + "/api/events", data=WORKER_EVENT, headers=JSON
                ) as response,
            ):
                assert response.status == 200
        async with session.get(upstream + "/_emulator/events") as response:
            stored = orjson.loads(await response.read())
        assert len(stored) == 20
        assert len({row["event_id"] for row in stored}) == 20
        assert {(row["event_id"] >> 12) & 1023 for row in stored} == {1023, 0}
        async with session.get(serve.admin + "/clients") as response:
            clients = orjson.loads(await response.read())
        assert clients["partial"] is True
        assert clients["ready_to_sunset_v1"] is None
        serve.signal(signal.SIGTERM)
        assert await serve.wait() == 0
    finally:
        await serve.stop()
    assert serve.output.count("admin none in worker 1") == 1
    assert "worker 0 mints event ids with machine id 1023" in serve.output
    assert "worker 1 mints event ids with machine id 0" in serve.output
    assert serve.output.count("stopped") == 2


def test_python_m_proxy_has_the_serve_command() -> None:
    """`python -m proxy serve --help` lists the serve flags."""
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    for flag in ("--config", "--listen", "--admin-listen", "--upstream", "--upstream-version"):
        assert flag in result.stdout
    for flag in ("--probe-interval", "--rules", "--workers"):
        assert flag in result.stdout


async def test_sigterm_cuts_open_pass_through_streams_within_the_budget(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A server-sent-events stream that would run for a minute does not hold shutdown past
    its budget: the stream is cut and the process exits in about `shutdown_timeout`."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    serve = await serve_with_lifecycle(tmp_path, upstream, drain=0, budget=3)
    try:
        stream_url = serve.proxy + "/api/executions/478775660589088776/stream?count=300"
        async with session.get(stream_url) as stream:
            assert stream.status == 200
            await stream.content.readuntil(b"\n\n")  # the stream is flowing
            started = asyncio.get_running_loop().time()
            serve.signal(signal.SIGTERM)
            with contextlib.suppress(aiohttp.ClientPayloadError):
                async with asyncio.timeout(10):
                    while await stream.content.readany():
                        pass
            assert await serve.wait() == 0
            elapsed = asyncio.get_running_loop().time() - started
        assert elapsed < 5  # the 3 s budget and process exit; not twice the budget
    finally:
        await serve.stop()
    assert "cutting 1 pass-through request(s) still open" in serve.output


async def test_a_signal_to_the_whole_group_still_drains_with_workers(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Ctrl-C in a terminal signals every process of the group: each worker then gets the
    signal twice (directly and from the parent), which must not count as a second signal."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    serve = await serve_two_workers(upstream, {"ENVELOPE_PROXY_LIFECYCLE__DRAIN_SECONDS": "2"})
    try:
        await wait_for(lambda: serve.output.count("listening on") == 2, within=30)
        started = asyncio.get_running_loop().time()
        serve.signal_group(signal.SIGTERM)
        assert await serve.wait() == 0
        assert asyncio.get_running_loop().time() - started >= 1.9  # the drain was served
    finally:
        await serve.stop()
