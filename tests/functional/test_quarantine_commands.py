"""`envelope-proxy quarantine list | show | check | replay` against a real quarantine.

A proxy runs with rules that lack the emit_request shape, so the emit_request bodies a
producer sends are refused and quarantined; the fixed rules (the built-in ones) accept
them. `check` says so without sending anything; `replay` sends each record to the
emulator once, also across a replay killed while a request was in flight.
"""

from __future__ import annotations

import asyncio
import base64
import os
import pty
import shutil
import signal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from proxy.cli import main
from proxy.quarantine.journal import IN_FLIGHT, JOURNAL_NAME, read_states
from tests.functional.cutover_support import CutoverStack, start_cutover_stack
from tests.functional.server_support import (
    ServerFactory,
    cli,
    cli_env,
    closed_port_url,
    eventually,
)
from tests.samples import REPO_ROOT

STEPS = [f"step-{n}" for n in range(6)]
STILL_BAD = b'{"hello":"world"}'
# Over the proxy's batch limit of 1 item, within the default limit the fix restores.
BATCH = (
    b'{"execution_id":"321079436235509760","events":[{"step":"batch-0","event_type":"e"},'
    b'{"step":"batch-1","event_type":"e"}]}'
)
ALL_STEPS = sorted([*STEPS, "batch-0", "batch-1"])


def emit_body(step: str) -> bytes:
    return b'{"execution_id":"478775660589088776","event_type":"call.done","node_name":"%s"}' % (
        step.encode()
    )


def strict_rules(directory: Path) -> Path:
    """The built-in rules without the emit_request shape (the rules "before the fix")."""
    shutil.copytree(REPO_ROOT / "rules", directory, ignore=shutil.ignore_patterns("tests"))
    shapes = directory / "shapes.yaml"
    data = yaml.safe_load(shapes.read_text(encoding="utf-8"))
    data["order"].remove("emit_request")
    del data["shapes"]["emit_request"]
    shapes.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return directory


