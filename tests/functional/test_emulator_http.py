"""The emulator over HTTP: health per profile, profile switch, batches, claims, dedup,
idempotency, the event listings and both stores."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from proxy.emulator import create_emulator_app
from tests.samples import sample_bytes

Client = TestClient[Any, Any]
ClientFactory = Callable[[TestServer], Awaitable[Client]]
ServerFactory = Callable[..., Awaitable[TestServer]]
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def start(aiohttp_server: ServerFactory, aiohttp_client: ClientFactory) -> Any:
    async def _start(profile: str, **options: Any) -> Client:
        return await aiohttp_client(await aiohttp_server(create_emulator_app(profile, **options)))

    return _start


async def post(client: Client, path: str, content: Any, **headers: str) -> tuple[int, Any]:
    body = content if isinstance(content, bytes) else json.dumps(content).encode()
    response = await client.post(path, data=body, headers={**JSON, **headers})
    return response.status, json.loads(await response.read())


@pytest.mark.parametrize(
    ("profile", "version", "nats"),
    [
        ("rust-1.0.3", "1.0.3", "not_configured"),
        ("rust-2.9.0", "2.9.0", "not_configured"),
        ("rust-2.19.1", "2.19.1", "not_configured"),
    ],
)
async def test_rust_health_reports_the_version_also_when_unhealthy(
    start: Any, profile: str, version: str, nats: str
) -> None:
    """Rust health carries the release; with the store down it is 503 with the same keys."""
    client = await start(profile)
    ok = await client.get("/api/health")
    body = await ok.json()
    assert ok.status == 200
    assert list(body) == ["status", "database", "nats", "uptime_seconds", "version"]
    assert (body["status"], body["database"], body["nats"], body["version"]) == (
        "ok",
        "connected",
        nats,
        version,
    )
    await client.post("/_emulator/faults", json={"store_down": True})
    down = await client.get("/api/health")
    body = await down.json()
    assert down.status == 503
    assert (body["status"], body["database"], body["version"]) == (
        "unhealthy",
        "disconnected",
        version,
    )
    assert (await (await client.get("/health")).json()) == {"status": "ok"}


async def test_version_override_and_python_health(start: Any) -> None:
    """A version override is what health reports; the Python server reports none."""
    client = await start("rust-2.19.1", version="3.83.1")
    body = await (await client.get("/api/health")).json()
    assert (body["version"], body["nats"]) == ("3.83.1", "removed")
    python = await start("python")
    await python.post("/_emulator/faults", json={"store_down": True})
    for path in ("/api/health", "/health"):
        response = await python.get(path)
        assert response.status == 200
        assert await response.read() == b'{"status":"ok"}'


async def test_profile_switch(start: Any) -> None:
    """The profile endpoint changes the rules and the reported version at runtime."""
    client = await start("rust-2.9.0")
    integer_id = sample_bytes("executor_event__command_completed_full")
    response = await client.post("/api/events", data=integer_id, headers=JSON)
    assert response.status == 422
    switched = await client.post(
        "/_emulator/profile", json={"profile": "rust-2.19.1", "version": "3.83.1"}
    )
    assert (await switched.json())["profile"] == "rust-2.19.1"
    assert (await (await client.get("/_emulator/profile")).json())["version"] == "3.83.1"
    assert (await (await client.get("/api/health")).json())["version"] == "3.83.1"
    status, body = await post(client, "/api/events", integer_id)
    assert (status, body["event_id"]) == (200, 478775660589088777)
    by_version = await client.post("/_emulator/profile", json={"version": "2.5.0"})
    assert (await by_version.json())["profile"] == "rust-2.9.0"
    unknown = await client.post("/_emulator/profile", json={"profile": "rust-9"})
    assert unknown.status == 400
    assert (await (await client.get("/_emulator/profile")).json())["profile"] == "rust-2.9.0"


@pytest.mark.parametrize(
    ("profile", "status", "answer_keys"),
    [
        ("rust-1.0.3", 200, ["status", "event_ids", "commands_generated"]),
        ("rust-2.9.0", 200, ["status", "event_ids", "commands_generated"]),
        ("rust-2.19.1", 200, ["status", "event_ids", "commands_generated"]),
        (
            "python",
            202,
            [
                "status",
                "request_id",
                "event_ids",
                "commands_generated",
                "queue_depth",
                "duplicate",
                "idempotency_key",
            ],
        ),
    ],
)
async def test_batches(start: Any, profile: str, status: int, answer_keys: list[str]) -> None:
    """Each server answers a batch its own way; every item is stored under its own id."""
    client = await start(profile)
    batch = sample_bytes("python_batch_event_request__py_worker")
    got_status, body = await post(client, "/api/events/batch", batch)
    assert got_status == status
    assert list(body) == answer_keys
    assert len(body["event_ids"]) == 2
    stored = await (await client.get("/_emulator/events")).json()
    assert [row["event_id"] for row in stored] == body["event_ids"]
    assert [row["item_index"] for row in stored] == [0, 1]
    assert {base64.b64decode(row["body_b64"]) for row in stored} == {batch}
    empty_status, empty = await post(
        client, "/api/events/batch", {"execution_id": "1", "events": []}
    )
    assert empty_status == status
    assert empty["event_ids"] == []


async def test_claim_conflicts(start: Any) -> None:
    """A second worker claiming a command gets 409 in the server's own error format."""
    claim = {
        "execution_id": "478775660589088776",
        "step": "fetch",
        "name": "command.claimed",
        "payload": {"command_id": "478775660589088790"},
    }
    for profile, conflict in (
        ("rust-2.19.1", {"error": "Command already claimed by w1", "status": 409}),
        ("python", {"detail": "Command already claimed by w1"}),
    ):
        client = await start(profile)
        status, first = await post(client, "/api/events", {**claim, "worker_id": "w1"})
        assert status == 200
        assert first["event_id"] > 2**53
        assert await post(client, "/api/events", {**claim, "worker_id": "w2"}) == (409, conflict)
        assert await post(client, "/api/events", {**claim, "worker_id": "w1"}) == (
            200,
            {"status": "ok", "event_id": 0, "commands_generated": 0},
        )
        stored = await (await client.get("/_emulator/events")).json()
        assert [row["event_id"] for row in stored] == [first["event_id"]]
        requests = await (await client.get("/_emulator/requests")).json()
        assert [(r["status"], r["duplicate"]) for r in requests] == [
            (200, False),
            (409, False),
            (200, True),
        ]


