"""Fault injection on the event endpoints of a real emulator: each mode, seeds, counters."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from proxy.emulator import create_emulator_app
from tests.samples import sample_bytes

Client = TestClient[Any, Any]
ClientFactory = Callable[[TestServer], Awaitable[Client]]
ServerFactory = Callable[..., Awaitable[TestServer]]
JSON = {"Content-Type": "application/json"}
EVENT = sample_bytes("rust_event_request__minimal_defaults")


@pytest.fixture
def start(aiohttp_server: ServerFactory, aiohttp_client: ClientFactory) -> Any:
    async def _start(profile: str = "rust-2.19.1", **faults: Any) -> Client:
        client = await aiohttp_client(await aiohttp_server(create_emulator_app(profile)))
        if faults:
            response = await client.post("/_emulator/faults", json=faults)
            assert response.status == 200, await response.text()
        return client

    return _start


async def stored(client: Client) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await (await client.get("/_emulator/events")).json()
    return rows


async def counters(client: Client) -> dict[str, int]:
    snapshot = await (await client.get("/_emulator/faults")).json()
    result: dict[str, int] = snapshot["counters"]
    return result


async def test_injected_status_is_python_style_with_retry_after(start: Any) -> None:
    """An injected 503 carries `Retry-After` and the saturation body; nothing is stored."""
    client = await start(status=503, retry_after=1)
    response = await client.post("/api/events", data=EVENT, headers=JSON)
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert await response.json() == {"detail": {"code": "pool_saturated"}}
    assert await stored(client) == []
    requests = await (await client.get("/_emulator/requests")).json()
    assert [(r["status"], r["fault"]) for r in requests] == [(503, "status 503")]
    assert (await client.get("/api/health")).status == 200  # faults touch event routes only
    assert (await counters(client))["status"] == 1


async def test_seeded_rate_is_reproducible(start: Any) -> None:
    """With a seed, which requests get the fault follows `random.Random(seed)` exactly."""
    rng = random.Random(7)
    expected = [500 if rng.random() < 0.5 else 200 for _ in range(40)]
    for _ in range(2):
        client = await start(status=500, rate=0.5, seed=7)
        statuses = []
        for _ in range(40):
            response = await client.post("/api/events", data=EVENT, headers=JSON)
            await response.read()
            statuses.append(response.status)
        assert statuses == expected
        assert (await counters(client))["status"] == expected.count(500)
        assert len(await stored(client)) == expected.count(200)


async def test_delay_answers_late_after_processing(start: Any) -> None:
    """A delayed request is processed at once and answered after the delay."""
    client = await start(delay_seconds=0.3)
    began = time.monotonic()
    response = await client.post("/api/events", data=EVENT, headers=JSON)
    assert response.status == 200
    assert time.monotonic() - began >= 0.3
    assert len(await stored(client)) == 1
    assert (await counters(client))["delay"] == 1


@pytest.mark.parametrize(("store_before_drop", "kept"), [(False, 0), (True, 1)])
async def test_drop_after_read(start: Any, store_before_drop: bool, kept: int) -> None:
    """The connection closes without an answer; the event is stored only if asked to."""
    client = await start(drop_after_read=1.0, store_before_drop=store_before_drop)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.post("/api/events", data=EVENT, headers=JSON)
    assert len(await stored(client)) == kept
    assert (await counters(client))["drop_after_read"] == 1
    await client.delete("/_emulator/faults")
    assert (await client.post("/api/events", data=EVENT, headers=JSON)).status == 200


async def test_store_down_fails_events_like_each_server(start: Any) -> None:
    """Without the database Rust answers 500 JSON, Python 503 with `Retry-After`."""
    rust = await start(store_down=True)
    response = await rust.post("/api/events", data=EVENT, headers=JSON)
    assert response.status == 500
    body = await response.json()
    assert body["status"] == 500
    assert body["error"].startswith("Database error:")
    python = await start("python", store_down=True)
    response = await python.post("/api/events", data=EVENT, headers=JSON)
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert await response.json() == {"detail": {"code": "db_unavailable"}}
    assert (await counters(python))["store_down"] == 1


async def test_hang_never_answers(start: Any) -> None:
    """A hung request gets no answer; the emulator keeps serving everything else."""
    client = await start(hang=True)
    with pytest.raises(TimeoutError):
        await client.post(
            "/api/events", data=EVENT, headers=JSON, timeout=aiohttp.ClientTimeout(total=0.5)
        )
    assert (await client.get("/api/health")).status == 200
    assert (await counters(client))["hang"] == 1
    assert await stored(client) == []
    await client.delete("/_emulator/faults")
    assert (await client.post("/api/events", data=EVENT, headers=JSON)).status == 200


@pytest.mark.parametrize(
    "config",
    [
        {"statuz": 503},
        {"status": 99},
        {"rate": 1.5},
        {"hang": "yes"},
        {"delay_seconds": -1},
        ["status"],
    ],
)
async def test_unclear_fault_configurations_are_refused(start: Any, config: Any) -> None:
    """A typo or an out-of-range value is a 400, and the previous configuration stays."""
    client = await start(status=418)
    response = await client.post("/_emulator/faults", data=json.dumps(config))
    assert response.status == 400
    assert "error" in await response.json()
    assert (await (await client.get("/_emulator/faults")).json())["config"]["status"] == 418
