"""Tracing mechanics: server and client spans, W3C propagation and export to a real receiver.

A minimal forwarding handler stands in for the proxy here so these tests pin what the two
instrumentation packages (0.66b1) emit; the end-to-end tests through the real proxy are in
`test_observability_proxy.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.config import Settings
from proxy.observability import ObservabilityExtension, build_extension
from proxy.server.hooks import ClientHints, EventRecord
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

SESSION = web.AppKey("session", aiohttp.ClientSession)
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
    "OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS",
)


@dataclass
class Upstream:
    server: TestServer
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    next_id: int = 612_000_000_000_000_001


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Upstream:
    holder: list[Upstream] = []

    async def ingest(request: web.Request) -> web.Response:
        up = holder[0]
        up.seen_headers.append(dict(request.headers))
        await request.read()
        up.next_id += 1
        return web.json_response({"status": "ok", "event_id": up.next_id, "commands_generated": 0})

    app = web.Application()
    app.router.add_post("/api/events", ingest)
    holder.append(Upstream(await aiohttp_server(app)))
    return holder[0]


def tracing_settings(endpoint: str | None, **tracing: Any) -> Settings:
    return Settings.model_validate({"tracing": {"otlp_endpoint": endpoint, **tracing}})


async def mini_proxy(
    ext: ObservabilityExtension, upstream: Upstream, aiohttp_server: Any
) -> TestServer:
    """A handler that forwards to the upstream and reports an EventRecord, like the proxy does."""

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(trace_configs=list(ext.client_trace_configs())) as s:
            app[SESSION] = s
            yield

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        url = upstream.server.make_url("/api/events")
        session = request.app[SESSION]
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
            answer = await r.read()
        stored = orjson.loads(answer)["event_id"]
        ext.on_event(
            EventRecord(
                path=request.path,
                hints=ClientHints(request.headers.get("X-NoETL-Client"), None, request.remote),
                worker_id=None,
                shape="executor_event",
                target="executor_event",
                upstream_version="2.19.1",
                outcome="forwarded",
                error_code=None,
                upstream_status=r.status,
                execution_id="612345678901234567",
                request_event_id=request.headers.get("X-Test-Request-Id"),
                stored_event_ids=(str(stored),),
                batch_size=None,
                upstream_seconds=0.001,
                body=body,
            )
        )
        return web.Response(body=answer, status=r.status, content_type="application/json")

    app = web.Application(middlewares=list(ext.server_middlewares()))
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/api/events", forward)
    server: TestServer = await aiohttp_server(app)
    return server


async def post(server: TestServer, headers: dict[str, str]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.make_url("/api/events"), data=b"{}", headers=headers) as response,
    ):
        assert response.status == 200
        result: dict[str, Any] = orjson.loads(await response.read())
        return result


async def flush(ext: ObservabilityExtension) -> None:
    assert ext.tracer_provider is not None
    assert await asyncio.to_thread(ext.tracer_provider.force_flush, 10_000)


def by_kind(spans: list[ReceivedSpan], kind: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.kind == kind]


async def test_server_and_client_spans_continue_the_caller_trace(
    receiver: OtlpReceiver, upstream: Upstream, aiohttp_server: Any
) -> None:
    """The server span continues the caller's traceparent, the client span is its child."""
    ext = build_extension(tracing_settings(receiver.endpoint))
    proxy = await mini_proxy(ext, upstream, aiohttp_server)
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    answer = await post(proxy, {"traceparent": traceparent, "X-NoETL-Client": "svc-a"})
    await flush(ext)
    spans = await receiver.wait_for(lambda s: len(s) >= 2)
    (server,) = by_kind(spans, "SERVER")
    (client,) = by_kind(spans, "CLIENT")
    assert server.name == "POST /api/events"
    assert server.attributes["http.route"] == "/api/events"
    assert server.trace_id == CALLER_TRACE
    assert server.parent_span_id == CALLER_SPAN
    assert client.name == "POST"
    assert client.trace_id == CALLER_TRACE
    assert client.parent_span_id == server.span_id
    assert server.attributes["noetl.event_id"] == str(answer["event_id"])
    assert server.attributes["noetl.client"] == "svc-a"
    assert server.resource["service.name"] == "envelope-proxy"
    await ext.close()


async def test_upstream_gets_a_traceparent_whose_parent_is_the_client_span(
    receiver: OtlpReceiver, upstream: Upstream, aiohttp_server: Any
) -> None:
    """The forwarded traceparent is injected by the propagator: same trace, parent = client span."""
    ext = build_extension(tracing_settings(receiver.endpoint))
    proxy = await mini_proxy(ext, upstream, aiohttp_server)
    await post(proxy, {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    await flush(ext)
    spans = await receiver.wait_for(lambda s: len(s) >= 2)
    (client,) = by_kind(spans, "CLIENT")
    (seen,) = upstream.seen_headers
    version, trace_id, parent_id, flags = seen["traceparent"].split("-")
    assert (version, trace_id) == ("00", CALLER_TRACE)
    assert parent_id == client.span_id != CALLER_SPAN
    assert int(flags, 16) & 1 == 1
    await ext.close()


async def test_request_event_id_is_kept_when_the_upstream_stored_another(
    receiver: OtlpReceiver, upstream: Upstream, aiohttp_server: Any
) -> None:
    """The span is keyed by the stored id; the id the request carried is a second attribute."""
    ext = build_extension(tracing_settings(receiver.endpoint))
    proxy = await mini_proxy(ext, upstream, aiohttp_server)
    answer = await post(proxy, {"X-Test-Request-Id": "700000000000000001"})
    await flush(ext)
    await receiver.wait_for(lambda s: len(s) >= 2)
    (server,) = receiver.with_attribute("noetl.event_id", str(answer["event_id"]))
    assert server.kind == "SERVER"
    assert server.attributes["noetl.request_event_id"] == "700000000000000001"
    assert server.parent_span_id is None  # no inbound traceparent: a new root
    await ext.close()


async def test_service_name_and_sampler_come_from_the_standard_environment(
    receiver: OtlpReceiver,
    upstream: Upstream,
    aiohttp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are honoured over the config's name."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "proxy-from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.traces_url)
    ext = build_extension(tracing_settings(None, service_name="from-config"))
    proxy = await mini_proxy(ext, upstream, aiohttp_server)
    await post(proxy, {})
    await flush(ext)
    spans = await receiver.wait_for(lambda s: len(s) >= 2)
    assert {s.resource["service.name"] for s in spans} == {"proxy-from-env"}
    assert spans[0].resource["deployment.environment"] == "test"
    await ext.close()


async def test_sampler_always_off_exports_nothing(
    receiver: OtlpReceiver,
    upstream: Upstream,
    aiohttp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_TRACES_SAMPLER=always_off is the SDK's: no span reaches the receiver."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    ext = build_extension(tracing_settings(receiver.endpoint))
    proxy = await mini_proxy(ext, upstream, aiohttp_server)
    await post(proxy, {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    await flush(ext)
    await ext.close()
    assert receiver.spans == []


def test_without_an_endpoint_nothing_is_installed() -> None:
    """No endpoint in config or environment: no provider, no middleware, no client hooks."""
    ext = build_extension(tracing_settings(None))
    assert ext.tracer_provider is None
    assert ext.server_middlewares() == ()
    assert ext.client_trace_configs() == ()


def test_sdk_disabled_turns_tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SDK_DISABLED=true wins over a configured endpoint."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    ext = build_extension(tracing_settings("http://127.0.0.1:4318"))
    assert ext.tracer_provider is None
    assert ext.server_middlewares() == ()
