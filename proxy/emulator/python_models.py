"""The Python control plane's request models and its FastAPI body layer.

The mounted Python server (noetl/noetl ≥ v4.0.0) validates `POST /api/events` and
`/api/events/batch` with pydantic v2 models behind FastAPI. Pydantic is a dependency of
this project, so the same field declarations (aliases tried in order, lax bools, the
execution_id stringifier, the batch limits) give the same acceptance and the same error
entries. `decode_python_body` reproduces what FastAPI does around them: which content
types are parsed as JSON, `json_invalid` and `missing` entries, `{"detail": [...]}` with
the `body` location prefix, and the compact JSON rendering of its responses.
"""

from __future__ import annotations

import email.message
import json
from dataclasses import dataclass
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

BATCH_MAX_EVENTS = 256
BATCH_MAX_PAYLOAD_BYTES = 2 * 1024 * 1024


class EventRequest(BaseModel):
    """`noetl/server/api/core/models.py::EventRequest` as mounted after v4.0.0."""

    model_config = ConfigDict(populate_by_name=True)

    execution_id: str
    step: str = Field(validation_alias=AliasChoices("step", "node_name"))
    name: str = Field(validation_alias=AliasChoices("name", "event_type"))
    payload: dict[str, Any] = Field(
        default_factory=dict, validation_alias=AliasChoices("payload", "context")
    )
    meta: dict[str, Any] | None = None
    worker_id: str | None = None
    actionable: bool = True
    informative: bool = True

    @field_validator("execution_id", mode="before")
    @classmethod
    def _stringify_execution_id(cls, value: Any) -> Any:
        # The server stringifies anything but None; the handler's int() decides later.
        return value if value is None else str(value)


class BatchEventItem(BaseModel):
    """One item of a Python batch: same aliases, `actionable` defaults to false."""

    model_config = ConfigDict(populate_by_name=True)

    step: str = Field(validation_alias=AliasChoices("step", "node_name"))
    name: str = Field(validation_alias=AliasChoices("name", "event_type"))
    payload: dict[str, Any] = Field(
        default_factory=dict, validation_alias=AliasChoices("payload", "context")
    )
    actionable: bool = False
    informative: bool = True
    meta: dict[str, Any] | None = None


class BatchEventRequest(BaseModel):
    """The Python batch body: `execution_id` must be a JSON string (no coercion)."""

    execution_id: str
    events: list[BatchEventItem]
    worker_id: str | None = None
    catalog_id: int | None = None

    @model_validator(mode="after")
    def _check_limits(self) -> BatchEventRequest:
        count = len(self.events)
        if count > BATCH_MAX_EVENTS:
            raise ValueError(f"Batch contains {count} events; limit is {BATCH_MAX_EVENTS}")
        if count and estimate_json_size([item.payload for item in self.events]) > (
            BATCH_MAX_PAYLOAD_BYTES
        ):
            raise ValueError(
                f"Batch payload exceeds configured limit ({BATCH_MAX_PAYLOAD_BYTES} bytes)"
            )
        return self


def estimate_json_size(value: Any) -> int:
    """The server's size estimate: compact, ASCII-escaped JSON, in bytes."""
    try:
        return len(json.dumps(value, default=str, separators=(",", ":")).encode("utf-8"))
    except Exception:
        return len(str(value).encode("utf-8"))


_EVENT_ADAPTER: TypeAdapter[EventRequest] = TypeAdapter(EventRequest)
_BATCH_ADAPTER: TypeAdapter[BatchEventRequest] = TypeAdapter(BatchEventRequest)


@dataclass(frozen=True)
class PythonReply:
    """A FastAPI answer: status, JSON (or text) body, content type, extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


INTERNAL_SERVER_ERROR = PythonReply(500, b"Internal Server Error", "text/plain; charset=utf-8")


def render_json(content: Any) -> bytes:
    """FastAPI's `JSONResponse.render`: compact, UTF-8, no NaN."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def json_reply(status: int, content: Any, headers: tuple[tuple[str, str], ...] = ()) -> PythonReply:
    """A JSON answer; a value JSON cannot carry (NaN echoed back) fails like Starlette."""
    try:
        return PythonReply(status, render_json(content), headers=headers)
    except (ValueError, TypeError, RecursionError):
        return INTERNAL_SERVER_ERROR


def detail(status: int, message: Any, headers: tuple[tuple[str, str], ...] = ()) -> PythonReply:
    """`HTTPException(status, message)` as FastAPI renders it."""
    return json_reply(status, {"detail": message}, headers)


def _is_json_content_type(value: str) -> bool:
    message = email.message.Message()
    message["content-type"] = value
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def _jsonable(value: Any) -> Any:
    """The subset of FastAPI's `jsonable_encoder` that validation errors need."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {_jsonable(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode()
    try:
        return _jsonable(dict(value))
    except Exception:
        return _jsonable(vars(value))


def _validation_reply(errors: list[dict[str, Any]]) -> PythonReply:
    try:
        content = {"detail": _jsonable(errors)}
    except (UnicodeDecodeError, RecursionError):
        # FastAPI's encoder fails the same way on these inputs; Starlette answers 500.
        return INTERNAL_SERVER_ERROR
    return json_reply(422, content)


def decode_python_body(
    body: bytes, content_type: str | None, *, batch: bool
) -> EventRequest | BatchEventRequest | PythonReply:
    """Parse and validate a body like FastAPI does for a single pydantic body parameter."""
    value: Any = None
    if body:
        if not content_type or _is_json_content_type(content_type):
            try:
                value = json.loads(body)
            except json.JSONDecodeError as exc:
                return _validation_reply(
                    [
                        {
                            "type": "json_invalid",
                            "loc": ["body", exc.pos],
                            "msg": "JSON decode error",
                            "input": {},
                            "ctx": {"error": exc.msg},
                        }
                    ]
                )
            except Exception:
                return detail(400, "There was an error parsing the body")
        else:
            value = body
    if value is None:
        return _validation_reply(
            [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]
        )
    adapter: TypeAdapter[Any] = _BATCH_ADAPTER if batch else _EVENT_ADAPTER
    try:
        model: EventRequest | BatchEventRequest = adapter.validate_python(
            value, from_attributes=True
        )
    except RecursionError:
        return INTERNAL_SERVER_ERROR
    except ValidationError as exc:
        errors = [
            {**error, "loc": ["body", *error["loc"]]} for error in exc.errors(include_url=False)
        ]
        return _validation_reply(errors)
    return model
