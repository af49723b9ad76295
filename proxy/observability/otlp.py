"""OTLP/HTTP span export with a direct protobuf writer.

The stock exporter builds a tree of protobuf message objects for every span and then
serialises it, which costs more per span than the proxy's whole event path. This writer
emits the same `ExportTraceServiceRequest` bytes straight from the SDK's spans: the same
fields, the same grouping by resource and instrumentation scope, the same defaults (the
tests decode both with opentelemetry-proto and compare). Resources, scopes and attribute
keys repeat from span to span, so their encodings are cached.

`FastOTLPSpanExporter` is the stock `OTLPSpanExporter` (endpoint, headers, timeout,
compression, retries and every `OTEL_EXPORTER_OTLP_*` variable as the SDK reads them) with
only the encoding step replaced.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode

log = logging.getLogger(__name__)

_SMALL = [bytes((n,)) for n in range(128)]
_FIXED64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<d").pack
_U64 = (1 << 64) - 1
_MAX_CACHED_FIELDS = 8192
# Attributes whose values are new on nearly every span.
_UNIQUE_KEYS = frozenset(
    {"noetl.event_id", "noetl.request_event_id", "noetl.execution_id", "noetl.batch.event_ids"}
)

# SpanFlags: the parent's is-remote bit is known (0x100), and it is remote (0x200).
_FLAGS_KNOWN = b"\x85\x01" + struct.pack("<I", 0x100)
_FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", 0x300)


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _string(tag: bytes, text: str | None) -> bytes:
    """A proto3 string field: omitted when empty, as the stock encoder's messages omit it."""
    if not text:
        return b""
    return _delimited(tag, text.encode("utf-8"))


def _uint(tag: bytes, value: int) -> bytes:
    return tag + _varint(value) if value else b""


