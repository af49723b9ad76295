"""Strict validators of the two target bodies: they refuse what the real servers refuse.

Written independently of the conversion (pydantic strict models over the parsed JSON), so
the shadow check and the tests can hold converted bodies against the servers' rules:
integer vs string ids, required keys, no alias pairs, no `name` in the canonical shape,
an offset in every timestamp, and the target's key order.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from proxy.envelope.errors import EnvelopeError, InvalidFieldType, InvalidJson
from proxy.envelope.ids import I64_MAX, I64_MIN
from proxy.envelope.rules import CANONICAL_TARGET, LEGACY_TARGET
from proxy.envelope.timestamps import validate_timestamp

_DECIMAL = re.compile(r"-?[0-9]+")


def _decimal_i64(text: str) -> str:
    if not _DECIMAL.fullmatch(text) or not I64_MIN <= int(text) <= I64_MAX:
        raise ValueError("must be a decimal string within the signed 64-bit range")
    return text


def _timestamp(text: str) -> str:
    try:
        validate_timestamp(text)
    except EnvelopeError as exc:
        raise ValueError(exc.message) from exc
    return text


I64 = Annotated[int, Field(ge=I64_MIN, le=I64_MAX)]
DecimalI64 = Annotated[str, AfterValidator(_decimal_i64)]
Timestamp = Annotated[str, AfterValidator(_timestamp)]


def _keys_in_order(data: Any, order: tuple[str, ...], forbidden: tuple[str, ...]) -> Any:
    if not isinstance(data, dict):
        return data
    for key in forbidden:
        if key in data:
            raise ValueError(f"{key} is not allowed here")
    named = [key for key in data if key in order]
    if named != [key for key in order if key in data]:
        raise ValueError(f"keys out of order: {named}")
    keys = list(data)
    if keys[: len(named)] != named:
        raise ValueError("the target's own keys must come before any other key")
    return data


class _ServerOnlyKeys(BaseModel):
    """Keys the Rust server types when present (it ignores other unknown keys)."""

    model_config = ConfigDict(strict=True, extra="allow")

    actionable: bool = True
    informative: bool = True
    result_kind: str = "data"
    result_uri: str = ""
    event_ids: list[I64] = []


class ExecutorEventBody(_ServerOnlyKeys):
    """The canonical ExecutorEvent as the Rust server >= 2.19.1 deserialises it."""

    ORDER: ClassVar[tuple[str, ...]] = (
        "execution_id",
        "event_type",
        "step",
        "status",
        "created_at",
        "context",
        "event_id",
        "worker_id",
        "meta",
    )

    execution_id: I64
    event_type: str
    step: str
    status: str
    created_at: Timestamp
    context: Any
    event_id: I64 = 0
    worker_id: str = ""
    meta: Any = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "context" not in data:
                raise ValueError("context is required (null allowed)")
            for key in ("event_id", "worker_id", "meta"):
                if key in data and data[key] is None:
                    raise ValueError(f"{key} must be omitted rather than null")
        return _keys_in_order(data, cls.ORDER, ("payload", "name", "node_name"))


class EventRequestBody(_ServerOnlyKeys):
    """The legacy EventRequest every legacy server accepts (string ids, name, payload).

    The Python server is the strictest about values: payload must be an object, meta an
    object or null.
    """

    ORDER: ClassVar[tuple[str, ...]] = (
        "execution_id",
        "step",
        "name",
        "payload",
        "meta",
        "worker_id",
        "event_id",
        "status",
        "created_at",
    )

    execution_id: DecimalI64
    step: str
    name: str
    payload: dict[str, Any] = {}
    meta: dict[str, Any] | None = None
    worker_id: str = ""
    event_id: DecimalI64 = "0"
    status: str
    created_at: Timestamp

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        return _keys_in_order(data, cls.ORDER, ("event_type", "context", "node_name"))


class _Item(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    step: str


class ExecutorBatchItem(_Item):
    event_type: str

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        return _keys_in_order(data, (), ("name", "payload", "node_name"))


class EventRequestBatchItem(_Item):
    name: str
    payload: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        return _keys_in_order(data, (), ("event_type", "context", "node_name"))


class ExecutorBatchBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    execution_id: I64
    events: list[ExecutorBatchItem]


class EventRequestBatchBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    execution_id: DecimalI64
    events: list[EventRequestBatchItem]


_MODELS: dict[tuple[str, bool], type[BaseModel]] = {
    (CANONICAL_TARGET, False): ExecutorEventBody,
    (LEGACY_TARGET, False): EventRequestBody,
    (CANONICAL_TARGET, True): ExecutorBatchBody,
    (LEGACY_TARGET, True): EventRequestBatchBody,
}


def validate_target(target: str, body: bytes, *, batch: bool = False) -> None:
    """Raise the engine's error when `body` is not a valid `target` body."""
    model = _MODELS[(target, batch)]
    try:
        model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise InvalidJson(first["msg"]) from exc
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidFieldType(
            f"not a valid {target}{' batch' if batch else ''}: {where}: {first['msg']}",
            field=where,
        ) from exc
