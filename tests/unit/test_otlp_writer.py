"""The direct OTLP span writer against the stock encoder: the same message, field for field.

Both encodings are parsed with opentelemetry-proto and compared. The writer caches the
encoded fields of repeating attributes, so every batch is encoded twice with one writer
(and once more after its cache was cleared) and must match each time.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, TraceFlags

from proxy.observability import otlp
from proxy.observability.otlp import SpanWriter

REMOTE = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(1),
)


def finished_spans(
    attributes: list[dict[str, Any]], limits: SpanLimits | None = None
) -> tuple[ReadableSpan, ...]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "envelope-proxy"}), span_limits=limits
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("proxy.observability.tracing", "1.2.3")
    parent = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE))
    for number, attrs in enumerate(attributes):
        span = tracer.start_span(
            f"POST /api/events {number}",
            context=parent if number % 2 == 0 else None,
            kind=trace.SpanKind.SERVER,
            links=[Link(REMOTE, {"link.n": number})] if number % 3 == 0 else None,
        )
        span.set_attributes(attrs)
        if number % 2:
            span.add_event("retry", {"attempt": number})
            span.add_event("again", {"attempt": number + 1})
            span.set_status(trace.StatusCode.ERROR, "upstream_timeout")
        span.end()
    return exporter.get_finished_spans()


def parsed(data: bytes) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    message.ParseFromString(data)
    return message


def assert_same_as_stock(spans: tuple[ReadableSpan, ...]) -> None:
    stock = parsed(encode_spans(spans).SerializeToString())
    writer = SpanWriter()
    assert parsed(writer.encode(spans)) == stock
    assert parsed(writer.encode(spans)) == stock  # from the field cache
    writer.clear_cache()
    assert parsed(writer.encode(spans)) == stock


def test_the_proxys_span_attributes_encode_as_the_stock_encoder_does() -> None:
    base = {
        "http.request.method": "POST",
        "http.route": "/api/events",
        "http.response.status_code": 202,
        "noetl.envelope.shape": "executor_event",
        "noetl.client": "worker-prod-7",
        "noetl.event_id": "478775660589088777",
        "noetl.batch.size": 3,
        "noetl.batch.event_ids": ["1", "2", "3"],
        "sampled": True,
        "ratio": 0.5,
    }
    varied = [
        dict(base, **{"noetl.event_id": str(n), "n": n, "flag": n % 2 == 0}) for n in range(6)
    ]
    assert_same_as_stock(finished_spans(varied))


def test_a_boolean_and_an_integer_of_equal_value_keep_their_own_encodings() -> None:
    """True == 1 and 0.0 == -0.0 in Python: a cache keyed by value alone would mix them."""
    assert_same_as_stock(
        finished_spans([{"v": True}, {"v": 1}, {"v": False}, {"v": 0}, {"v": 0.0}, {"v": -0.0}])
    )


def test_a_full_cache_starts_over_and_still_encodes_right(monkeypatch: Any) -> None:
    monkeypatch.setattr(otlp, "_MAX_CACHED_FIELDS", 4)
    assert_same_as_stock(finished_spans([{"a": str(n), "b": n, "c": "same"} for n in range(20)]))


scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
)
values = st.one_of(scalars, st.lists(st.text(max_size=5), max_size=3))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from("abcde"), values, max_size=5), max_size=4))
def test_any_attribute_values_encode_as_the_stock_encoder_does(
    attributes: list[dict[str, Any]],
) -> None:
    assert_same_as_stock(finished_spans(attributes))


SOME: list[dict[str, Any]] = [
    {"a": 1, "b": "two", "c": True},
    {"a": 2, "d": [1.5, 2.5]},
    {"e": "x"},
    {"a": 3},
]


def test_dropped_attributes_events_and_links_are_counted_as_the_stock_encoder_counts() -> None:
    limits = SpanLimits(max_span_attributes=2, max_events=1, max_links=0)
    spans = finished_spans(SOME, limits)
    assert any(span.dropped_attributes for span in spans)
    assert any(span.dropped_events for span in spans)
    assert any(span.dropped_links for span in spans)
    assert_same_as_stock(spans)


class _OwnSpan(ReadableSpan):
    """A span of another kind than the SDK's own: read through its properties."""

    @property
    def attributes(self) -> Any:
        return {**(super().attributes or {}), "own": "yes"}


def test_a_span_of_another_kind_is_read_through_its_properties() -> None:
    spans = tuple(
        _OwnSpan(
            span.name,
            span.get_span_context(),
            span.parent,
            span.resource,
            span.attributes,
            span.events,
            span.links,
            span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
        for span in finished_spans(SOME)
    )
    assert all(span.attributes["own"] == "yes" for span in spans)
    assert_same_as_stock(spans)
