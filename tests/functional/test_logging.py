"""Logging of a real `serve` process: JSON lines, the access log, levels, trace ids."""

from __future__ import annotations

import asyncio
import signal
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
    cli_env,
    start_upstream,
)
from tests.otlp_receiver import OtlpReceiver
from tests.samples import REPO_ROOT, sample_bytes

WORKER_EVENT = sample_bytes("worker_event__command_started")
SECRET = "s3cr3t-value"


async def serve_logging(upstream: str, **env: str) -> ServeProcess:
    return await ServeProcess.start(
        "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--upstream", upstream, env=env
    )


async def test_json_format_and_access_log_one_line_per_request(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Every line is JSON; each request gets one access line without bodies or credentials."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    serve = await serve_logging(
        upstream, ENVELOPE_PROXY_LOG__FORMAT="json", ENVELOPE_PROXY_LOG__ACCESS="true"
    )
    try:
        headers = {**JSON, "X-NoETL-Client": "team-a", "Authorization": f"Bearer {SECRET}"}
        async with session.post(serve.proxy + "/api/events", data=WORKER_EVENT, headers=headers):
            pass
        async with session.post(serve.proxy + "/api/events", data=b"[1]", headers=JSON) as refused:
            assert refused.status == 422
        async with session.get(serve.proxy + f"/api/health?token={SECRET}") as health:
            assert health.status == 200
        serve.signal(signal.SIGTERM)
        assert await serve.wait() == 0
    finally:
        await serve.stop()
    records = [orjson.loads(line) for line in serve.lines if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    access = [r for r in records if r["logger"] == "proxy.server.access_log"]
    assert len(access) == 3, access
    event, bad, passthrough = access
    assert event["method"] == "POST"
    assert event["route"] == "/api/events"
    assert event["status"] == 200
    assert event["shape"] == "worker_event"
    assert event["target"] == "executor_event"
    assert event["client"] == "team-a"
    assert event["event_id"].isdigit()
    assert event["duration_ms"] > 0
    assert event["peer"] == "127.0.0.1"
    assert (bad["status"], bad["error"]) == (422, "not_an_object")
    assert "event_id" not in bad
    assert (passthrough["route"], passthrough["path"]) == ("(pass-through)", "/api/health")
    assert SECRET not in serve.output
    assert b"command.started" not in serve.output.encode()


async def test_text_format_without_access_log_is_the_default(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Without log settings: the classic text lines and no access line."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    serve = await serve_logging(upstream)
    try:
        async with session.post(serve.proxy + "/api/events", data=WORKER_EVENT, headers=JSON):
            pass
        serve.signal(signal.SIGTERM)
        assert await serve.wait() == 0
    finally:
        await serve.stop()
    assert " INFO proxy.server.runner: envelope-proxy listening on " in serve.output
    assert not serve.output.startswith("{")
    assert "proxy.server.access_log" not in serve.output


def run_logging(code: str, **env: str) -> list[str]:
    """Run `code` after the proxy's logging setup in a fresh interpreter; its stderr lines."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=cli_env(**env),
        capture_output=True,
        timeout=60,
        check=True,
    )
    return result.stderr.decode().splitlines()


SETUP = (
    "import logging\n"
    "from proxy.config import load_settings\n"
    "from proxy.server.logs import configure_logging\n"
    "configure_logging(load_settings(None).log)\n"
    "log = logging.getLogger('proxy.test')\n"
)


def test_level_hides_records_below_it() -> None:
    """`log.level: warning` drops INFO records and keeps warnings."""
    lines = run_logging(
        SETUP + "log.info('hidden')\nlog.warning('shown')\n", ENVELOPE_PROXY_LOG__LEVEL="WARNING"
    )
    assert len(lines) == 1
    assert lines[0].endswith("WARNING proxy.test: shown")


def test_records_inside_a_span_carry_its_trace_and_span_ids() -> None:
    """With tracing on, a record logged inside a span names the span's trace and span ids."""
    code = SETUP + (
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "tracer = TracerProvider().get_tracer('t')\n"
        "log.info('outside')\n"
        "with tracer.start_as_current_span('s') as span:\n"
        "    c = span.get_span_context()\n"
        "    log.info('inside %032x %016x', c.trace_id, c.span_id)\n"
    )
    outside, inside = (
        orjson.loads(line) for line in run_logging(code, ENVELOPE_PROXY_LOG__FORMAT="json")
    )
    assert "trace_id" not in outside
    _, trace_id, span_id = inside["message"].split()
    assert (inside["trace_id"], inside["span_id"]) == (trace_id, span_id)
    [text] = run_logging(code.replace("log.info('outside')\n", ""))
    trace_id, span_id = text.split(": inside ", 1)[1].split()[:2]
    assert text.endswith(f"trace_id={trace_id} span_id={span_id}")


def test_an_unknown_format_is_a_config_error() -> None:
    """`log.format` is text or json; anything else is refused naming the variable."""
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve"],
        env=cli_env(ENVELOPE_PROXY_LOG__FORMAT="yaml"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    problems: Any = result.stderr.decode()
    assert "log.format:" in problems
    assert "ENVELOPE_PROXY_LOG__FORMAT" in problems


async def test_text_access_line_says_each_field_once(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """In text, the access message names method, route, status and time; the rest follow."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    serve = await serve_logging(upstream, ENVELOPE_PROXY_LOG__ACCESS="true")
    try:
        async with session.post(serve.proxy + "/api/events", data=WORKER_EVENT, headers=JSON):
            pass
        serve.signal(signal.SIGTERM)
        assert await serve.wait() == 0
    finally:
        await serve.stop()
    [line] = [line for line in serve.lines if " proxy.server.access_log: " in line]
    message = line.split(" proxy.server.access_log: ", 1)[1]
    assert message.startswith("POST /api/events 200 ")
    assert " shape=worker_event target=executor_event " in message
    assert "method=" not in message
    assert "status=" not in message


async def test_access_line_names_the_server_span_when_tracing_is_on(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, receiver: OtlpReceiver
) -> None:
    """With tracing on, an event's access line carries its server span's trace and span ids."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    serve = await serve_logging(
        upstream,
        ENVELOPE_PROXY_LOG__FORMAT="json",
        ENVELOPE_PROXY_LOG__ACCESS="true",
        ENVELOPE_PROXY_TRACING__OTLP_ENDPOINT=receiver.endpoint,
    )
    try:
        async with session.post(
            serve.proxy + "/api/events", data=WORKER_EVENT, headers=JSON
        ) as response:
            assert response.status == 200
        serve.signal(signal.SIGTERM)
        assert await serve.wait() == 0
    finally:
        await serve.stop()
    spans = await receiver.wait_for(lambda s: any(x.kind == "SERVER" for x in s))
    [server] = [span for span in spans if span.kind == "SERVER"]
    records = [orjson.loads(line) for line in serve.lines if line.strip()]
    [access] = [r for r in records if r["logger"] == "proxy.server.access_log"]
    assert (access["trace_id"], access["span_id"]) == (server.trace_id, server.span_id)
    assert access["event_id"] == server.attributes["noetl.event_id"]


async def test_a_level_set_for_proxy_reaches_every_subpackage_and_no_library(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """`log.levels: {proxy: info}` over `log.level: error` lets INFO and WARNING through from
    `proxy.server.*` and `proxy.observability.*`, not from aiohttp; a child keeps its own."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    unreadable = tmp_path / "ledger"
    unreadable.mkdir()  # a directory where the ledger file should be: warned, started empty
    levels = {"proxy": "info", "proxy.server.access_log": "warning"}
    serve = await serve_logging(
        upstream,
        ENVELOPE_PROXY_LOG__FORMAT="json",
        ENVELOPE_PROXY_LOG__LEVEL="error",
        ENVELOPE_PROXY_LOG__LEVELS=orjson.dumps(levels).decode(),
        ENVELOPE_PROXY_LOG__ACCESS="true",
        ENVELOPE_PROXY_CLIENTS__STATE_FILE=str(unreadable),
    )
    try:
        async with session.post(serve.proxy + "/api/events", data=WORKER_EVENT, headers=JSON):
            pass
        # A malformed request: aiohttp.server logs it at INFO, below the root's level.
        await send_a_folded_header(serve.proxy)
        serve.signal(signal.SIGTERM)
        assert await serve.wait() == 0
    finally:
        await serve.stop()
    records = [orjson.loads(line) for line in serve.lines if line.strip()]
    seen = {(r["logger"], r["level"]) for r in records}
    assert ("proxy.server.runner", "INFO") in seen, records
    assert ("proxy.server.state", "INFO") in seen, records
    assert ("proxy.observability.store", "WARNING") in seen, records
    assert [r for r in records if not r["logger"].startswith("proxy.")] == []
    assert not [r for r in records if r["logger"] == "proxy.server.access_log"]


def test_a_child_logger_level_stands_on_its_own() -> None:
    """`log.levels` can open one logger (the access log) while the rest stays at `log.level`."""
    code = SETUP + (
        "logging.getLogger('proxy.server.access_log').info('access shown')\n"
        "logging.getLogger('proxy.server.runner').info('runner hidden')\n"
        "logging.getLogger('proxy.server.runner').warning('runner shown')\n"
    )
    lines = run_logging(
        code,
        ENVELOPE_PROXY_LOG__LEVEL="warning",
        ENVELOPE_PROXY_LOG__LEVELS='{"proxy.server.access_log": "INFO"}',
    )
    assert [line.split(" ", 2)[2] for line in lines] == [
        "INFO proxy.server.access_log: access shown",
        "WARNING proxy.server.runner: runner shown",
    ]


async def send_a_folded_header(proxy: str) -> None:
    """A request with an obsolete folded header line, which the server refuses 400."""
    host, port = proxy.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /api/health HTTP/1.1\r\nHost: p\r\nX-A: 1\r\n  folded\r\n\r\n")
    async with asyncio.timeout(5):
        assert (await reader.readline()).endswith(b" 400 Bad Request\r\n")
    writer.close()


async def test_a_malformed_request_gets_an_access_line_and_no_error(
    aiohttp_server: ServerFactory,
) -> None:
    """A request refused before routing is access-logged like any other, not as a crash."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    serve = await serve_logging(
        upstream, ENVELOPE_PROXY_LOG__FORMAT="json", ENVELOPE_PROXY_LOG__ACCESS="true"
    )
    try:
        await send_a_folded_header(serve.proxy)
        serve.signal(signal.SIGTERM)
        assert await serve.wait() == 0
    finally:
        await serve.stop()
    records = [orjson.loads(line) for line in serve.lines if line.strip()]
    assert [r for r in records if r["level"] == "ERROR"] == []
    [access] = [r for r in records if r["logger"] == "proxy.server.access_log"]
    assert access["status"] == 400
    assert "route" not in access
