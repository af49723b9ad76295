"""The tracing middleware's shortcuts give what the OpenTelemetry parts they stand for give:
W3C trace headers formatted from the span context against the propagator's own injection,
the no-header extraction against the propagator's extraction, the cached answer outcome
against `set_status_code` on a real SDK span, and attributes set in one step against the
SDK span's `set_attributes`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.instrumentation._semconv import _StabilityMode
from opentelemetry.instrumentation.aiohttp_server import set_status_code
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.observability.span_attributes import set_span_attributes
from proxy.observability.trace_context import NO_CONTEXT, Propagation
from proxy.observability.tracing import Outcomes

TRACE = 0x0AF7651916CD43DD8448EB211C80319C
SPAN = 0x00F067AA0BA902B7

PROPAGATORS = {
    "default": CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]),
    "tracecontext": TraceContextTextMapPropagator(),
    "baggage": W3CBaggagePropagator(),
}


def contexts() -> list[object]:
    sampled = trace.NonRecordingSpan(SpanContext(TRACE, SPAN, False, TraceFlags(1)))
    unsampled = trace.NonRecordingSpan(SpanContext(TRACE, SPAN, False, TraceFlags(0)))
    stated = trace.NonRecordingSpan(
        SpanContext(TRACE, SPAN, False, TraceFlags(1), TraceState([("vendor", "v1"), ("b", "2")]))
    )
    with_span = trace.set_span_in_context(sampled)
    return [
        NO_CONTEXT,
        with_span,
        trace.set_span_in_context(unsampled),
        trace.set_span_in_context(stated),
        baggage.set_baggage("tenant", "a b", with_span),
        trace.set_span_in_context(trace.INVALID_SPAN),
    ]


def injected(propagator: TextMapPropagator, context: object) -> tuple[tuple[bytes, bytes], ...]:
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context=context)  # type: ignore[arg-type]
    return tuple((k.encode(), v.encode()) for k, v in carrier.items())


@pytest.mark.parametrize("name", sorted(PROPAGATORS))
def test_trace_headers_are_what_the_propagator_injects(name: str) -> None:
    propagator = PROPAGATORS[name]
    propagation = Propagation(propagator)
    for context in contexts():
        assert propagation.headers(context) == injected(propagator, context)  # type: ignore[arg-type]


def seen(context: Context) -> tuple[SpanContext, dict[str, object]]:
    """What a span started in `context` continues: its parent's span context and baggage."""
    return trace.get_current_span(context).get_span_context(), dict(baggage.get_all(context))


@pytest.mark.parametrize("name", sorted(PROPAGATORS))
def test_extraction_is_the_propagators_own(name: str) -> None:
    propagator = PROPAGATORS[name]
    propagation = Propagation(propagator)
    for headers in (
        {},
        {"content-type": "application/json"},
        {"traceparent": f"00-{TRACE:032x}-{SPAN:016x}-01"},
        {"traceparent": f"00-{TRACE:032x}-{SPAN:016x}-01", "tracestate": "vendor=v1"},
        {"baggage": "tenant=a"},
        {"traceparent": "garbage"},
    ):
        assert seen(propagation.extract(headers)) == seen(propagator.extract(headers))


def test_another_propagator_gets_no_shortcut() -> None:
    class Custom(TraceContextTextMapPropagator):
        """A subclass may read or write anything: it is used as it is."""

    propagation = Propagation(Custom())
    assert propagation.extract({}) is not NO_CONTEXT


def real_span(apply: object) -> ReadableSpan:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("s", kind=trace.SpanKind.SERVER)
    apply(span)  # type: ignore[operator]
    span.end()
    (finished,) = exporter.get_finished_spans()
    return finished