async def quarantined_stack(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> tuple[CutoverStack, Path]:
    store = tmp_path / "quarantine"
    rules = await asyncio.to_thread(strict_rules, tmp_path / "strict-rules")
    config = {
        "rules_dir": str(rules),
        "limits": {"batch_max_items": 1},
        "quarantine": {"enabled": True, "dir": str(store)},
    }
    stack = await start_cutover_stack(aiohttp_server, session, config)
    for step in STEPS:
        assert (await stack.post(emit_body(step), client="old-broker"))[0] == 422
    assert (await stack.post(BATCH, client="batcher", path="/api/events/batch"))[0] == 413
    assert (await stack.post(STILL_BAD, client="junk"))[0] == 422

    async def written() -> bool:
        async with session.get(stack.admin + "/rejections") as response:
            return len((await response.json())["records"]) == len(STEPS) + 2

    await eventually(written)
    return stack, store


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *cli(*args),
        cwd=REPO_ROOT,
        env=cli_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def stored_steps(stack: CutoverStack) -> list[str]:
    """The step of each event the emulator stored (a batch's items in turn), in order."""
    steps = []
    for body in await stack.stored_bodies():
        data = orjson.loads(body)
        steps += [item["step"] for item in data["events"]] if "events" in data else [data["step"]]
    return steps


async def test_list_show_and_check_without_sending_anything(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack, store = await quarantined_stack(aiohttp_server, session, tmp_path)
    args = ["quarantine", "list", "--dir", str(store), "--output", "json"]
    assert await asyncio.to_thread(main, args) == 0
    listed = orjson.loads(capsys.readouterr().out)["records"]
    assert [r["client"] for r in listed] == ["junk", "batcher"] + ["old-broker"] * len(STEPS)
    assert {r["code"] for r in listed} == {"unknown_shape", "batch_too_large"}
    assert await asyncio.to_thread(main, [*args, "--limit", "2"]) == 0
    page = orjson.loads(capsys.readouterr().out)
    assert (page["records"], page["more"]) == (listed[:2], True)
    assert await asyncio.to_thread(main, [*args, "--client", "junk"]) == 0
    assert len(orjson.loads(capsys.readouterr().out)["records"]) == 1
    assert await asyncio.to_thread(main, ["quarantine", "list", "--dir", str(store)]) == 0
    table = capsys.readouterr().out.splitlines()
    header = "ID RECEIVED CLIENT PATH SHAPE CODE FIELD BYTES"
    assert table[0].split() == header.split()
    assert len(table) == 1 + len(STEPS) + 2

    config = tmp_path / "config.yaml"
    await asyncio.to_thread(
        config.write_text, f"quarantine:\n  enabled: true\n  dir: {store}\n", encoding="utf-8"
    )
    by_config = ["quarantine", "list", "--config", str(config), "--output", "json"]
    assert await asyncio.to_thread(main, by_config) == 0
    assert orjson.loads(capsys.readouterr().out)["records"] == listed
    assert await asyncio.to_thread(main, ["quarantine", "list"]) == 2
    assert "give --dir or a config with quarantine.dir" in capsys.readouterr().err

    last = listed[-1]["id"]
    show = ["quarantine", "show", last, "--dir", str(store)]
    assert await asyncio.to_thread(main, show) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert base64.b64decode(shown["body_b64"]) == emit_body(STEPS[0])

    check = ["quarantine", "check", "--dir", str(store), "--output", "json"]
    assert await asyncio.to_thread(main, check) == 0
    results = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    accepted = [r for r in results if r["accepted"] and r["shape"] == "emit_request"]
    assert sorted(r["converted"]["step"] for r in accepted) == STEPS
    (batch,) = [r for r in results if r["accepted"] and r["shape"] == "batch"]
    assert [item["step"] for item in batch["converted"]["events"]] == ["batch-0", "batch-1"]
    (refused,) = [r for r in results if not r["accepted"]]
    assert refused["code"] == "unknown_shape"
    # The strict rules still refuse everything: the dry run tells which rules fix what.
    strict = ["quarantine", "check", "--dir", str(store), "--rules", str(tmp_path / "strict-rules")]
    assert await asyncio.to_thread(main, strict) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("1 would now be accepted, 7 still")  # the batch: default limits
    assert await stack.stored_bodies() == []  # nothing was sent


async def test_replay_sends_each_record_once(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """With the fixed rules each accepted record is stored once, converted as serve would;
    a second replay skips them all; the still-refused one is reported, not sent."""
    stack, store = await quarantined_stack(aiohttp_server, session, tmp_path)
    replay = ("quarantine", "replay", "--dir", str(store), "--upstream", stack.upstream)
    code, out, err = await run_cli(*replay, "--rate", "100")
    assert code == 0, out
    assert "sent 7, still refused 1, upstream refused 0" in out
    assert "as executor_event" in out
    assert "\r[" not in err  # no progress bar on a pipe
    assert sorted(await stored_steps(stack)) == ALL_STEPS
    code, out, _ = await run_cli(*replay, "--rate", "100")
    assert code == 0
    assert "sent 0, still refused 1" in out
    assert "already replayed 7" in out
    assert sorted(await stored_steps(stack)) == ALL_STEPS


async def test_a_replay_to_an_unreachable_upstream_sends_nothing_and_can_be_repeated(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Nothing can be sent to a closed port: every accepted record is journalled as not
    sent (not uncertain), the exit code says so, and the next replay sends them all."""
    stack, store = await quarantined_stack(aiohttp_server, session, tmp_path)
    closed = closed_port_url()
    base = ("quarantine", "replay", "--dir", str(store), "--rate", "100")
    code, out, _ = await run_cli(*base, "--upstream", closed, "--upstream-version", "2.19.1")
    assert code == 1, out
    assert "sent 0, still refused 1, upstream refused 0, upstream failed 7, uncertain 0" in out
    assert await stored_steps(stack) == []
    code, out, _ = await run_cli(*base, "--upstream", stack.upstream)
    assert code == 0, out
    assert "sent 7" in out
    assert sorted(await stored_steps(stack)) == ALL_STEPS


async def test_an_interrupted_replay_resumes_without_sending_twice(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Killed (SIGKILL) while the upstream holds a request: the resumed replay sends the
    rest and reports the in-flight one as uncertain without sending it; only
    --resend-uncertain sends it. No step is ever stored twice."""
    stack, store = await quarantined_stack(aiohttp_server, session, tmp_path)
    replay = ("quarantine", "replay", "--dir", str(store), "--upstream", stack.upstream)
    process = await asyncio.create_subprocess_exec(
        *cli(*replay, "--rate", "4"),
        cwd=REPO_ROOT,
        env=cli_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    journal = store / JOURNAL_NAME
    try:

        async def two_stored() -> bool:
            return len(await stored_steps(stack)) >= 2

        await eventually(two_stored, within=30)
        await fault(session, stack, {"hang": True})

        async def one_hanging() -> bool:
            # The emulator holds a request (the replay sends one at a time), and the
            # journal says it is in flight.
            async with session.get(stack.upstream + "/_emulator/stats") as response:
                hanging = (await response.json())["faults"].get("hang", 0) == 1
            states = await asyncio.to_thread(read_states, journal)
            return hanging and IN_FLIGHT in states.values()

        await eventually(one_hanging, within=30)
        process.send_signal(signal.SIGKILL)
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    await fault(session, stack, None)
    before = await stored_steps(stack)
    code, out, _ = await run_cli(*replay, "--rate", "100")
    assert code == 0, out
    assert "uncertain 1" in out
    after = await stored_steps(stack)
    assert len(after) == len(set(after))
    assert set(before) <= set(after) < set(ALL_STEPS)  # all but the uncertain one
    code, out, _ = await run_cli(*replay, "--rate", "100")
    assert "sent 0" in out
    assert "uncertain 1" in out
    code, out, _ = await run_cli(*replay, "--rate", "100", "--resend-uncertain")
    assert "sent 1" in out
    final = await stored_steps(stack)
    assert sorted(final) == ALL_STEPS


async def fault(
    session: aiohttp.ClientSession, stack: CutoverStack, config: dict[str, Any] | None
) -> None:
    method = session.post if config is not None else session.delete
    kwargs: dict[str, Any] = {"json": config} if config is not None else {}
    async with method(stack.upstream + "/_emulator/faults", **kwargs) as response:
        assert response.status in (200, 204), await response.text()


async def test_replay_shows_a_progress_bar_on_a_terminal(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    stack, store = await quarantined_stack(aiohttp_server, session, tmp_path)
    leader, follower = pty.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            *cli("quarantine", "replay", "--dir", str(store), "--upstream", stack.upstream),
            cwd=REPO_ROOT,
            env=cli_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=follower,
        )
        async with asyncio.timeout(60):
            out, _ = await process.communicate()
        shown = await asyncio.to_thread(os.read, leader, 65536)
    finally:
        os.close(leader)
        os.close(follower)
    assert process.returncode == 0, out
    assert b"\r[" in shown
    assert b"8/8 sent 7 refused 1" in shown