def _any_value(value: Any) -> bytes:
    """An `AnyValue` message body."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _delimited(b"\x0a", value.encode("utf-8"))
    if isinstance(value, int):
        return b"\x18" + _varint(value & _U64)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _delimited(b"\x3a", value)
    if isinstance(value, Sequence):
        items = b"".join(_delimited(b"\x0a", _any_value(item)) for item in value)
        return _delimited(b"\x2a", items)
    if isinstance(value, Mapping):
        pairs = b"".join(_delimited(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        return _delimited(b"\x32", pairs)
    raise TypeError(f"invalid attribute value type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    return _delimited(b"\x0a", key.encode("utf-8")) + _delimited(b"\x12", _any_value(value))


# A span written by `SpanWriter.span`, with the resource and scope it is grouped under.
EncodedSpan = tuple[Resource, InstrumentationScope | None, bytes]


class SpanWriter:
    """Writes `ExportTraceServiceRequest` bytes for a batch of finished SDK spans."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        # Encoded `KeyValue` fields by tag, then by (key, value): one cache for strings and
        # one for integers (`True == 1`: a bool must not hit an int's entry, nor the reverse).
        self._strings: dict[bytes, dict[tuple[str, str], bytes]] = {}
        self._integers: dict[bytes, dict[tuple[str, int], bytes]] = {}
        self._cached = 0
        self._named: dict[tuple[str, SpanKind], bytes] = {}
        self._statuses: dict[tuple[StatusCode, str | None], bytes] = {}
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        self._scopes: dict[int, tuple[InstrumentationScope | None, bytes]] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        return self.request(
            [(span.resource, span.instrumentation_scope, self.span(span)) for span in spans]
        )

    def request(self, encoded: Sequence[EncodedSpan]) -> bytes:
        """The `ExportTraceServiceRequest` of spans already written by `span`, grouped by
        resource and then instrumentation scope (in the order they come)."""
        grouped: dict[int, tuple[Resource, dict[int, tuple[Any, list[bytes]]]]] = {}
        for resource, scope, span in encoded:
            scope = scope or None
            scopes = grouped.setdefault(id(resource), (resource, {}))[1]
            scopes.setdefault(id(scope), (scope, []))[1].append(span)
        out = []
        for resource, scopes in grouped.values():
            body = [_delimited(b"\x0a", self._resource(resource))]
            for scope, spans in scopes.values():
                scope_spans = [_delimited(b"\x0a", self._scope(scope))]
                scope_spans.extend(_delimited(b"\x12", span) for span in spans)
                scope_spans.append(_string(b"\x1a", scope.schema_url if scope else None))
                body.append(_delimited(b"\x12", b"".join(scope_spans)))
            body.append(_string(b"\x1a", resource.schema_url))
            out.append(_delimited(b"\x0a", b"".join(body)))
        return b"".join(out)

    # -- cached parts --------------------------------------------------------------------

    def _resource(self, resource: Resource) -> bytes:
        cached = self._resources.get(id(resource))
        if cached is not None and cached[0] is resource:
            return cached[1]
        encoded = self._attributes(b"\x0a", resource.attributes)
        if len(self._resources) > 64:  # resources are few; ids of dead ones may be reused
            self._resources.clear()
        self._resources[id(resource)] = (resource, encoded)
        return encoded

    def _scope(self, scope: InstrumentationScope | None) -> bytes:
        cached = self._scopes.get(id(scope))
        if cached is not None and cached[0] is scope:
            return cached[1]
        encoded = b""
        if scope is not None:
            encoded = (
                _string(b"\x0a", scope.name)
                + _string(b"\x12", scope.version)
                + self._attributes(b"\x1a", scope.attributes)
            )
        if len(self._scopes) > 64:
            self._scopes.clear()
        self._scopes[id(scope)] = (scope, encoded)
        return encoded

    def _attributes(self, tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
        """Repeated `KeyValue` fields under `tag`."""
        if not attributes:
            return b""
        strings = self._strings.get(tag)
        integers = self._integers.get(tag)
        if strings is None or integers is None:
            strings = self._strings.setdefault(tag, {})
            integers = self._integers.setdefault(tag, {})
        # A span's attributes are a BoundedAttributes behind a read-only proxy, whose items
        # are read one Python call per key; its copy() is one C-level dict copy.
        copy = getattr(attributes, "copy", None)
        items = (copy() if copy is not None else attributes).items()
        parts = []
        for key, value in items:
            # Most attributes repeat from span to span (method, route, shape, client...):
            # their whole field is written once. Ids do not repeat: not kept.
            kind = type(value)
            if kind is str:
                field = strings.get((key, value))
                if field is None:
                    field = self._field(tag, key, value, strings)
            elif kind is int:
                field = integers.get((key, value))
                if field is None:
                    field = self._field(tag, key, value, integers)
            else:
                field = self._field(tag, key, value, None)
            parts.append(field)
        return b"".join(parts)

    def clear_cache(self) -> None:
        """Forget the encoded attribute fields (they are written again when next seen)."""
        for strings in self._strings.values():
            strings.clear()
        for integers in self._integers.values():
            integers.clear()
        self._cached = 0

    def _field(self, tag: bytes, key: str, value: Any, cache: dict[Any, bytes] | None) -> bytes:
        try:
            pair = self._key(key) + _delimited(b"\x12", _any_value(value))
        except TypeError as exc:
            log.error("cannot encode span attribute %s: %s", key, exc)
            return b""
        field = tag + _varint(len(pair)) + pair
        if cache is not None and key not in _UNIQUE_KEYS:
            if self._cached >= _MAX_CACHED_FIELDS:
                self.clear_cache()
            cache[(key, value)] = field
            self._cached += 1
        return field

    def _key(self, key: str) -> bytes:
        keys = self._keys
        key_field = keys.get(key)
        if key_field is None:
            key_field = _delimited(b"\x0a", key.encode("utf-8"))
            if len(keys) < 4096:  # attribute keys are a fixed few; bound the cache anyway
                keys[key] = key_field
        return key_field

    # -- spans ---------------------------------------------------------------------------

    def span(self, span: ReadableSpan) -> bytes:
        """One `Span` message body."""
        context = span.get_span_context()
        assert context is not None
        parent = span.parent
        parts = [
            b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
            b"\x12\x08" + context.span_id.to_bytes(8, "big"),
        ]
        if context.trace_state:
            parts.append(_string(b"\x1a", _trace_state(context)))
        if parent is not None:
            parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
        # Name and kind repeat from span to span: written once per pair.
        named = self._named.get((span.name, span.kind))
        if named is None:
            named = _string(b"\x2a", span.name) + _uint(b"\x30", span.kind.value + 1)
            if len(self._named) >= 1024:
                self._named.clear()
            self._named[(span.name, span.kind)] = named  # the proto enum counts from 1
        parts.append(named)
        if span.start_time:
            parts.append(b"\x39" + _FIXED64(span.start_time))
        if span.end_time:
            parts.append(b"\x41" + _FIXED64(span.end_time))
        attributes, events, links, dropped = _contents(span)
        parts.append(self._attributes(b"\x4a", attributes))
        parts.append(_uint(b"\x50", dropped[0]))
        for event in events:
            event_parts = (
                (b"\x09" + _FIXED64(event.timestamp) if event.timestamp else b"")
                + _string(b"\x12", event.name)
                + self._attributes(b"\x1a", event.attributes)
                + _uint(b"\x20", event.dropped_attributes)
            )
            parts.append(_delimited(b"\x5a", event_parts))
        parts.append(_uint(b"\x60", dropped[1]))
        for link in links:
            link_parts = (
                b"\x0a\x10"
                + link.context.trace_id.to_bytes(16, "big")
                + b"\x12\x08"
                + link.context.span_id.to_bytes(8, "big")
                + self._attributes(b"\x22", link.attributes)
                + _uint(b"\x28", link.dropped_attributes)
                + (b"\x35" + struct.pack("<I", 0x300 if link.context.is_remote else 0x100))
            )
            parts.append(_delimited(b"\x6a", link_parts))
        parts.append(_uint(b"\x70", dropped[2]))
        status = span.status
        key = (status.status_code, status.description)
        field = self._statuses.get(key)
        if field is None:
            field = _delimited(
                b"\x7a",
                _string(b"\x12", status.description) + _uint(b"\x18", status.status_code.value),
            )
            if len(self._statuses) >= 1024:  # descriptions may be exception names
                self._statuses.clear()
            self._statuses[key] = field
        parts.append(field)
        parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_KNOWN)
        return b"".join(parts)


