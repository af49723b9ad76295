"""What `/config` shows: the settings as JSON data with credentials and secrets hidden."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from proxy.config.models import Settings

_SECRET_KEY = re.compile(r"(passw|secret|token|api_?key|authori[sz]ation|credential)", re.I)


def redact_url(value: str) -> str:
    """`value` with any user:password@ replaced by `***@` (for logs and `/config`)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or (parts.password is None and parts.username is None):
        return value
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, key) for v in value]
    if value is not None and _SECRET_KEY.search(key):
        return "***"
    if isinstance(value, str):
        return redact_url(value)
    return value


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as JSON-ready data with URL credentials and secret-looking values hidden."""
    data: dict[str, Any] = _redact(settings.model_dump(mode="json"))
    return data
