"""Upstream version: probed (`auto`) or pinned, and what `/readyz` says about it."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson
import pytest

from proxy.emulator import create_emulator_app
from tests.functional.server_support import (
    ServerFactory,
    closed_port_url,
    settings_for,
    start_proxy,
    start_stack,
    stored_body,
    wait_for,
)
from tests.samples import sample_bytes

WORKER_EVENT = sample_bytes("worker_event__command_started")


async def test_probe_switches_target_when_the_upstream_is_upgraded(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A 2.9.0 upstream gets event_request; after it reports 3.83.1 it gets executor_event."""
    stack = await start_stack(aiohttp_server, session, "rust-2.9.0")
    status, ready = await stack.readyz()
    assert status == 200
    assert (ready["target"], ready["upstream_version"]) == ("event_request", "2.9.0")
    response, _ = await stack.post("/api/events", WORKER_EVENT)
    assert response.headers["X-Envelope-Target"] == "event_request"

    await stack.set_profile("rust-2.19.1", "3.83.1")
    await wait_for(lambda: stack.state.snapshot.target == "executor_event")
    response, _ = await stack.post("/api/events", WORKER_EVENT)
    assert response.status == 200
    assert response.headers["X-Envelope-Target"] == "executor_event"
    first, second = await stack.stored()
    assert orjson.loads(stored_body(first))["execution_id"] == "478775660589088776"
    assert orjson.loads(stored_body(second))["execution_id"] == 478775660589088776
    assert stack.recorder.targets[-2:] == [
        ("event_request", "2.9.0"),
        ("executor_event", "3.83.1"),
    ]
    status, ready = await stack.readyz()
    assert (ready["target"], ready["upstream_version"]) == ("executor_event", "3.83.1")


async def test_version_is_read_from_a_503_health_answer(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A Rust upstream with its database down answers 503 with its version: that counts."""
    stack = await start_stack(aiohttp_server, session, "rust-2.9.0")
    await stack.fault(store_down=True)
    await stack.set_profile("rust-2.19.1", "3.83.1")
    await wait_for(lambda: stack.state.snapshot.upstream_version == "3.83.1")
    assert stack.state.snapshot.target == "executor_event"
    status, _ = await stack.readyz()
    assert status == 200


async def test_unversioned_python_upstream_gets_event_request(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """The Python server's health has no version: legacy target, and the proxy is ready."""
    stack = await start_stack(aiohttp_server, session, "python")
    status, ready = await stack.readyz()
    assert status == 200
    assert ready["target"] == "event_request"
    assert ready["upstream_version"] is None
    assert ready["upstream_reached"] is True


async def test_not_ready_until_the_upstream_answers_once(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """With the upstream down at start: alive, not ready, legacy target; events get 502."""
    proxy, admin, state, _ = await start_proxy(aiohttp_server, settings_for(closed_port_url()))
    async with session.get(admin + "/healthz") as response:
        assert response.status == 200
    async with session.get(admin + "/readyz") as response:
        assert response.status == 503
        body = orjson.loads(await response.read())
    assert body["status"] == "waiting_for_upstream"
    assert body["target"] == "event_request"
    assert body["rules_digest"] == state.snapshot.rules.digest
    async with session.post(
        proxy + "/api/events", data=WORKER_EVENT, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 502


@pytest.mark.parametrize(
    ("version", "target", "reported"),
    [
        ("v1", "event_request", None),
        ("v2", "executor_event", None),
        ("2.9.0", "event_request", "2.9.0"),
        ("2.19.1", "executor_event", "2.19.1"),
    ],
)
async def test_pinned_version_needs_no_probe(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    version: str,
    target: str,
    reported: str | None,
) -> None:
    """A pinned version or release decides the target and readiness without any upstream."""
    settings = settings_for(closed_port_url(), {"upstream.version": version})
    _, admin, _, recorder = await start_proxy(aiohttp_server, settings)
    async with session.get(admin + "/readyz") as response:
        assert response.status == 200
        body = orjson.loads(await response.read())
    assert (body["target"], body["upstream_version"], body["upstream_reached"]) == (
        target,
        reported,
        False,
    )
    assert recorder.targets == [(target, reported)]


async def test_admin_serves_config_redacted_and_extension_routes(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """/config shows the effective settings without credentials; extension routes are mounted."""
    settings = settings_for(
        "http://127.0.0.1:9",
        {
            "upstream.version": "v1",
            "limits.max_inflight": 7,
            "tracing.otlp_endpoint": "http://ops:hunter2@127.0.0.1:4318",
        },
    )
    _, admin, _, _ = await start_proxy(aiohttp_server, settings)
    async with session.get(admin + "/config") as response:
        assert response.status == 200
        shown = await response.read()
    config = orjson.loads(shown)
    assert config["tracing"]["otlp_endpoint"] == "http://***@127.0.0.1:4318"
    assert config["limits"]["max_inflight"] == 7
    assert b"hunter2" not in shown
    async with session.get(admin + "/recorder") as response:
        assert response.status == 200


async def test_probe_warning_never_prints_url_credentials(
    aiohttp_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Even a URL with credentials (which the settings refuse) is logged redacted."""
    url = closed_port_url().replace("http://", "http://ops:hunter2@")
    valid = settings_for(closed_port_url())
    # Past validation on purpose: the log line must not depend on the settings' refusal.
    settings = valid.model_copy(update={"upstream": valid.upstream.model_copy(update={"url": url})})
    with caplog.at_level(logging.WARNING, logger="proxy.server.version"):
        await start_proxy(aiohttp_server, settings)
    assert "upstream health probe http://***@127.0.0.1:" in caplog.text
    assert "hunter2" not in caplog.text


async def test_an_upstream_that_starts_after_the_proxy_makes_it_ready_at_once(
    aiohttp_server: ServerFactory,
) -> None:
    """A sidecar starts before its server: until the upstream has answered once, the probe
    retries within a second or so, not only every `probe_interval_seconds` (30 s here)."""
    url = closed_port_url()
    settings = settings_for(url, {"upstream.probe_interval_seconds": 30})
    _, _, state, _ = await start_proxy(aiohttp_server, settings)
    assert not state.ready()
    await asyncio.sleep(1.0)  # a few quick probes fail meanwhile
    port = int(url.rsplit(":", 1)[1])
    await aiohttp_server(create_emulator_app("rust-2.19.1", fast=True), port=port)
    await wait_for(state.ready, within=5)
    assert state.snapshot.target == "executor_event"
