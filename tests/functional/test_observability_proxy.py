"""Observability through the real proxy: spans found by event id, metrics and the sunset ledger.

Real traffic goes client -> proxy (`compose` with the observability extension) -> a
loopback upstream; spans are read from a real OTLP/HTTP receiver, metrics by scraping the
admin `/metrics`, the ledger from admin `/clients`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from proxy.cli import main
from proxy.compose import compose
from proxy.config import Settings
from proxy.emulator import create_emulator_app
from proxy.observability import ObservabilityExtension
from tests.functional.server_support import serve_composed
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.samples import sample_bytes

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SECRET = "do-not-record-me"
EMIT_REQUEST = (
    b'{"execution_id": "478775660589088776", "event_type": "step.enter",'
    b' "node_name": "fetch", "node_type": "python", "catalog_id": "478775660589088001"}'
)


@dataclass
class Upstream:
    """The NoETL emulator, plus the headers of each request it answered."""

    server: TestServer
    headers: list[dict[str, str]] = field(default_factory=list)

    async def record_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith("/api/e"):  # events and executions, never the probe
            self.headers.append(dict(request.headers))

    async def control(self, method: str, path: str, body: object = None) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.server.make_url(path), json=body) as response,
        ):
            assert response.status < 300, await response.text()
            return orjson.loads(await response.read())

    async def last_body(self) -> dict[str, Any]:
        requests = await self.control("GET", "/_emulator/requests")
        result: dict[str, Any] = orjson.loads(requests[-1]["body"])
        return result


@dataclass
class Stack:
    proxy: TestServer
    admin: TestServer
    upstream: Upstream
    ext: ObservabilityExtension

    async def post(
        self,
        sample: str | bytes,
        client: str | None = None,
        path: str = "/api/events",
        **headers: str,
    ) -> tuple[int, dict[str, Any]]:
        body = sample if isinstance(sample, bytes) else sample_bytes(sample)
        sent = {"Content-Type": "application/json", **headers}
        if client is not None:
            sent["X-NoETL-Client"] = client
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.proxy.make_url(path), data=body, headers=sent) as response,
        ):
            return response.status, orjson.loads(await response.read())

    async def get(self, path: str, **headers: str) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.proxy.make_url(path), headers=headers) as response,
        ):
            await response.read()
            return response.status

    async def admin_get(self, path: str) -> bytes:
        async with aiohttp.ClientSession() as session, session.get(self.admin.make_url(path)) as r:
            assert r.status == 200
            return await r.read()

    async def metrics(self) -> dict[str, list[Any]]:
        text = (await self.admin_get("/metrics")).decode()
        found: dict[str, list[Any]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found.setdefault(sample.name, []).append(sample)
        return found

    async def spans(self, receiver: OtlpReceiver, count: int) -> list[ReceivedSpan]:
        assert self.ext.tracer_provider is not None
        await asyncio.to_thread(self.ext.tracer_provider.force_flush, 10_000)
        return await receiver.wait_for(lambda s: len(s) >= count)


pytestmark = pytest.mark.usefixtures("clean_otel_env")


async def start_stack(
    aiohttp_server: Any, config: dict[str, Any], profile: str = "rust-2.19.1"
) -> Stack:
    """Emulator, proxy and admin listener on loopback; `config` is merged into the settings."""
    emulator = create_emulator_app(profile, fast=True)
    holder_up: list[Upstream] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        await holder_up[0].record_headers(request, response)

    emulator.on_response_prepare.append(record)
    upstream = Upstream(await aiohttp_server(emulator))
    holder_up.append(upstream)
    url = str(upstream.server.make_url("/")).rstrip("/")
    settings = Settings.model_validate(
        {**config, "upstream": {**config.get("upstream", {}), "url": url}}
    )
    proxy = compose(settings)
    (ext,) = proxy.extensions
    assert isinstance(ext, ObservabilityExtension)
    server, admin = await serve_composed(aiohttp_server, proxy)
    return Stack(server, admin, upstream, ext)


@pytest.fixture
async def traced(receiver: OtlpReceiver, aiohttp_server: Any) -> Stack:
    return await start_stack(
        aiohttp_server, {"tracing": {"otlp_endpoint": receiver.endpoint}, "shadow": True}
    )


def server_span(receiver: OtlpReceiver, event_id: str) -> ReceivedSpan:
    (span,) = [s for s in receiver.with_attribute("noetl.event_id", event_id) if s.kind == "SERVER"]
    return span


@pytest.mark.parametrize(
    ("sample", "shape"),
    [
        pytest.param(
            "executor_event__call_done_inline_result", "executor_event", id="executor_event"
        ),
        pytest.param("rust_event_request__v1_legacy_full", "event_request", id="event_request"),
        pytest.param("worker_event__call_done", "worker_event", id="worker_event"),
        pytest.param(EMIT_REQUEST, "emit_request", id="emit_request"),
    ],
)
async def test_each_event_has_a_server_span_found_by_its_event_id(
    traced: Stack, receiver: OtlpReceiver, sample: str | bytes, shape: str
) -> None:
    """The stored event id keys the span, which carries shape, target, client and version."""
    status, answer = await traced.post(sample, client="svc-a")
    assert status == 200
    await traced.spans(receiver, 1)
    span = server_span(receiver, str(answer["event_id"]))
    assert span.name == "POST /api/events"
    assert span.attributes["http.route"] == "/api/events"
    assert span.attributes["http.request.method"] == "POST"
    assert span.attributes["url.path"] == "/api/events"
    assert span.attributes["http.response.status_code"] == 200
    assert "http.method" not in span.attributes  # stable conventions only, by default
    assert "error.type" not in span.attributes
    assert span.attributes["noetl.envelope.shape"] == shape
    assert span.attributes["noetl.envelope.target"] == "executor_event"
    assert span.attributes["noetl.client"] == "svc-a"
    assert span.attributes["noetl.upstream.version"] == "2.19.1"
    assert isinstance(span.attributes["noetl.execution_id"], str)
    assert span.status == "UNSET"
    forwarded = await traced.upstream.last_body()
    assert span.attributes["noetl.execution_id"] == str(forwarded["execution_id"])
    # Rust 2.19.1 stores the id the proxy forwarded: one id, no second attribute.
    assert str(forwarded["event_id"]) == span.attributes["noetl.event_id"]
    assert "noetl.request_event_id" not in span.attributes


async def test_upstream_traceparent_continues_the_trace_through_the_server_span(
    traced: Stack, receiver: OtlpReceiver
) -> None:
    """One span per hop: the upstream sees the caller's trace with the proxy's SERVER span
    as parent, and no CLIENT span is made."""
    status, answer = await traced.post(
        "executor_event__call_done_inline_result",
        traceparent=f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
    )
    assert status == 200
    spans = await traced.spans(receiver, 1)
    server = server_span(receiver, str(answer["event_id"]))
    assert [s.kind for s in spans] == ["SERVER"]
    assert server.trace_id == CALLER_TRACE
    assert server.parent_span_id == CALLER_SPAN
    headers = traced.upstream.headers[-1]
    _, trace_id, parent_id, flags = headers["traceparent"].split("-")
    assert trace_id == CALLER_TRACE
    assert parent_id == server.span_id
    assert flags == "01"


async def test_batch_span_lists_size_and_stored_ids(traced: Stack, receiver: OtlpReceiver) -> None:
    """A batch span carries noetl.batch.size and every stored id as strings."""
    status, answer = await traced.post(
        "python_batch_event_request__py_worker", path="/api/events/batch", client="py"
    )
    assert status == 200
    await traced.spans(receiver, 1)
    ids = [str(i) for i in answer["event_ids"]]
    span = server_span(receiver, ids[0])
    assert span.name == "POST /api/events/batch"
    assert span.attributes["noetl.batch.size"] == len(ids)
    assert span.attributes["noetl.batch.event_ids"] == ids
    assert span.attributes["noetl.envelope.shape"] == "batch"


async def test_rejections_and_upstream_refusals_carry_an_error_type_not_error_status(
    traced: Stack, receiver: OtlpReceiver
) -> None:
    """A refused body and an upstream 409 carry `error.type` (the problem code, else the
    status) and a code; as 4xx answers of a server span their status stays unset."""
    status, _ = await traced.post(b'{"hello": "world"}', client="bad")
    assert status == 422
    await traced.upstream.control("POST", "/_emulator/faults", {"status": 409})
    status, _ = await traced.post("rust_event_request__v1_legacy_full", client="dup")
    assert status == 409
    spans = await traced.spans(receiver, 2)
    rejected = [s for s in spans if s.attributes.get("noetl.client") == "bad"]
    assert [
        (s.status, s.attributes["noetl.error.code"], s.attributes["error.type"]) for s in rejected
    ] == [("UNSET", "unknown_shape", "unknown_shape")]
    (refused,) = [s for s in spans if s.attributes.get("noetl.client") == "dup"]
    assert refused.status == "UNSET"
    assert refused.attributes["error.type"] == "409"
    assert refused.attributes["noetl.outcome"] == "upstream_rejected"
    assert refused.attributes["noetl.upstream.status_code"] == 409
    metrics = await traced.metrics()
    outcomes = {
        (s.labels["client"], s.labels["outcome"]): s.value
        for s in metrics["envelope_proxy_events_total"]
    }
    assert outcomes == {("bad", "rejected"): 1, ("dup", "upstream_rejected"): 1}


async def test_a_legacy_upstream_id_keys_the_span_and_the_sent_id_is_kept(
    aiohttp_server: Any, receiver: OtlpReceiver
) -> None:
    """The Python server mints its own id: the span has both, the stored one as the key."""
    stack = await start_stack(
        aiohttp_server, {"tracing": {"otlp_endpoint": receiver.endpoint}}, profile="python"
    )
    sample = "executor_event__command_completed_full"
    sent_id = str(orjson.loads(sample_bytes(sample))["event_id"])
    status, answer = await stack.post(sample, client="svc")
    assert status == 200
    await stack.spans(receiver, 1)
    assert str(answer["event_id"]) != sent_id
    span = server_span(receiver, str(answer["event_id"]))
    assert span.attributes["noetl.request_event_id"] == sent_id
    assert span.attributes["noetl.envelope.target"] == "event_request"
    assert "noetl.upstream.version" not in span.attributes
    (info,) = (await stack.metrics())["envelope_proxy_upstream_target_info"]
    assert info.labels == {"target": "event_request", "version": "unversioned"}


async def test_upstream_5xx_and_timeouts_count_as_upstream_failed(
    aiohttp_server: Any, receiver: OtlpReceiver
) -> None:
    """A relayed 500 and an upstream timeout are both `upstream_failed` with ERROR spans."""
    stack = await start_stack(
        aiohttp_server,
        {"tracing": {"otlp_endpoint": receiver.endpoint}, "upstream": {"timeout_seconds": 0.5}},
    )
    await stack.upstream.control("POST", "/_emulator/faults", {"status": 500})
    status, _ = await stack.post("executor_event__call_done_inline_result", client="five")
    assert status == 500
    await stack.upstream.control("POST", "/_emulator/faults", {"hang": True})
    status, problem = await stack.post("executor_event__call_done_inline_result", client="slow")
    assert status == 504
    await stack.upstream.control("DELETE", "/_emulator/faults")
    spans = await stack.spans(receiver, 2)
    servers = {s.attributes["noetl.client"]: s for s in spans if s.kind == "SERVER"}
    assert servers["five"].status == "ERROR"
    assert servers["five"].attributes["error.type"] == "500"
    assert servers["slow"].attributes["error.type"] == "upstream_timeout"
    assert servers["five"].attributes["noetl.outcome"] == "upstream_failed"
    assert servers["five"].attributes["noetl.upstream.status_code"] == 500
    assert servers["slow"].status == "ERROR"
    assert servers["slow"].attributes["noetl.error.code"] == problem["code"]
    outcomes = {
        (s.labels["client"], s.labels["outcome"]): s.value
        for s in (await stack.metrics())["envelope_proxy_events_total"]
    }
    assert outcomes == {("five", "upstream_failed"): 1, ("slow", "upstream_failed"): 1}


async def test_payloads_and_meta_never_reach_spans(traced: Stack, receiver: OtlpReceiver) -> None:
    """Secrets in payload, meta and Authorization appear in no span attribute."""
    body = orjson.dumps(
        {
            "execution_id": 612345678901234567,
            "event_type": "call.done",
            "step": "fetch",
            "status": "COMPLETED",
            "created_at": "2026-01-01T00:00:00Z",
            "context": {"token": SECRET},
            "meta": {"password": SECRET},
        }
    )
    status, _ = await traced.post(body, client="svc", Authorization=f"Bearer {SECRET}")
    assert status == 200
    spans = await traced.spans(receiver, 1)
    for span in spans:
        assert SECRET not in repr(span.attributes)


async def test_metrics_after_real_traffic(traced: Stack) -> None:
    """events_total, last_seen, durations, target_info, in-flight and shadow after real requests."""
    for _ in range(3):
        assert (await traced.post("executor_event__call_done_inline_result", client="new"))[
            0
        ] == 200
    assert (await traced.post("rust_event_request__v1_legacy_full", client="old"))[0] == 200
    metrics = await traced.metrics()
    events = {
        (s.labels["client"], s.labels["shape"], s.labels["target"], s.labels["outcome"]): s.value
        for s in metrics["envelope_proxy_events_total"]
    }
    assert events == {
        ("new", "executor_event", "executor_event", "forwarded"): 3,
        ("old", "event_request", "executor_event", "forwarded"): 1,
    }
    seen = {
        s.labels["client"] for s in metrics["envelope_proxy_client_last_seen_timestamp_seconds"]
    }
    assert seen == {"new", "old"}
    (count,) = metrics["envelope_proxy_upstream_request_duration_seconds_count"]
    assert count.value == 4
    (info,) = metrics["envelope_proxy_upstream_target_info"]
    assert info.labels == {"target": "executor_event", "version": "2.19.1"}
    (inflight,) = metrics["envelope_proxy_inflight_requests"]
    assert inflight.value == 0
    shadow = {
        (s.labels["client"], s.labels["target"], s.labels["result"]): s.value
        for s in metrics["envelope_proxy_shadow_total"]
    }
    assert shadow == {("new", "event_request", "ok"): 3, ("old", "event_request", "ok"): 1}


async def test_clients_ledger_and_command_after_real_traffic(
    traced: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """/clients names the legacy producer as the blocker; the command prints it first."""
    assert (await traced.post("executor_event__call_done_inline_result", client="new"))[0] == 200
    assert (await traced.post("worker_event__call_done", client="old-rust"))[0] == 200
    report = orjson.loads(await traced.admin_get("/clients"))
    assert report["ready_to_sunset_v1"] is False
    assert report["blocking_clients"] == ["old-rust"]
    assert report["clients"][0]["shapes"]["worker_event"]["count"] == 1
    admin_url = str(traced.admin.make_url("/")).rstrip("/")
    assert await asyncio.to_thread(main, ["clients", "--admin", admin_url]) == 1  # not ready
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("old-rust")
    assert lines[-1].startswith("verdict: NOT ready to sunset v1: 1 client")


async def test_without_tracing_no_middleware_and_the_header_passes_untouched(
    aiohttp_server: Any, receiver: OtlpReceiver
) -> None:
    """Tracing off installs nothing: the upstream gets the caller's traceparent as sent."""
    stack = await start_stack(aiohttp_server, {})
    assert stack.ext.tracer_provider is None
    assert stack.ext.server_middlewares() == ()
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    status, _ = await stack.post("executor_event__call_done_inline_result", traceparent=traceparent)
    assert status == 200
    assert stack.upstream.headers[-1]["traceparent"] == traceparent
    assert receiver.spans == []