async def test_python_dedup_over_http(start: Any) -> None:
    """Python answers a repeated `command.completed` with the id it stored first."""
    client = await start("python")
    event = json.loads(sample_bytes("python_event_request__py_worker_command_failed"))
    event["name"] = "command.completed"
    first = await post(client, "/api/events", event)
    again = await post(client, "/api/events", event)
    assert first[0] == again[0] == 200
    assert again[1]["event_id"] == first[1]["event_id"]
    assert len(await (await client.get("/_emulator/events")).json()) == 1


async def test_python_idempotency_key_over_http(start: Any) -> None:
    """A batch replayed with the same key is answered from memory, `duplicate: true`."""
    client = await start("python")
    batch = sample_bytes("python_batch_event_request__py_worker")
    key = "worker-cpu-01:478775660589088776:3f1c2b7a9d8e4f60a1b2c3d4e5f60718"
    status, first = await post(client, "/api/events/batch", batch, **{"Idempotency-Key": key})
    assert status == 202
    assert (first["duplicate"], first["idempotency_key"]) == (False, key)
    status, replay = await post(client, "/api/events/batch", batch, **{"X-Idempotency-Key": key})
    assert status == 202
    assert replay == {**first, "duplicate": True}
    assert len(await (await client.get("/_emulator/events")).json()) == 2


async def test_listing_cursor_and_reset(start: Any) -> None:
    """`since` pages through stored events; DELETE forgets events and claims alike."""
    client = await start("rust-2.19.1")
    body = sample_bytes("rust_event_request__minimal_defaults")
    for _ in range(3):
        assert (await post(client, "/api/events", body))[0] == 200
    rows = await (await client.get("/_emulator/events")).json()
    assert [row["seq"] for row in rows] == [1, 2, 3]
    later = await (await client.get("/_emulator/events?since=2")).json()
    assert [row["seq"] for row in later] == [3]
    assert (await client.get("/_emulator/events?since=x")).status == 400
    cleared = await client.delete("/_emulator/events")
    assert await cleared.json() == {"requests": 0, "events": 0}
    assert await (await client.get("/_emulator/events")).json() == []
    assert (await post(client, "/api/events", body))[0] == 200
    assert [row["seq"] for row in await (await client.get("/_emulator/events")).json()] == [4]


async def test_fast_mode_accepts_alike_and_counts(start: Any) -> None:
    """Fast mode keeps the acceptance rules; the store is in memory and still listable."""
    client = await start("rust-2.9.0", fast=True)
    refused = await client.post(
        "/api/events", data=sample_bytes("worker_event__call_done"), headers=JSON
    )
    assert refused.status == 422
    body = sample_bytes("rust_event_request__context_alias")
    status, answer = await post(client, "/api/events", body)
    assert status == 200
    rows = await (await client.get("/_emulator/events")).json()
    assert [(row["event_id"], base64.b64decode(row["body_b64"])) for row in rows] == [
        (answer["event_id"], body)
    ]
    stats = await (await client.get("/_emulator/stats")).json()
    assert (stats["requests"], stats["events"]) == (2, 1)
    assert (await (await client.get("/_emulator/profile")).json())["fast"] is True


async def test_sqlite_file_keeps_exact_bytes_and_ids(start: Any, tmp_path: Path) -> None:
    """With a database file, the received bytes and the assigned id are in SQLite."""
    db = tmp_path / "events.db"
    client = await start("rust-2.19.1", db_path=str(db))
    body = sample_bytes("edge__unknown_extra_fields")
    status, answer = await post(client, "/api/events", body)
    assert status == 200
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT r.body, e.event_id, r.path, r.profile FROM events e"
            " JOIN requests r ON r.seq = e.request_seq"
        ).fetchall()
    assert rows == [(body, answer["event_id"], "/api/events", "rust-2.19.1")]


async def test_rust_refuses_large_bodies_by_content_length(start: Any) -> None:
    """Over 2 MiB the Rust server answers 413 text; the Python server reads on."""
    body = (
        b'{"execution_id":"1","step":"s","event_type":"e","pad":"'
        + b"x" * (2 * 1024 * 1024)
        + b'"}'
    )
    rust = await start("rust-2.19.1")
    response = await rust.post("/api/events", data=body, headers=JSON)
    assert response.status == 413
    assert await response.read() == b"Failed to buffer the request body: length limit exceeded"
    python = await start("python")
    assert (await python.post("/api/events", data=body, headers=JSON)).status == 200