@pytest.mark.parametrize("mode", [_StabilityMode.HTTP, _StabilityMode.HTTP_DUP])
@pytest.mark.parametrize(
    ("status", "code"),
    [
        (200, None),
        (202, None),
        (302, None),
        (404, None),
        (422, "unknown_shape"),
        (500, None),
        (502, "upstream_failed"),
        (504, "upstream_timeout"),
        (99, None),
    ],
)
def test_a_cached_outcome_is_what_set_status_code_sets(
    mode: _StabilityMode, status: int, code: str | None
) -> None:
    def stock(span: trace.Span) -> None:
        set_status_code(span, status, sem_conv_opt_in_mode=mode)
        if status >= 400:
            span.set_attribute("error.type", code or str(status))

    outcomes = Outcomes(mode)

    def cached(span: trace.Span) -> None:
        for _ in range(2):  # the second from the cache
            attributes, result = outcomes.get(status, code)
        span.set_attributes(attributes)
        if result is not None:
            span.set_status(result)

    expected, got = real_span(stock), real_span(cached)
    assert dict(got.attributes or {}) == dict(expected.attributes or {})
    assert (got.status.status_code, got.status.description) == (
        expected.status.status_code,
        expected.status.description,
    )


EVENT_ATTRIBUTES: dict[str, object] = {
    "http.request.method": "POST",
    "server.port": 8080,
    "http.route": "/api/events",
    "noetl.event_id": "123456789012345678",
    "noetl.batch.event_ids": ["1", "2"],
    "noetl.sampled": True,
    "noetl.ratio": 0.5,
}


def finished(
    limits: SpanLimits,
    start: dict[str, object],
    attributes: dict[str, object],
    set_with: Callable[[trace.Span, dict[str, object]], None],
    *,
    ended: bool = False,
) -> ReadableSpan:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("s", attributes=start)  # type: ignore[arg-type]
    if ended:
        span.end()
    set_with(span, attributes)
    if not ended:
        span.end()
    (done,) = exporter.get_finished_spans()
    return done


@pytest.mark.parametrize(
    ("limits", "start", "attributes"),
    [
        (SpanLimits(), {}, EVENT_ATTRIBUTES),
        (SpanLimits(), {"noetl.client": "a"}, EVENT_ATTRIBUTES),
        (SpanLimits(), {"http.route": "/x", "z": 1}, EVENT_ATTRIBUTES),  # a key set again moves
        (SpanLimits(max_span_attributes=3), {}, EVENT_ATTRIBUTES),
        (SpanLimits(max_span_attributes=8), {"a": 1}, EVENT_ATTRIBUTES),
        (SpanLimits(max_span_attribute_length=4), {}, EVENT_ATTRIBUTES),
        (SpanLimits(), {}, {**EVENT_ATTRIBUTES, "none": None}),
        (SpanLimits(), {}, {**EVENT_ATTRIBUTES, "mapping": {"k": "v"}}),
        (SpanLimits(), {}, {**EVENT_ATTRIBUTES, "numbers": [1, 2]}),
        (SpanLimits(), {}, {**EVENT_ATTRIBUTES, "": "empty key"}),
        (SpanLimits(), {}, {**EVENT_ATTRIBUTES, "text": type("Text", (str,), {})("t")}),
        (SpanLimits(), {}, {}),
    ],
)
@pytest.mark.parametrize("ended", [False, True])
def test_attributes_set_in_one_step_are_what_the_sdk_sets(
    limits: SpanLimits, start: dict[str, object], attributes: dict[str, object], ended: bool
) -> None:
    def stock(span: trace.Span, given: dict[str, object]) -> None:
        span.set_attributes(given)  # type: ignore[arg-type]

    expected = finished(limits, start, attributes, stock, ended=ended)
    got = finished(limits, start, attributes, set_span_attributes, ended=ended)
    assert list((got.attributes or {}).items()) == list((expected.attributes or {}).items())
    assert got.dropped_attributes == expected.dropped_attributes


def test_plain_attributes_are_written_without_the_sdk_cleaning_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("the SDK's set_attributes was called")

    ids = ["1", "2"]
    span = TracerProvider().get_tracer("t").start_span("s")
    assert isinstance(span, ReadableSpan)  # the SDK's span
    monkeypatch.setattr(type(span), "set_attributes", refuse)
    set_span_attributes(span, {**EVENT_ATTRIBUTES, "noetl.batch.event_ids": ids})
    ids.append("3")  # the span keeps the value it was given, as a tuple
    assert dict(span.attributes or {})["noetl.batch.event_ids"] == ("1", "2")
    with pytest.raises(AssertionError):  # anything else is the SDK's to clean
        set_span_attributes(span, {"none": None})
