"""Emulated server versions and the body layer each one puts in front of its handler.

A profile names one NoETL control plane release family. For the Rust server it is the
request structs of that release (read in `noetl/server` at the tags v1.0.3, v2.9.0 and
v2.19.1; HEAD 3.83.1 ingests like 2.19.1) plus axum's checks (JSON content type, 2 MiB
body limit); for the Python server it is the pydantic models behind FastAPI.

`decode_request` is pure: (profile, route, content type, body bytes) -> either the
refusal the server's body layer sends, or the decoded request for the handler
(`ingest_rust` / `ingest_python`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from proxy.emulator.python_models import BatchEventRequest, EventRequest, decode_python_body
from proxy.emulator.serde.schema import (
    BOOL,
    ID_LAX,
    ITEMS,
    OPT_DATETIME,
    OPT_I64_VEC,
    OPT_ID_LAX,
    OPT_STRING,
    OPT_VALUE,
    STRING,
    VALUE,
    Field,
    Rejection,
    Struct,
)
from proxy.emulator.serde.structs import deserialize_body

Route = Literal["event", "batch"]
Family = Literal["rust", "python"]

RUST_BODY_LIMIT = 2 * 1024 * 1024  # axum's DefaultBodyLimit; /api/events never raises it
TEXT_PLAIN = "text/plain; charset=utf-8"
_RUST_415 = b"Expected request with `Content-Type: application/json`"
RUST_TOO_LARGE = b"Failed to buffer the request body: length limit exceeded"


@dataclass(frozen=True)
class ProfileSpec:
    """One emulated release family: its rules, and the version its health reports."""

    name: str
    family: Family
    default_version: str | None
    summary: str
    event_struct: Struct | None = None
    batch_struct: Struct | None = None


@dataclass(frozen=True)
class Refusal:
    """An answer from the body layer, before any handler runs."""

    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Decoded:
    """A body the body layer accepted: Rust field values or the Python model."""

    route: Route
    rust: dict[str, Any] | None = None
    python: EventRequest | BatchEventRequest | None = None


def _common_fields(name_field: Field, payload_field: Field) -> tuple[Field, ...]:
    return (
        name_field,
        payload_field,
        Field("meta", OPT_VALUE),
        Field("worker_id", OPT_STRING),
        Field("result_kind", STRING, default="data"),
        Field("result_uri", OPT_STRING),
        Field("event_ids", OPT_I64_VEC),
        Field("actionable", BOOL, default=True),
        Field("informative", BOOL, default=True),
    )


def _rust_structs(version: str) -> tuple[Struct, Struct]:
    """The request structs of one Rust release family, in field declaration order."""
    if version == "1.0.3":
        name = Field("name", STRING)
        payload = Field("payload", VALUE, default=None)
        id_kind = STRING
        extra: tuple[Field, ...] = ()
    else:
        name = Field("event_type", STRING, aliases=("name",))
        payload = Field("payload", VALUE, aliases=("context",), default=None)
        lax = version == "2.19.1"
        id_kind = ID_LAX if lax else STRING
        extra = (
            Field("event_id", OPT_ID_LAX if lax else OPT_STRING, default=None),
            Field("status", OPT_STRING, default=None),
            Field("created_at", OPT_DATETIME, default=None),
        )
    common = _common_fields(name, payload)
    event = Struct(
        "EventRequest",
        (Field("execution_id", id_kind), Field("step", STRING), *common, *extra),
    )
    item = Struct(
        "BatchEventItem",
        (
            Field("step", STRING),
            name,
            payload,
            Field("actionable", BOOL, default=False),
            Field("informative", BOOL, default=True),
        ),
    )
    batch = Struct(
        "BatchEventRequest",
        (
            Field("execution_id", id_kind),
            Field("worker_id", OPT_STRING),
            Field("events", ITEMS),
        ),
        items=item,
    )
    return event, batch


def _rust_profile(version: str, summary: str) -> ProfileSpec:
    event, batch = _rust_structs(version)
    return ProfileSpec(f"rust-{version}", "rust", version, summary, event, batch)


PROFILES: Mapping[str, ProfileSpec] = MappingProxyType(
    {
        "rust-1.0.3": _rust_profile(
            "1.0.3",
            "Rust server <= 1.0.3: string execution_id, `name` and `payload` only",
        ),
        "rust-2.9.0": _rust_profile(
            "2.9.0",
            "Rust server 2.0.0-2.19.0: event_type/name and payload/context aliases,"
            " string ids only",
        ),
        "rust-2.19.1": _rust_profile(
            "2.19.1",
            "Rust server >= 2.19.1 (HEAD 3.83.1 ingests alike): string or integer ids",
        ),
        "python": ProfileSpec(
            "python",
            "python",
            None,
            "Python server >= 4.0.0 (FastAPI/pydantic); health reports no version",
        ),
    }
)


def profile_for_version(version: str) -> str:
    """The Rust rules a release number ingests with (for a version-only switch)."""
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
    if parts < (2, 0, 0):
        return "rust-1.0.3"
    if parts < (2, 19, 1):
        return "rust-2.9.0"
    return "rust-2.19.1"


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAMETER = re.compile(rf"\s*{_TOKEN}\s*=\s*(?:{_TOKEN}|\"(?:[^\"\\]|\\.)*\")\s*")
_MEDIA_TYPE = re.compile(rf"\s*({_TOKEN})/({_TOKEN})\s*")


def axum_accepts_content_type(value: str | None) -> bool:
    """axum's `json_content_type`: `application/json` or `application/*+json`, any params."""
    if value is None:
        return False
    media, *params = value.split(";")
    match = _MEDIA_TYPE.fullmatch(media)
    if match is None or not all(_PARAMETER.fullmatch(p) for p in params):
        return False
    kind, subtype = match.group(1).lower(), match.group(2).lower()
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def decode_request(
    spec: ProfileSpec, route: Route, content_type: str | None, body: bytes
) -> Refusal | Decoded:
    """Run the server's body layer over one request; pure and deterministic."""
    if spec.family == "python":
        result = decode_python_body(body, content_type, batch=route == "batch")
        if isinstance(result, EventRequest | BatchEventRequest):
            return Decoded(route, python=result)
        return Refusal(result.status, result.body, result.content_type, result.headers)
    if not axum_accepts_content_type(content_type):
        return Refusal(415, _RUST_415, TEXT_PLAIN)
    if len(body) > RUST_BODY_LIMIT:
        return Refusal(413, RUST_TOO_LARGE, TEXT_PLAIN)
    struct = spec.batch_struct if route == "batch" else spec.event_struct
    assert struct is not None
    values = deserialize_body(body, struct)
    if isinstance(values, Rejection):
        return Refusal(values.status, values.text.encode("utf-8"), TEXT_PLAIN)
    return Decoded(route, rust=values)
