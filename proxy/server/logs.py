"""Process logging for `serve`: text or JSON lines on stderr, levels, trace ids on records.

`configure_logging(settings.log)` installs one stderr handler on the root logger (unless the
embedding program configured logging already), sets `log.level` there and each level of
`log.levels` on its logger. Every module logs to its `__name__`, so the proxy's loggers form
one tree under `proxy` (the access log is `proxy.server.access_log`): a level set for `proxy`
reaches all of them and none of aiohttp's. Every record passes `TraceContextFilter`,
which adds the current OpenTelemetry span's `trace_id` and `span_id` when one is recording,
so a log line can be joined to its trace. JSON lines come from python-json-logger's orjson
formatter: `time`, `level`, `logger`, `message`, then any `extra` fields (the access log's).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from opentelemetry import trace
from pythonjsonlogger.orjson import OrjsonFormatter

from proxy.config import LogSettings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = ("levelname", "name", "message")
_RENAMED = {"levelname": "level", "name": "logger"}


class TraceContextFilter(logging.Filter):
    """Adds `trace_id` and `span_id` (hex, as OTLP backends show them) inside a traced span."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


class TextFormatter(logging.Formatter):
    """The classic one-line format; trace ids and `fields` are appended as key=value
    (leaving out those the record's `in_message` names: the message already says them)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields: dict[str, Any] = getattr(record, "fields", None) or {}
        shown: tuple[str, ...] = getattr(record, "in_message", ())
        if shown:
            fields = {key: value for key, value in fields.items() if key not in shown}
        for key in ("trace_id", "span_id"):
            value = getattr(record, key, None)
            if value is not None and key not in fields:
                fields = {**fields, key: value}
        if not fields:
            return line
        return line + " " + " ".join(f"{key}={value}" for key, value in fields.items())


def json_formatter() -> logging.Formatter:
    return OrjsonFormatter(
        list(JSON_FIELDS),
        rename_fields=_RENAMED,
        timestamp="time",  # ISO 8601 in UTC, microseconds
        reserved_attrs=[*_reserved(), "fields", "in_message"],
    )


def _reserved() -> list[str]:
    from pythonjsonlogger.core import RESERVED_ATTRS

    return list(RESERVED_ATTRS)


class _JsonFields(logging.Filter):
    """Spreads a record's `fields` (the access log's) into top-level JSON members."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields:
            for key, value in fields.items():
                setattr(record, key, value)
        return True


def handler_for(settings: LogSettings) -> logging.Handler:
    """A stderr handler with the configured format and the trace-context filter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TraceContextFilter())
    if settings.format == "json":
        handler.addFilter(_JsonFields())
        handler.setFormatter(json_formatter())
    else:
        handler.setFormatter(TextFormatter())
    return handler


def configure_logging(settings: LogSettings | None = None) -> None:
    """Root logging for the process, unless the embedding program set it up already."""
    settings = settings or LogSettings()
    root = logging.getLogger()
    if root.handlers:
        return
    root.addHandler(handler_for(settings))
    root.setLevel(settings.level.upper())
    for name, level in settings.levels.items():
        logging.getLogger(name).setLevel(level.upper())
