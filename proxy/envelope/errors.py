"""The engine's one exception hierarchy: every refusal has a stable code and an HTTP status.

The server turns an `EnvelopeError` into `application/problem+json` (code, title, status,
message, field, index); the CLI prints `code: message`. Codes are part of the public
contract (metrics, logs, docs).
"""

from __future__ import annotations

from typing import ClassVar


class EnvelopeError(Exception):
    """A body the engine refuses. `field` and `index` say where, when known."""

    code: ClassVar[str] = "invalid_envelope"
    http_status: ClassVar[int] = 422
    title: ClassVar[str] = "Invalid event envelope"

    def __init__(self, message: str, *, field: str | None = None, index: int | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.index = index

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidJson(EnvelopeError):
    code = "invalid_json"
    http_status = 400
    title = "Body is not valid JSON"


class NotAnObject(EnvelopeError):
    code = "not_an_object"
    title = "Body is not a JSON object"


class TooDeep(EnvelopeError):
    code = "too_deep"
    title = "Body is nested too deeply"


class UnknownShape(EnvelopeError):
    code = "unknown_shape"
    title = "Body matches no known envelope shape"


class ConflictingFields(EnvelopeError):
    code = "conflicting_fields"
    title = "Body gives one field twice (two names, or one key repeated)"


class MissingField(EnvelopeError):
    code = "missing_field"
    title = "A required field is missing"


class InvalidId(EnvelopeError):
    code = "invalid_id"
    title = "An id is not an exact signed 64-bit integer"


class InvalidTimestamp(EnvelopeError):
    code = "invalid_timestamp"
    title = "A timestamp is not RFC 3339 with an offset"


class InvalidFieldType(EnvelopeError):
    code = "invalid_field_type"
    title = "A field has the wrong JSON type"


class BatchTooLarge(EnvelopeError):
    code = "batch_too_large"
    http_status = 413
    title = "Batch has more items than allowed"


class InvalidBatchItem(EnvelopeError):
    code = "invalid_batch_item"
    title = "A batch item is invalid"


ERROR_CODES: tuple[str, ...] = tuple(
    cls.code
    for cls in (
        InvalidJson,
        NotAnObject,
        TooDeep,
        UnknownShape,
        ConflictingFields,
        MissingField,
        InvalidId,
        InvalidTimestamp,
        InvalidFieldType,
        BatchTooLarge,
        InvalidBatchItem,
    )
)
