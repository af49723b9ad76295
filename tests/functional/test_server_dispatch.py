"""Event routes dispatched ahead of the router answer as the application's routes do."""

from __future__ import annotations

import aiohttp
import orjson

from proxy.compose import compose
from tests.functional.server_support import (
    EMIT_REQUEST,
    JSON,
    Recorder,
    ServerFactory,
    base_url,
    serve_composed,
    settings_for,
    start_upstream,
)

BATCH = orjson.dumps(
    {"execution_id": 478775660589088776, "events": [{"step": "s", "event_type": "step.exit"}]}
)


async def _exchanges(proxy: str, session: aiohttp.ClientSession) -> list[tuple[object, ...]]:
    """What a client sees for an event, a batch, a refusal, a pass-through GET on an event
    path, an event path with a trailing slash and an `Expect: 100-continue` event."""
    seen: list[tuple[object, ...]] = []
    for method, path, body, headers in (
        ("POST", "/api/events", EMIT_REQUEST, JSON),
        ("POST", "/api/events/batch", BATCH, JSON),
        ("POST", "/api/events", EMIT_REQUEST, {"Content-Type": "text/plain"}),
        ("GET", "/api/events", None, {}),
        ("POST", "/api/events/", EMIT_REQUEST, JSON),
        ("POST", "/api/events", EMIT_REQUEST, {**JSON, "Expect": "100-continue"}),
    ):
        async with session.request(method, proxy + path, data=body, headers=headers) as answer:
            payload = await answer.read()
            names = ("Content-Type", "X-Envelope-Shape", "X-Envelope-Target")
            kept = tuple(answer.headers.get(name) for name in names)
            seen.append((method, path, answer.status, kept, _without_ids(payload)))
    return seen


def _without_ids(payload: bytes) -> object:
    """The answer with the ids the upstream minted left out (they differ run to run)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload
    if isinstance(data, dict):
        return {key: value for key, value in data.items() if "id" not in key}
    return data


async def test_dispatched_and_routed_event_requests_answer_alike(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    answers = []
    records = []
    for dispatched in (True, False):
        upstream = await start_upstream(aiohttp_server, "rust-2.19.1")
        recorder = Recorder()
        proxy = compose(settings_for(upstream), extensions=[recorder])
        if dispatched:
            server, _ = await serve_composed(aiohttp_server, proxy)
        else:  # the application's own router, as any server without the dispatcher has it
            server = await aiohttp_server(proxy.app, **proxy.app_kwargs)
        answers.append(await _exchanges(base_url(server), session))
        records.append(
            [(r.path, r.kind, r.shape, r.outcome, r.error_code) for r in recorder.records]
        )
    assert answers[0] == answers[1]
    assert records[0] == records[1]
    statuses = [answer[2] for answer in answers[0]]
    # The GET and the trailing slash are passed through: the upstream's own 405 and 404.
    assert statuses == [200, 200, 415, 405, 404, 200], answers[0]
    assert [record[1] for record in records[0]] == ["event", "batch", "event", "event"]
