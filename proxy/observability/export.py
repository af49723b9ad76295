"""The span processor: each finished span is written to OTLP bytes as it ends, and batches of
them leave from one export thread.

The SDK's BatchSpanProcessor keeps every finished span object until its batch is exported,
hundreds of them, and the export thread then walks all their objects again to encode them;
the measured cost was more than a third of what tracing adds to a request. Here the span is
written when it ends, while its objects are still in the cache, and only its bytes wait;
the export thread joins them into requests and sends them.

`EncodingSpanProcessor` reads the `OTEL_BSP_*` variables as the SDK's processor does, with
its defaults: `OTEL_BSP_SCHEDULE_DELAY` (ms between exports, 5000),
`OTEL_BSP_MAX_QUEUE_SIZE` (spans waiting at most, 2048), `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`
(spans per export request, 512; a full batch is exported at once) and
`OTEL_BSP_EXPORT_TIMEOUT` (ms, 30000: how long shutdown waits for the export thread). A
span that finds the queue full is dropped, counted in `dropped` and logged (at most every
10 s); the request that ended it never waits on the collector. Shutdown and
`force_flush` export everything still queued.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TypeVar

from opentelemetry.context import Context
from opentelemetry.sdk.environment_variables import (
    OTEL_BSP_EXPORT_TIMEOUT,
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_SCHEDULE_DELAY,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExportResult

from proxy.observability.otlp import EncodedSpan, FastOTLPSpanExporter

log = logging.getLogger(__name__)

# The SDK's defaults for the OTEL_BSP_* variables.
DEFAULT_SCHEDULE_DELAY_MILLIS = 5000
DEFAULT_MAX_QUEUE_SIZE = 2048
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512
DEFAULT_EXPORT_TIMEOUT_MILLIS = 30000
DROP_LOG_SECONDS = 10.0  # a full queue is logged at most this often


_N = TypeVar("_N", int, float)


def _env_int(name: str, default: int) -> int:
    """An integer variable as the SDK reads it: unset or not an integer means the default."""
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        log.error("%s is not an integer; using the default %d", name, default)
        return default


def _given_or_env(given: _N | None, name: str, default: int) -> _N | int:
    """A setting given to the processor, else its `OTEL_BSP_*` variable, else the default."""
    return _env_int(name, default) if given is None else given


class EncodingSpanProcessor(SpanProcessor):
    """Writes each sampled span to OTLP bytes when it ends; one thread exports them in batches."""

    def __init__(
        self,
        exporter: FastOTLPSpanExporter,
        max_queue_size: int | None = None,
        schedule_delay_millis: float | None = None,
        max_export_batch_size: int | None = None,
        export_timeout_millis: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_queue_size = _given_or_env(
            max_queue_size, OTEL_BSP_MAX_QUEUE_SIZE, DEFAULT_MAX_QUEUE_SIZE
        )
        delay = _given_or_env(
            schedule_delay_millis, OTEL_BSP_SCHEDULE_DELAY, DEFAULT_SCHEDULE_DELAY_MILLIS
        )
        self.max_export_batch_size = _given_or_env(
            max_export_batch_size, OTEL_BSP_MAX_EXPORT_BATCH_SIZE, DEFAULT_MAX_EXPORT_BATCH_SIZE
        )
        timeout = _given_or_env(
            export_timeout_millis, OTEL_BSP_EXPORT_TIMEOUT, DEFAULT_EXPORT_TIMEOUT_MILLIS
        )
        # The SDK's checks, with its messages.
        if self.max_queue_size <= 0:
            raise ValueError("max_queue_size must be a positive integer.")
        if delay <= 0:
            raise ValueError("schedule_delay_millis must be positive.")
        if self.max_export_batch_size <= 0:
            raise ValueError("max_export_batch_size must be a positive integer.")
        if self.max_export_batch_size > self.max_queue_size:
            raise ValueError("max_export_batch_size must be less than or equal to max_queue_size.")
        self.schedule_delay = delay / 1000
        self.export_timeout = timeout / 1000
        self.exporter = exporter
        self._writer = exporter.writer
        self._clock = clock
        self.dropped = 0
        self._last_drop_log: float | None = None
        self._queue: list[EncodedSpan] = []
        self._lock = threading.Lock()  # guards the queue
        self._export_lock = threading.Lock()  # one export at a time (worker or flush)
        self._wake = threading.Event()
        self._shutdown = False
        self._worker = self._start_worker()
        if hasattr(os, "register_at_fork"):
            # Weakly: a hook must not keep a processor alive after its provider is gone.
            after_fork = weakref.WeakMethod(self._after_fork)

            def after_in_child() -> None:
                method = after_fork()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=after_in_child)

    def _start_worker(self) -> threading.Thread:
        worker = threading.Thread(target=self._run, name="OtlpSpanExport", daemon=True)
        worker.start()
        return worker

    def _after_fork(self) -> None:
        # A forked child has the parent's queue but not its thread: start over.
        self._lock = threading.Lock()
        self._export_lock = threading.Lock()
        self._wake = threading.Event()
        self._queue = []
        if not self._shutdown:
            self._worker = self._start_worker()

    # -- SpanProcessor -----------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled or self._shutdown:
            return
        if len(self._queue) >= self.max_queue_size:  # full: not worth writing
            self._drop()
            return
        try:
            encoded = (span.resource, span.instrumentation_scope, self._writer.span(span))
        except Exception as exc:  # a span that cannot be written must not fail the request
            log.error("span %r could not be written, dropped: %s", span.name, exc)
            with self._lock:
                self.dropped += 1
            return
        with self._lock:
            queue = self._queue
            accepted = len(queue) < self.max_queue_size
            if accepted:
                queue.append(encoded)
            batch_full = len(queue) >= self.max_export_batch_size
        if not accepted:
            self._drop()
        elif batch_full and not self._wake.is_set():
            self._wake.set()

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        self._wake.set()
        self._worker.join(self.export_timeout)
        self.exporter.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self._shutdown:
            return False
        return self._export(everything=True)

    # -- export ------------------------------------------------------------------------

    def _drop(self) -> None:
        with self._lock:
            self.dropped += 1
            now = self._clock()
            if self._last_drop_log is not None and now - self._last_drop_log < DROP_LOG_SECONDS:
                return
            self._last_drop_log = now
        log.warning(
            "span queue full (OTEL_BSP_MAX_QUEUE_SIZE=%d): %d span(s) dropped so far",
            self.max_queue_size,
            self.dropped,
        )

    def _run(self) -> None:
        while not self._shutdown:
            woken = self._wake.wait(self.schedule_delay)
            self._wake.clear()
            # Woken by a full batch: export full batches; on schedule: whatever waits.
            self._export(everything=not woken)
        self._export(everything=True)

    def _export(self, everything: bool) -> bool:
        """Export queued spans in batches: all of them, or while a full batch waits."""
        ok = True
        with self._export_lock:
            while True:
                with self._lock:
                    queue = self._queue
                    if not queue or (not everything and len(queue) < self.max_export_batch_size):
                        break
                    batch = queue[: self.max_export_batch_size]
                    del queue[: self.max_export_batch_size]
                ok = self._send(batch) and ok
        return ok

    def _send(self, batch: list[EncodedSpan]) -> bool:
        try:
            result = self.exporter.export_encoded(self._writer.request(batch))
        except Exception:  # the export thread must survive whatever one batch does
            log.exception("exporting %d spans failed", len(batch))
            return False
        return result is SpanExportResult.SUCCESS
