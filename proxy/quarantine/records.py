"""One quarantined record: what a refused request was, as a JSON object on one line.

Fields: `id` (assigned by the store: `<segment>.<line>`), `received_at` (RFC 3339, UTC,
milliseconds), `client` (the capped client label the metrics use), `path`, `kind`
(`event` or `batch`), `shape` (the detected shape, or null when none was detected),
`target`, `code`, `field`, `index`, `headers` (an allow-list of request headers, never
credentials), `size` and `body_b64` (the body as received, base64, so bytes that are not
UTF-8 survive). Filters and paging over records live here too, shared by the admin route
and the command line.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

FORMAT_VERSION = 1
# Headers worth keeping to understand or resend a refused event. An allow-list: anything
# else (Authorization, Cookie, API keys, ...) is never written.
KEPT_HEADERS = (
    "content-type",
    "user-agent",
    "x-noetl-client",
    "traceparent",
    "tracestate",
    "x-request-id",
    "x-forwarded-for",
)
MAX_HEADER_CHARS = 1024
_CREDENTIAL = re.compile(r"(auth|cookie|token|secret|passw|api-?key|credential|session)", re.I)


def kept_headers(headers: Mapping[str, str] | None, client_header: str | None) -> dict[str, str]:
    """The allow-listed request headers (and the configured client header), bounded."""
    if headers is None:
        return {}
    names: tuple[str, ...] = KEPT_HEADERS
    if client_header is not None and client_header.lower() not in names:
        names = (*names, client_header.lower())
    kept: dict[str, str] = {}
    for name in names:
        if _CREDENTIAL.search(name):
            continue  # even when configured as the client header
        value = headers.get(name)
        if value is not None:
            kept[name] = value[:MAX_HEADER_CHARS]
    return kept


def iso_time(seconds: float) -> str:
    """Unix seconds as RFC 3339 UTC with milliseconds."""
    stamp = datetime.fromtimestamp(seconds, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def parse_time(text: str) -> float:
    """RFC 3339 / ISO 8601 (a date alone is midnight UTC) as Unix seconds; ValueError."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@dataclass(frozen=True, slots=True)
class Refusal:
    """What the server hands the quarantine about one refused body (before it has an id)."""

    received_at: float
    client: str
    path: str
    kind: str  # event | batch: the endpoint it was sent to
    target: str
    code: str
    field: str | None
    index: int | None
    headers: dict[str, str]
    body: bytes


def record_data(refusal: Refusal, shape: str | None) -> dict[str, Any]:
    """The record's fields except `id`, in the order they are written."""
    return {
        "v": FORMAT_VERSION,
        "received_at": iso_time(refusal.received_at),
        "client": refusal.client,
        "path": refusal.path,
        "kind": refusal.kind,
        "shape": shape,
        "target": refusal.target,
        "code": refusal.code,
        "field": refusal.field,
        "index": refusal.index,
        "headers": refusal.headers,
        "size": len(refusal.body),
        "body_b64": base64.b64encode(refusal.body).decode("ascii"),
    }


def body_of(record: Mapping[str, Any]) -> bytes:
    """The exact bytes that were refused."""
    return base64.b64decode(record["body_b64"])


def without_body(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key != "body_b64"}


@dataclass(frozen=True, slots=True)
class Filter:
    """Which records a listing wants; every given criterion must hold."""

    client: str | None = None
    code: str | None = None
    since: float | None = None  # Unix seconds, inclusive
    until: float | None = None  # Unix seconds, exclusive

    def matches(self, record: Mapping[str, Any]) -> bool:
        if self.client is not None and record.get("client") != self.client:
            return False
        if self.code is not None and record.get("code") != self.code:
            return False
        if self.since is None and self.until is None:
            return True
        try:
            at = parse_time(str(record.get("received_at")))
        except ValueError:
            return False
        if self.since is not None and at < self.since:
            return False
        return self.until is None or at < self.until
