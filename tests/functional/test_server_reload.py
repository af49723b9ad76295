"""Live reload: config file and rules directory changes apply without restart, or are refused."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from proxy.config import load_settings
from proxy.envelope import default_rules_dir
from proxy.envelope.ids import SnowflakeMinter
from tests.functional.server_support import (
    ServerFactory,
    Stack,
    closed_port_url,
    start_proxy,
    start_upstream,
    wait_for,
)
from tests.samples import sample_bytes

DEFAULT_RULES = default_rules_dir()

WORKER_EVENT = sample_bytes("worker_event__command_started")


def config_text(upstream: str, **settings: Any) -> str:
    data: dict[str, Any] = {
        "upstream": {"url": upstream, "version": "v1", "probe_interval_seconds": 0.1},
        "lifecycle": {"drain_seconds": 0},
    }
    for key, value in settings.items():
        section, _, name = key.partition("__")
        if name:
            data.setdefault(section, {})[name] = value
        else:
            data[section] = value
    return yaml.safe_dump(data)


async def reloading_stack(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    config_file: Path,
    upstream: str,
    minter: SnowflakeMinter | None = None,
) -> Stack:
    load = functools.partial(load_settings, config_file, None, {})
    settings = await asyncio.to_thread(load)
    proxy, admin, state, recorder = await start_proxy(
        aiohttp_server, settings, config_file=config_file, reload_from=load, minter=minter
    )
    return Stack(upstream, proxy, admin, state, recorder, session)


def rewrite(path: Path, text: str) -> None:
    """Replace a file atomically, as editors and config tooling do."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


