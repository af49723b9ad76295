"""The shadow check: each request converted to the other target and validated, never sent."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import Settings
from proxy.contract import EventRecord, Kind
from proxy.envelope import Engine, EngineOptions, load_rules
from proxy.observability import ObservabilityExtension, build_extension
from tests.builders import client_hints, event_record
from tests.fixed_view import FixedView
from tests.samples import sample_bytes

RULES = load_rules()  # read once, before any event loop runs


def from_svc(**overrides: Any) -> EventRecord:
    """An `event_request` body the client `svc` sent (the label the counts are keyed by)."""
    fields: dict[str, Any] = {"hints": client_hints(header="svc"), "shape": "event_request"}
    return event_record(**(fields | overrides))


async def scrape(ext: ObservabilityExtension, aiohttp_client: Any) -> tuple[str, dict[str, Any]]:
    app = web.Application()
    app.add_routes(ext.admin_routes())
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    metrics = await (await client.get("/metrics")).text()
    clients = orjson.loads(await (await client.get("/clients")).read())
    return metrics, clients


def shadow_counts(text: str) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["client"], s.labels["target"], s.labels["result"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "envelope_proxy_shadow_total"
    }


@pytest.mark.parametrize(
    ("sample", "shape", "target", "path"),
    [
        pytest.param(
            "rust_event_request__v1_legacy_full",
            "event_request",
            "executor_event",
            "/api/events",
            id="event_request",
        ),
        pytest.param(
            "worker_event__call_done",
            "worker_event",
            "event_request",
            "/api/events",
            id="worker_event",
        ),
        pytest.param(
            "python_batch_event_request__py_worker",
            "batch",
            "executor_event",
            "/api/events/batch",
            id="batch",
        ),
    ],
)
async def test_valid_traffic_shadows_ok_against_the_other_target(
    sample: str, shape: str, target: str, path: str, aiohttp_client: Any
) -> None:
    """A body that converts for the live target also converts and validates for the other one."""
    ext = build_extension(Settings(shadow=True))
    ext.attach(FixedView(Engine(RULES, EngineOptions())))
    kind: Kind = "batch" if path.endswith("/batch") else "event"
    record = from_svc(body=sample_bytes(sample), shape=shape, target=target, path=path, kind=kind)
    ext.on_event(record)
    ext.on_event(record)
    metrics, clients = await scrape(ext, aiohttp_client)
    other = "event_request" if target == "executor_event" else "executor_event"
    assert shadow_counts(metrics) == {("svc", other, "ok"): 2}
    assert clients["clients"][0]["shadow_failures"] == {}


async def test_failures_are_counted_by_code_and_kept_per_client(aiohttp_client: Any) -> None:
    """A body the shadow engine refuses counts its error code and shows under the client."""
    strict = Engine(RULES, EngineOptions(max_depth=1))
    ext = build_extension(Settings(shadow=True))
    ext.attach(FixedView(strict))
    ext.on_event(from_svc(body=sample_bytes("rust_event_request__v1_legacy_full")))
    ext.on_event(from_svc(body=sample_bytes("rust_event_request__minimal_defaults")))
    metrics, clients = await scrape(ext, aiohttp_client)
    assert shadow_counts(metrics) == {
        ("svc", "event_request", "too_deep"): 1,
        ("svc", "event_request", "ok"): 1,
    }
    failures = clients["clients"][0]["shadow_failures"]
    assert list(failures) == ["too_deep"]
    assert failures["too_deep"]["count"] == 1


async def test_the_view_is_asked_for_the_engine_every_time(aiohttp_client: Any) -> None:
    """After a reload the server's new engine is used: the view is read per check."""
    view = FixedView(Engine(RULES, EngineOptions()))
    ext = build_extension(Settings(shadow=True))
    ext.attach(view)
    body = sample_bytes("rust_event_request__v1_legacy_full")
    ext.on_event(from_svc(body=body))
    view.engine = Engine(RULES, EngineOptions(max_depth=1))
    ext.on_event(from_svc(body=body))
    counts = shadow_counts((await scrape(ext, aiohttp_client))[0])
    assert counts == {("svc", "event_request", "ok"): 1, ("svc", "event_request", "too_deep"): 1}


async def test_refused_requests_and_a_broken_engine_never_raise(aiohttp_client: Any) -> None:
    """Rejected requests are not shadowed; an engine crash counts `internal_error`, never raises."""

    class BrokenView:
        inflight = 0
        client_header = None

        @property
        def engine(self) -> Engine:
            raise RuntimeError("engine unavailable")

    ext = build_extension(Settings(shadow=True))
    ext.attach(BrokenView())
    ext.on_event(from_svc(outcome="rejected", error_code="invalid_json", body=b"{"))
    ext.on_event(from_svc(body=sample_bytes("rust_event_request__v1_legacy_full")))
    metrics, _ = await scrape(ext, aiohttp_client)
    assert shadow_counts(metrics) == {("svc", "event_request", "internal_error"): 1}
    events = [
        s
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
        if s.name == "envelope_proxy_events_total"
    ]
    assert sum(s.value for s in events) == 2


async def test_shadow_off_records_nothing(aiohttp_client: Any) -> None:
    """Without `shadow: true` there is no shadow series at all."""
    ext = build_extension(Settings())
    ext.on_event(from_svc(body=sample_bytes("rust_event_request__v1_legacy_full")))
    metrics, _ = await scrape(ext, aiohttp_client)
    assert shadow_counts(metrics) == {}
