"""Tracing settings through the real proxy: endpoint from config or the standard environment,
service name and sampler from the SDK's variables, and nothing installed when tracing is off.
"""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config import Settings
from proxy.observability import build_extension
from proxy.observability.tracing import SERVICE_VERSION_VALUE
from tests.functional.test_observability_proxy import (
    CALLER_SPAN,
    CALLER_TRACE,
    start_stack,
)
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.usefixtures("clean_otel_env")


SAMPLE = "executor_event__call_done_inline_result"


async def test_standard_environment_names_endpoint_and_resource(
    aiohttp_server: Any, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT turns tracing on; OTEL_SERVICE_NAME wins over config."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.traces_url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "proxy-from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    stack = await start_stack(aiohttp_server, {"tracing": {"service_name": "from-config"}})
    assert (await stack.post(SAMPLE))[0] == 200
    spans = await stack.spans(receiver, 1)
    assert {s.resource["service.name"] for s in spans} == {"proxy-from-env"}
    assert {s.resource["deployment.environment"] for s in spans} == {"test"}
    assert {s.resource["service.version"] for s in spans} == {SERVICE_VERSION_VALUE}
    assert {(s.kind, s.scope) for s in spans} == {("SERVER", "proxy.observability.tracing")}


async def test_config_service_name_without_environment(
    aiohttp_server: Any, receiver: OtlpReceiver
) -> None:
    """Without OTEL_SERVICE_NAME the config's tracing.service_name names the spans."""
    stack = await start_stack(
        aiohttp_server,
        {"tracing": {"otlp_endpoint": receiver.endpoint, "service_name": "edge-proxy"}},
    )
    assert (await stack.post(SAMPLE))[0] == 200
    spans = await stack.spans(receiver, 1)
    assert {s.resource["service.name"] for s in spans} == {"edge-proxy"}


async def test_sampler_always_off_exports_nothing_but_still_propagates(
    aiohttp_server: Any, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_TRACES_SAMPLER=always_off: no span leaves, the upstream still gets a traceparent."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    stack = await start_stack(aiohttp_server, {"tracing": {"otlp_endpoint": receiver.endpoint}})
    status, _ = await stack.post(SAMPLE, traceparent=f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
    assert status == 200
    assert stack.ext.tracer_provider is not None
    stack.ext.tracer_provider.force_flush()
    await stack.ext.close()
    assert receiver.spans == []
    _, trace_id, _, flags = stack.upstream.headers[-1]["traceparent"].split("-")
    assert trace_id == CALLER_TRACE
    assert int(flags, 16) & 1 == 0


def test_without_an_endpoint_nothing_is_installed() -> None:
    """No endpoint in config or environment: no provider, no middleware, no client hooks."""
    ext = build_extension(Settings())
    assert ext.tracer_provider is None
    assert ext.server_middlewares() == ()
    assert ext.client_trace_configs() == ()


def test_sdk_disabled_turns_tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SDK_DISABLED=true wins over a configured endpoint."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    ext = build_extension(
        Settings.model_validate({"tracing": {"otlp_endpoint": "http://127.0.0.1:4318"}})
    )
    assert ext.tracer_provider is None
    assert ext.server_middlewares() == ()


@pytest.mark.parametrize(
    "traceparent",
    [
        pytest.param("garbage", id="garbage"),
        pytest.param(f"00-{'0' * 32}-{CALLER_SPAN}-01", id="zero-trace-id"),
        pytest.param(f"ff-{CALLER_TRACE}-{CALLER_SPAN}-01", id="version-ff"),
        pytest.param(f"00-{CALLER_TRACE}-{'0' * 16}-01", id="zero-parent-id"),
    ],
)
async def test_a_malformed_traceparent_starts_a_new_trace(
    aiohttp_server: Any, receiver: OtlpReceiver, traceparent: str
) -> None:
    """An invalid inbound traceparent is ignored: the request succeeds under a new root span."""
    stack = await start_stack(aiohttp_server, {"tracing": {"otlp_endpoint": receiver.endpoint}})
    status, answer = await stack.post(SAMPLE, traceparent=traceparent)
    assert status == 200
    await stack.spans(receiver, 1)
    (server,) = [
        s
        for s in receiver.with_attribute("noetl.event_id", str(answer["event_id"]))
        if s.kind == "SERVER"
    ]
    assert server.parent_span_id is None
    assert server.trace_id not in (CALLER_TRACE, "0" * 32)
    sent = stack.upstream.headers[-1]["traceparent"]
    assert sent.split("-")[1] == server.trace_id


async def test_http_dup_adds_the_old_attribute_names(
    aiohttp_server: Any, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_SEMCONV_STABILITY_OPT_IN=http/dup: the stable names and the old ones side by side."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup")
    stack = await start_stack(aiohttp_server, {"tracing": {"otlp_endpoint": receiver.endpoint}})
    assert (await stack.post(SAMPLE))[0] == 200
    (span,) = await stack.spans(receiver, 1)
    assert span.attributes["http.request.method"] == span.attributes["http.method"] == "POST"
    assert span.attributes["http.response.status_code"] == span.attributes["http.status_code"]
    assert span.attributes["http.route"] == "/api/events"


async def test_pass_through_spans_are_named_by_method_and_parent_the_upstream_call(
    aiohttp_server: Any, receiver: OtlpReceiver
) -> None:
    """A pass-through request's span is named by its method alone (its route matches any
    path), has no http.route, and is the parent the upstream sees."""
    stack = await start_stack(aiohttp_server, {"tracing": {"otlp_endpoint": receiver.endpoint}})
    path = "/api/executions/7/status"
    status = await stack.get(path, traceparent=f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
    assert status == 200
    (span,) = await stack.spans(receiver, 1)
    assert (span.name, span.kind, span.trace_id) == ("GET", "SERVER", CALLER_TRACE)
    assert "http.route" not in span.attributes
    assert span.attributes["url.path"] == path
    sent = stack.upstream.headers[-1]["traceparent"]
    assert sent.split("-")[1:3] == [CALLER_TRACE, span.span_id]


async def test_each_event_span_has_its_own_request_attributes(
    aiohttp_server: Any, receiver: OtlpReceiver
) -> None:
    """Event spans reuse attributes computed for an earlier identical request: one that
    differs in its user agent or query string still gets its own."""
    stack = await start_stack(aiohttp_server, {"tracing": {"otlp_endpoint": receiver.endpoint}})
    for user_agent, path in (
        ("worker/1", "/api/events"),
        ("worker/1", "/api/events"),
        ("worker/2", "/api/events"),
        ("worker/2", "/api/events?token=secret"),
    ):
        assert (await stack.post(SAMPLE, path=path, **{"User-Agent": user_agent}))[0] == 200
    spans = await stack.spans(receiver, 4)
    seen = sorted(
        (s.attributes["user_agent.original"], s.attributes["url.path"], s.attributes["http.route"])
        for s in spans
    )
    assert seen == [
        ("worker/1", "/api/events", "/api/events"),
        ("worker/1", "/api/events", "/api/events"),
        ("worker/2", "/api/events", "/api/events"),
        ("worker/2", "/api/events", "/api/events"),
    ]
    assert not any("secret" in str(value) for s in spans for value in s.attributes.values())
