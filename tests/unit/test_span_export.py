"""The span processor against a real OTLP/HTTP receiver on loopback: spans leave on schedule,
when a batch fills and at shutdown; a dead collector never holds up the code that ends a
span, and a full queue drops spans and counts them. The `OTEL_BSP_*` variables are read as
the SDK's processor reads them.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from proxy.observability.export import EncodingSpanProcessor
from proxy.observability.otlp import FastOTLPSpanExporter
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.usefixtures("clean_otel_env")


def traced(processor: EncodingSpanProcessor) -> trace.Tracer:
    provider = TracerProvider(resource=Resource.create({"service.name": "t"}))
    provider.add_span_processor(processor)
    return provider.get_tracer("proxy.observability.tracing", "1")


def end_spans(tracer: trace.Tracer, count: int, prefix: str = "span") -> None:
    for number in range(count):
        span = tracer.start_span(f"{prefix} {number}", kind=trace.SpanKind.SERVER)
        span.set_attribute("n", number)
        span.end()


def wait_until(predicate: object, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_spans_leave_on_schedule(receiver: OtlpReceiver) -> None:
    processor = EncodingSpanProcessor(
        FastOTLPSpanExporter(endpoint=receiver.traces_url), schedule_delay_millis=100
    )
    end_spans(traced(processor), 3)
    assert wait_until(lambda: len(receiver.spans) == 3, 5)
    assert sorted(s.name for s in receiver.spans) == ["span 0", "span 1", "span 2"]
    assert {s.attributes["n"] for s in receiver.spans} == {0, 1, 2}
    processor.shutdown()


def test_a_full_batch_leaves_at_once_and_a_partial_one_waits(receiver: OtlpReceiver) -> None:
    processor = EncodingSpanProcessor(
        FastOTLPSpanExporter(endpoint=receiver.traces_url),
        schedule_delay_millis=60_000,
        max_export_batch_size=4,
    )
    tracer = traced(processor)
    end_spans(tracer, 3)
    time.sleep(0.5)
    assert receiver.spans == []  # three of four: waits for the schedule
    end_spans(tracer, 1, "fourth")
    assert wait_until(lambda: len(receiver.spans) == 4, 5)
    end_spans(tracer, 9, "more")  # two more full batches, one span left over
    assert wait_until(lambda: len(receiver.spans) == 12, 5)
    assert receiver.requests == 3
    processor.shutdown()
    assert len(receiver.spans) == 13  # the one left over, at shutdown


def test_shutdown_exports_every_queued_span(receiver: OtlpReceiver) -> None:
    processor = EncodingSpanProcessor(
        FastOTLPSpanExporter(endpoint=receiver.traces_url), schedule_delay_millis=60_000
    )
    end_spans(traced(processor), 700)  # one batch of 512 on its own, the rest at shutdown
    processor.shutdown()
    assert len(receiver.spans) == 700
    assert len({s.span_id for s in receiver.spans}) == 700


def test_force_flush_exports_now(receiver: OtlpReceiver) -> None:
    processor = EncodingSpanProcessor(
        FastOTLPSpanExporter(endpoint=receiver.traces_url), schedule_delay_millis=60_000
    )
    end_spans(traced(processor), 5)
    assert processor.force_flush()
    assert len(receiver.spans) == 5
    processor.shutdown()
    assert not processor.force_flush()  # as the SDK's: nothing after shutdown


def test_unsampled_spans_are_not_exported(receiver: OtlpReceiver) -> None:
    processor = EncodingSpanProcessor(
        FastOTLPSpanExporter(endpoint=receiver.traces_url), schedule_delay_millis=60_000
    )
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(processor)
    end_spans(provider.get_tracer("t"), 5)
    processor.shutdown()
    assert receiver.spans == []


def test_the_batches_decode_as_the_sdks_own_processor_sends_them(receiver: OtlpReceiver) -> None:
    """The same spans through the SDK's BatchSpanProcessor and this one: the receiver reads
    the same names, ids, attributes, resource and scope."""
    ours = EncodingSpanProcessor(
        FastOTLPSpanExporter(endpoint=receiver.traces_url), schedule_delay_millis=60_000
    )
    stock = BatchSpanProcessor(FastOTLPSpanExporter(endpoint=receiver.traces_url))
    provider = TracerProvider(resource=Resource.create({"service.name": "t"}))
    provider.add_span_processor(ours)
    provider.add_span_processor(stock)
    end_spans(provider.get_tracer("proxy.observability.tracing", "1"), 6)
    provider.shutdown()
    spans = receiver.spans
    assert len(spans) == 12
    by_id: dict[str, list[object]] = {}
    for span in spans:
        by_id.setdefault(span.span_id, []).append(span)
    assert all(len(pair) == 2 and pair[0] == pair[1] for pair in by_id.values())


@pytest.fixture
def dead_collector() -> Iterator[str]:
    """A traces URL whose server accepts connections and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1/traces"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def test_a_dead_collector_never_holds_up_ending_spans_and_a_full_queue_drops(
    dead_collector: str, caplog: pytest.LogCaptureFixture
) -> None:
    processor = EncodingSpanProcessor(
        FastOTLPSpanExporter(endpoint=dead_collector, timeout=2),
        schedule_delay_millis=60_000,
        max_queue_size=8,
        max_export_batch_size=4,
        export_timeout_millis=100,
    )
    tracer = traced(processor)
    end_spans(tracer, 4)  # a full batch: the export thread is now stuck on the collector
    time.sleep(0.3)
    slowest = 0.0
    with caplog.at_level(logging.WARNING, logger="proxy.observability.export"):
        for number in range(200):
            started = time.perf_counter()
            end_spans(tracer, 1, f"late {number}")
            slowest = max(slowest, time.perf_counter() - started)
        assert slowest < 0.05  # each span ends without waiting on the collector
        assert processor.dropped == 200 - 8  # the queue holds 8; the rest are dropped
        started = time.perf_counter()
        processor.shutdown()  # waits no longer than OTEL_BSP_EXPORT_TIMEOUT for the thread
        assert time.perf_counter() - started < 1.0
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert drops == ["span queue full (OTEL_BSP_MAX_QUEUE_SIZE=8): 1 span(s) dropped so far"]


def test_the_bsp_variables_are_read_as_the_sdk_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = FastOTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    defaults = EncodingSpanProcessor(exporter)
    stock = BatchSpanProcessor(exporter)
    assert (defaults.max_queue_size, defaults.max_export_batch_size) == (2048, 512)
    assert (defaults.schedule_delay, defaults.export_timeout) == (5.0, 30.0)
    stock.shutdown()  # type: ignore[no-untyped-call]
    defaults.shutdown()

    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "250")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_EXPORT_TIMEOUT", "1500")
    exporter = FastOTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    configured = EncodingSpanProcessor(exporter)
    assert (configured.max_queue_size, configured.max_export_batch_size) == (100, 10)
    assert (configured.schedule_delay, configured.export_timeout) == (0.25, 1.5)
    configured.shutdown()

    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "many")  # not an integer: the default
    exporter = FastOTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    fallback = EncodingSpanProcessor(exporter)
    assert fallback.max_queue_size == 2048
    fallback.shutdown()

    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "5")  # a batch larger than the queue
    for build in (EncodingSpanProcessor, BatchSpanProcessor):
        with pytest.raises(ValueError, match="max_export_batch_size"):
            build(FastOTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces"))