def _contents(
    span: ReadableSpan,
) -> tuple[Mapping[str, Any], Sequence[Event], Sequence[Link], tuple[int, int, int]]:
    """A finished span's attributes, events and links, and how many of each were dropped.

    The SDK hands its processors a plain `ReadableSpan`, whose properties copy each of
    them on every read (~4 µs a span together); its own fields are read instead. Any other
    span is read through its properties.
    """
    if type(span) is ReadableSpan:
        attributes, events, links = span._attributes, span._events, span._links
        if (
            type(attributes) is BoundedAttributes
            and type(events) is BoundedList
            and type(links) is BoundedList
        ):
            dropped = (attributes.dropped, events.dropped, links.dropped)
            return attributes._dict, events._dq, links._dq, dropped  # type: ignore[attr-defined]
    dropped = (span.dropped_attributes, span.dropped_events, span.dropped_links)
    return span.attributes or {}, span.events, span.links, dropped


def _trace_state(context: SpanContext) -> str | None:
    state = context.trace_state
    if not state:
        return None
    return ",".join(f"{key}={value}" for key, value in state.items())


class FastOTLPSpanExporter(OTLPSpanExporter):
    """The stock OTLP/HTTP span exporter, encoding with `SpanWriter`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writer = SpanWriter()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = getattr(self, "_client", None)
        if getattr(self, "_shutdown", True) or client is None or not hasattr(client, "export"):
            return super().export(spans)  # another SDK release: its own path
        try:
            data = self.writer.encode(spans)
        except Exception as exc:  # never lose the batch to an encoding surprise
            log.error("fast span encoding failed (%s); using the stock encoder", exc)
            return super().export(spans)
        return self._send(client, data)

    def export_encoded(self, data: bytes) -> SpanExportResult:
        """Send an `ExportTraceServiceRequest` already written (by `SpanWriter.request`)."""
        client = getattr(self, "_client", None)
        if getattr(self, "_shutdown", True) or client is None or not hasattr(client, "export"):
            log.warning("span exporter shut down or unusable: %d bytes of spans dropped", len(data))
            return SpanExportResult.FAILURE
        return self._send(client, data)

    def _send(self, client: Any, data: bytes) -> SpanExportResult:
        limit = getattr(self, "_max_request_size", 0)
        if limit and limit > 0 and len(data) > limit:
            log.warning(
                "dropping a span batch of %d bytes, over the %d byte request limit",
                len(data),
                limit,
            )
            return SpanExportResult.FAILURE
        result = client.export(data)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
