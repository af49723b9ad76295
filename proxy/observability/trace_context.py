"""The trace context a request continues, and the headers that carry the proxy's span upstream.

`Propagation` wraps the configured propagator (`OTEL_PROPAGATORS`). For the default W3C
propagators (`tracecontext`, `baggage`, or both) it takes two shortcuts that give the same
result as the propagator itself (tests compare them): a request that carries none of their
headers continues no trace (what extracting would find), and `traceparent`/`tracestate` are
formatted straight from the span's context (the propagator does it through the current-span
lookups and a dict carrier). Baggage, and any other propagator, go through the propagator.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

Headers = tuple[tuple[bytes, bytes], ...]

# What extracting from a request without any trace header returns; a Context is immutable.
NO_CONTEXT = Context()


def _w3c_parts(propagator: TextMapPropagator) -> frozenset[type] | None:
    """The W3C propagator types `propagator` consists of, or None when it is anything else."""
    if type(propagator) is CompositePropagator:
        parts = getattr(propagator, "_propagators", None)  # not public: checked, else no shortcut
        if not isinstance(parts, list | tuple):
            return None
    else:
        parts = [propagator]
    kinds = frozenset(type(part) for part in parts)
    if not kinds or not kinds <= {TraceContextTextMapPropagator, W3CBaggagePropagator}:
        return None
    return kinds


class Propagation:
    """Extracts a request's trace context and renders the upstream's trace headers."""

    def __init__(self, propagator: TextMapPropagator) -> None:
        self.propagator = propagator
        fields = propagator.fields
        self.replaces = frozenset(name.lower().encode() for name in fields)
        kinds = _w3c_parts(propagator)
        self._fields = tuple(fields) if kinds is not None else None
        self._traceparent = kinds is not None and TraceContextTextMapPropagator in kinds
        self._baggage = kinds is not None and W3CBaggagePropagator in kinds
        self._w3c = kinds is not None

    def extract(self, headers: Mapping[str, str]) -> Context:
        fields = self._fields
        if fields is not None and not any(name in headers for name in fields):
            return NO_CONTEXT
        return self.propagator.extract(headers)

    def headers(self, context: Context) -> Headers:
        """The headers `context` (the proxy's span current) gives the upstream request."""
        if self._w3c and not (self._baggage and baggage.get_all(context)):
            if not self._traceparent:
                return ()
            span_context = trace.get_current_span(context).get_span_context()
            if span_context == trace.INVALID_SPAN_CONTEXT:
                return ()
            traceparent = b"00-%032x-%016x-%02x" % (
                span_context.trace_id,
                span_context.span_id,
                span_context.trace_flags,
            )
            state = span_context.trace_state
            if state:
                return ((b"traceparent", traceparent), (b"tracestate", state.to_header().encode()))
            return ((b"traceparent", traceparent),)
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=context)
        return tuple((key.encode(), value.encode()) for key, value in carrier.items())