async def test_rewritten_config_file_switches_target(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Changing `upstream.version` in the file applies to the next request, no restart."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    config = tmp_path / "config.yaml"
    config.write_text(config_text(upstream), encoding="utf-8")
    stack = await reloading_stack(aiohttp_server, session, config, upstream)
    assert stack.state.snapshot.target == "event_request"

    rewrite(config, config_text(upstream, upstream__version="v2"))
    await wait_for(lambda: stack.recorder.reloads == [True])
    assert stack.state.snapshot.target == "executor_event"
    response, _ = await stack.post("/api/events", WORKER_EVENT)
    assert response.headers["X-Envelope-Target"] == "executor_event"
    _, ready = await stack.readyz()
    assert ready["config_generation"] == 2
    assert ready["last_reload"]["ok"] is True


async def test_configmap_symlink_swap_is_picked_up(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Kubernetes swaps a `..data` symlink; watching the directory catches it."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    first = tmp_path / "..2026_01_01_v1"
    first.mkdir()
    (first / "config.yaml").write_text(config_text(upstream), encoding="utf-8")
    (tmp_path / "..data").symlink_to(first.name)
    config = tmp_path / "config.yaml"
    config.symlink_to("..data/config.yaml")
    stack = await reloading_stack(aiohttp_server, session, config, upstream)
    assert stack.state.snapshot.target == "event_request"

    second = tmp_path / "..2026_01_01_v2"
    second.mkdir()
    (second / "config.yaml").write_text(
        config_text(upstream, upstream__version="v2"), encoding="utf-8"
    )
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    shutil.rmtree(first)
    await wait_for(lambda: stack.state.snapshot.target == "executor_event")
    assert stack.recorder.reloads == [True]


def configmap_update(mount: Path, name: str, text: str) -> None:
    """What the kubelet does: a new dated directory, an atomic `..data` swap, old one removed."""
    dated = mount / name
    dated.mkdir()
    (dated / "config.yaml").write_text(text, encoding="utf-8")
    previous = (mount / "..data").readlink() if (mount / "..data").is_symlink() else None
    (mount / "..data_tmp").symlink_to(dated.name)
    os.replace(mount / "..data_tmp", mount / "..data")
    if previous is not None:
        shutil.rmtree(mount / previous)


async def test_back_to_back_configmap_updates_all_apply(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A second ConfigMap update right after the first is not lost with the old directory."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    configmap_update(tmp_path, "..v1", config_text(upstream))
    config = tmp_path / "config.yaml"
    config.symlink_to("..data/config.yaml")
    stack = await reloading_stack(aiohttp_server, session, config, upstream)

    configmap_update(tmp_path, "..v2", config_text(upstream, upstream__version="v2"))
    await wait_for(lambda: stack.state.snapshot.target == "executor_event")
    configmap_update(tmp_path, "..v3", config_text(upstream, upstream__version="v1"))
    await wait_for(lambda: stack.state.snapshot.target == "event_request")
    assert stack.recorder.reloads == [True, True]


async def test_invalid_config_is_refused_and_the_running_one_kept(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A broken edit is logged and reported; requests and readiness go on unchanged."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    config = tmp_path / "config.yaml"
    config.write_text(config_text(upstream), encoding="utf-8")
    stack = await reloading_stack(aiohttp_server, session, config, upstream)

    rewrite(config, config_text(upstream, upstream__version="latest"))
    await wait_for(lambda: stack.recorder.reloads == [False])
    assert stack.state.snapshot.target == "event_request"
    status, ready = await stack.readyz()
    assert status == 200
    assert ready["last_reload"]["ok"] is False
    assert ready["last_reload"]["problems"][0].startswith("upstream.version: must be")
    response, _ = await stack.post("/api/events", WORKER_EVENT)
    assert response.status == 200

    config.unlink()
    await wait_for(lambda: stack.recorder.reloads == [False, False])
    assert "cannot read it" in stack.state.last_reload.problems[0]  # type: ignore[union-attr]

    config.write_text(config_text(upstream, upstream__version="v2"), encoding="utf-8")
    await wait_for(lambda: stack.recorder.reloads == [False, False, True])
    assert stack.state.snapshot.target == "executor_event"


async def test_start_only_settings_need_a_restart(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A changed listen address is reported as needing a restart; the rest applies."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    config = tmp_path / "config.yaml"
    config.write_text(config_text(upstream), encoding="utf-8")
    stack = await reloading_stack(aiohttp_server, session, config, upstream)
    listen = stack.state.snapshot.settings.listen

    rewrite(config, config_text(upstream, listen="127.0.0.1:1", limits__max_inflight=3))
    await wait_for(lambda: stack.recorder.reloads == [True])
    _, ready = await stack.readyz()
    assert ready["last_reload"]["restart_needed"] == ["listen"]
    assert stack.state.snapshot.settings.listen == listen
    assert stack.state.snapshot.settings.limits.max_inflight == 3


async def test_a_new_upstream_url_forgets_the_old_upstreams_version(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """After a reload to another upstream, what the old one reported no longer picks the
    target: legacy and not ready until the new one answers."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    config = tmp_path / "config.yaml"
    config.write_text(config_text(upstream, upstream__version="auto"), encoding="utf-8")
    stack = await reloading_stack(aiohttp_server, session, config, upstream)
    assert stack.state.snapshot.target == "executor_event"

    rewrite(config, config_text(closed_port_url(), upstream__version="auto"))
    await wait_for(lambda: stack.recorder.reloads == [True])
    status, ready = await stack.readyz()
    assert (status, ready["upstream_reached"]) == (503, False)
    assert stack.state.snapshot.target == "event_request"
    assert stack.state.snapshot.upstream_version is None

    newer = await start_upstream(aiohttp_server, "rust-2.19.1")
    rewrite(config, config_text(newer, upstream__version="auto"))
    await wait_for(lambda: stack.state.snapshot.target == "executor_event")
    status, _ = await stack.readyz()
    assert status == 200


async def test_a_late_answer_from_the_replaced_upstream_is_ignored(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A version probe still waiting on the old upstream when a reload replaces it does not
    mark the new one reached, nor bring back the old version, when its answer comes."""
    asked = asyncio.Event()

    async def slow_health(request: web.Request) -> web.Response:
        asked.set()
        await asyncio.sleep(1.5)
        return web.json_response({"status": "ok", "version": "2.19.1"})

    old = web.Application()
    old.router.add_get("/api/health", slow_health)
    old_server = await aiohttp_server(old)
    upstream = str(old_server.make_url("")).rstrip("/")
    config = tmp_path / "config.yaml"
    config.write_text(config_text(upstream, upstream__version="auto"), encoding="utf-8")
    stack = await reloading_stack(aiohttp_server, session, config, upstream)
    assert stack.state.snapshot.upstream_version == "2.19.1"
    asked.clear()
    await asyncio.wait_for(asked.wait(), 5)  # a probe of the old upstream is in flight

    rewrite(config, config_text(closed_port_url(), upstream__version="auto"))
    await wait_for(lambda: stack.recorder.reloads == [True])
    await asyncio.sleep(1.7)  # the old upstream's answer has come back meanwhile
    status, ready = await stack.readyz()
    assert (status, ready["upstream_reached"]) == (503, False)
    assert stack.state.snapshot.upstream_version is None


async def test_request_in_flight_finishes_under_its_snapshot(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A reload during a slow request does not change that request; the next one sees it."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    config = tmp_path / "config.yaml"
    config.write_text(config_text(upstream), encoding="utf-8")
    stack = await reloading_stack(aiohttp_server, session, config, upstream)
    await stack.fault(delay_seconds=2.0)  # outlasts the reload on a loaded machine

    slow = asyncio.create_task(stack.post("/api/events", WORKER_EVENT))
    await wait_for(lambda: stack.state.inflight == 1)
    rewrite(config, config_text(upstream, upstream__version="v2"))
    await wait_for(lambda: stack.recorder.reloads == [True])
    assert not slow.done()
    response, _ = await slow
    assert response.status == 200
    assert response.headers["X-Envelope-Target"] == "event_request"
    response, _ = await stack.post("/api/events", WORKER_EVENT)
    assert response.headers["X-Envelope-Target"] == "executor_event"


async def test_a_change_no_watched_directory_sees_is_applied_by_the_recheck(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The config file is a symlink to a file elsewhere: editing that file sends no event
    to the watched directory, yet the once-a-second comparison applies it."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    elsewhere = tmp_path / "elsewhere"
    mounted = tmp_path / "mounted"
    elsewhere.mkdir()
    mounted.mkdir()
    real = elsewhere / "config.yaml"
    real.write_text(config_text(upstream), encoding="utf-8")
    (mounted / "config.yaml").symlink_to(real)
    stack = await reloading_stack(aiohttp_server, session, mounted / "config.yaml", upstream)
    assert stack.state.snapshot.target == "event_request"

    real.write_text(config_text(upstream, upstream__version="v2"), encoding="utf-8")
    await wait_for(lambda: stack.recorder.reloads == [True], within=5)
    assert stack.state.snapshot.target == "executor_event"


async def test_rules_directory_edits_reload_and_bad_rules_are_refused(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Editing a rule file swaps rules (new digest); a broken rule file keeps the old set."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    rules = tmp_path / "rules"
    shutil.copytree(DEFAULT_RULES, rules)
    config = tmp_path / "config.yaml"
    config.write_text(
        config_text(upstream, upstream__version="auto", rules_dir=str(rules)), encoding="utf-8"
    )
    stack = await reloading_stack(aiohttp_server, session, config, upstream)
    assert stack.state.snapshot.target == "executor_event"
    digest = stack.state.snapshot.rules.digest

    versions = rules / "versions.yaml"
    original = versions.read_text(encoding="utf-8")
    rewrite(versions, original.replace('min: "2.19.1"', 'min: "9.0.0"'))
    await wait_for(lambda: stack.recorder.reloads == [True])
    assert stack.state.snapshot.target == "event_request"
    _, ready = await stack.readyz()
    assert ready["rules_digest"] != digest

    rewrite(versions, "thresholds: [\n")
    await wait_for(lambda: stack.recorder.reloads == [True, False])
    assert stack.state.snapshot.target == "event_request"
    assert any("versions.yaml" in p for p in stack.state.last_reload.problems)  # type: ignore[union-attr]


async def test_event_ids_never_repeat_across_a_reload(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The engine a reload builds mints from the process's one minter: with its clock held
    still, the ids before and after the reload continue one sequence and none repeats; a
    changed machine id waits for a restart."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    config = tmp_path / "config.yaml"
    config.write_text(
        config_text(upstream, upstream__version="v2", envelope__machine_id=5), encoding="utf-8"
    )
    now_ms = time.time_ns() // 1_000_000
    minter = SnowflakeMinter(5, clock_ms=lambda: now_ms)
    stack = await reloading_stack(aiohttp_server, session, config, upstream, minter)
    for _ in range(3):
        response, _ = await stack.post("/api/events", WORKER_EVENT)
        assert response.status == 200

    rewrite(
        config,
        config_text(
            upstream,
            upstream__version="v2",
            envelope__machine_id=6,
            envelope__normalise_status=False,
        ),
    )
    await wait_for(lambda: stack.recorder.reloads == [True])
    assert stack.state.snapshot.settings.envelope.normalise_status is False
    _, ready = await stack.readyz()
    assert ready["last_reload"]["restart_needed"] == ["envelope.machine_id"]
    for _ in range(3):
        response, _ = await stack.post("/api/events", WORKER_EVENT)
        assert response.status == 200

    minted = [int(r.request_event_id or 0) for r in stack.recorder.records]
    assert len(set(minted)) == 6
    assert [(i >> 12) & 1023 for i in minted] == [5] * 6
    assert [i & 4095 for i in minted] == [0, 1, 2, 3, 4, 5]
    assert [row["event_id"] for row in await stack.stored()] == minted


async def test_unrelated_files_next_to_the_config_do_not_reload_or_log(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A log or state file kept in the config's directory (or a subdirectory of it) changes
    often: no reload, and nothing logged above DEBUG; the config file itself still reloads."""
    upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
    config = tmp_path / "config.yaml"
    config.write_text(config_text(upstream), encoding="utf-8")
    (tmp_path / "sub").mkdir()
    stack = await reloading_stack(aiohttp_server, session, config, upstream)
    caplog.set_level(logging.DEBUG)
    await asyncio.sleep(0.3)  # the watcher is up
    caplog.clear()
    for round_ in range(5):
        (tmp_path / "proxy.log").write_text(f"line {round_}\n" * 50, encoding="utf-8")
        (tmp_path / "sub" / "state.json").write_text(str(round_), encoding="utf-8")
        await asyncio.sleep(0.2)
    assert stack.recorder.reloads == []
    noisy = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert noisy == [], [r.getMessage() for r in noisy]
    # Not even handed to the reloader: watchfiles reports (at DEBUG) only what passed.
    delivered = [r.getMessage() for r in caplog.records if r.name.startswith("watchfiles")]
    assert not any("proxy.log" in m or "state.json" in m for m in delivered), delivered

    rewrite(config, config_text(upstream, upstream__version="v2"))
    await wait_for(lambda: stack.recorder.reloads == [True])
    watchfiles_lines = [r for r in caplog.records if r.name.startswith("watchfiles")]
    assert all(r.levelno < logging.INFO for r in watchfiles_lines)
