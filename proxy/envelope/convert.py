"""Detected body -> canonical fields -> target body, on raw JSON values.

Only what a target renames or derives is rewritten; every other value (context, unknown
keys, meta that needs no change) is copied as the exact bytes the client sent, through
`orjson.Fragment`. Ids are read from raw tokens and written as exact integers or strings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import orjson

from proxy.envelope.errors import (
    BatchTooLarge,
    ConflictingFields,
    EnvelopeError,
    InvalidBatchItem,
    InvalidFieldType,
    MissingField,
)
from proxy.envelope.ids import ExactId, SnowflakeMinter, parse_id
from proxy.envelope.jsonbody import RawObject, json_type, parse_array_value, parse_object_value
from proxy.envelope.rules import Rules, Shape, Source, Target
from proxy.envelope.timestamps import render_utc, validate_timestamp

_decode_str = msgspec.json.Decoder(str).decode
_NULL = b"null"
# Fields for which an explicit JSON null means "not given", as in the servers' Option<T>.
_NULL_IS_ABSENT = frozenset({"event_id", "worker_id", "status", "created_at", "meta"})
_BATCH_ITEM_FIELDS = ("step", "event_type", "context")


@dataclass(frozen=True, slots=True)
class Conversion:
    """A converted body and what the proxy needs to know about it."""

    shape: str
    target: str
    body: bytes
    execution_id: str
    event_id: str | None
    event_id_minted: bool
    worker_id: str | None
    batch_size: int | None


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a conversion depends on besides the body."""

    rules: Rules
    normalise_status: bool
    mint: str  # auto | always | never
    minter: SnowflakeMinter
    batch_max_items: int
    now: Callable[[], datetime]


class _Members:
    """A body's top-level members, with nested objects split on first use."""

    def __init__(self, members: RawObject):
        self.top = members
        self._nested: dict[str, RawObject | None] = {}

    def nested(self, key: str, member: str) -> bytes | None:
        if key not in self._nested:
            raw = self.top.get(key)
            self._nested[key] = parse_object_value(raw) if raw is not None else None
        obj = self._nested[key]
        return obj.get(member) if obj is not None else None


def _resolve(
    members: _Members, field: str, sources: tuple[Source, ...], default_step: str
) -> tuple[bytes | str | None, str]:
    """The value of one canonical field (raw JSON bytes, or a computed string) and its origin."""
    present = [s.key for s in sources if s.is_top_level and s.key in members.top]
    if len(present) > 1:
        raise ConflictingFields(
            f"{' and '.join(present)} are both present; they name the same field ({field})",
            field=field,
        )
    for source in sources:
        if source.is_default:
            return default_step, "the default"
        if source.is_top_level:
            raw = members.top.get(source.key)
            if raw is not None:
                return raw, source.key
            continue
        assert source.member is not None
        raw = members.nested(source.key, source.member)
        if raw is None:
            continue
        if source.parts is None:
            return raw, source.describe()
        if json_type(raw) == "string":
            pieces = _decode_str(raw).split(":")
            if len(pieces) == source.parts and pieces[source.part or 0]:
                return pieces[source.part or 0], source.describe()
    return None, field


def _string(value: bytes | str | None, field: str, origin: str) -> bytes | str | None:
    """A field that must be a JSON string when present."""
    if value is None or isinstance(value, str):
        return value
    if json_type(value) != "string":
        named = field if origin == field else f"{field} (sent as {origin})"
        raise InvalidFieldType(f"{named} must be a string, got {json_type(value)}", field=field)
    return value


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else _decode_str(value)


def _fragment(value: bytes | str | int) -> Any:
    return orjson.Fragment(value) if isinstance(value, bytes) else value


def convert_event(members_raw: RawObject, shape: Shape, target: Target, ctx: Context) -> Conversion:
    """Convert one event body of a detected event shape to `target`."""
    members = _Members(members_raw)
    rules = ctx.rules
    values: dict[str, bytes | str | None] = {}
    origins: dict[str, str] = {}
    for field, sources in shape.fields.items():
        value, origin = _resolve(members, field, sources, rules.defaults.step)
        if field in _NULL_IS_ABSENT and value == _NULL:
            value = None
        values[field], origins[field] = value, origin

    raw_execution_id = values["execution_id"]
    if raw_execution_id is None:
        raise MissingField("missing field execution_id", field="execution_id")
    execution_id = parse_id(_raw(raw_execution_id), "execution_id")
    event_type = _string(values["event_type"], "event_type", origins["event_type"])
    if event_type is None:
        raise MissingField("missing field event_type (or its alias name)", field="event_type")
    step = _string(values["step"], "step", origins["step"])
    if step is None:
        raise MissingField("missing field step", field="step")
    worker_id = _string(values["worker_id"], "worker_id", origins["worker_id"])

    status, original_status = _status(
        _string(values["status"], "status", origins["status"]), event_type, ctx
    )
    created_at = _string(values["created_at"], "created_at", origins["created_at"])
    if created_at is None:
        created_at = render_utc(ctx.now())
    else:
        validate_timestamp(_text(created_at))

    event_id: ExactId | None = None
    minted = False
    if values["event_id"] is not None:
        event_id = parse_id(_raw(values["event_id"]), "event_id")
    elif ctx.mint == "always" or (ctx.mint == "auto" and target.mint_event_id):
        event_id, minted = ExactId(ctx.minter.next()), True

    out_values: dict[str, Any] = {
        "event_type": event_type,
        "step": step,
        "status": status,
        "created_at": created_at,
        "context": values["context"],
        "worker_id": worker_id,
        "meta": _meta(values["meta"], original_status, rules.defaults.meta_attempts),
    }
    out: dict[str, Any] = {}
    for key in target.keys:
        if key.id is not None:
            exact = execution_id if key.field == "execution_id" else event_id
            if exact is not None:
                out[key.key] = exact.value if key.id == "integer" else exact.as_string()
            continue
        value = out_values[key.field]
        if key.omit_null and value == _NULL:
            value = None
        if value is None:
            if key.null_when_absent:
                out[key.key] = None
            continue
        out[key.key] = _fragment(value)
    _pass_through(members_raw, shape.consumed_keys, out)
    return Conversion(
        shape=shape.name,
        target=target.name,
        body=orjson.dumps(out),
        execution_id=str(execution_id.value),
        event_id=str(event_id.value) if event_id is not None else None,
        event_id_minted=minted,
        worker_id=_text(worker_id) if worker_id is not None else None,
        batch_size=None,
    )


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else orjson.dumps(value)


def _pass_through(members: RawObject, consumed: frozenset[str], out: dict[str, Any]) -> None:
    """Append every member no field consumed, unchanged, in input order."""
    for key, raw in members.items():
        if key in consumed:
            continue
        if key in out:
            raise ConflictingFields(
                f"{key} is both an input key and a key the target writes", field=key
            )
        out[key] = orjson.Fragment(raw)


def _status(value: bytes | str | None, event_type: bytes | str, ctx: Context) -> tuple[Any, Any]:
    """The status to send and, when normalisation changed it, the original."""
    rules = ctx.rules
    if value is None:
        name = _text(event_type)
        for needles, status in rules.derive:
            if any(needle in name for needle in needles):
                return status, None
        return rules.derive_otherwise, None
    if not ctx.normalise_status:
        return value, None
    text = _text(value)
    canonical = rules.normalise.get(text.lower())
    if canonical is None or canonical == text:
        return value, None
    return canonical, text


def _meta(value: bytes | str | None, original_status: str | None, attempts: int | None) -> Any:
    """meta with `attempts` and `original_status` added where the rules ask; else unchanged."""
    if value is not None and (isinstance(value, str) or json_type(value) != "object"):
        return value  # a meta that is not an object is never touched
    existing = parse_object_value(value) if value is not None else {}
    assert existing is not None
    additions: dict[str, Any] = {}
    if attempts is not None and "attempts" not in existing:
        additions["attempts"] = attempts
    if original_status is not None:
        additions["original_status"] = original_status
    if not additions:
        return value
    merged: dict[str, Any] = {
        key: orjson.Fragment(raw) for key, raw in existing.items() if key not in additions
    }
    merged.update(additions)
    return orjson.dumps(merged)


def convert_batch(members_raw: RawObject, shape: Shape, target: Target, ctx: Context) -> Conversion:
    """Convert a batch: its execution_id and each item's aliases; all items or nothing."""
    execution_id = parse_id(members_raw["execution_id"], "execution_id")
    items = parse_array_value(members_raw["events"])
    if len(items) > ctx.batch_max_items:
        raise BatchTooLarge(
            f"the batch has {len(items)} events; at most {ctx.batch_max_items} are allowed",
            field="events",
        )
    item_sources = {field: ctx.rules.default_fields[field] for field in _BATCH_ITEM_FIELDS}
    consumed = frozenset(
        s.key for sources in item_sources.values() for s in sources if s.is_top_level
    )
    converted = []
    for index, raw in enumerate(items):
        try:
            converted.append(_convert_item(raw, item_sources, consumed, target))
        except EnvelopeError as exc:
            raise InvalidBatchItem(f"events[{index}]: {exc.message}", index=index) from exc
    out: dict[str, Any] = {}
    for key, raw in members_raw.items():
        if key == "execution_id":
            by_type = target.batch_id == "integer"
            out[key] = execution_id.value if by_type else execution_id.as_string()
        elif key == "events":
            out[key] = orjson.Fragment(b"[" + b",".join(converted) + b"]")
        else:
            out[key] = orjson.Fragment(raw)
    worker_id = members_raw.get("worker_id")
    return Conversion(
        shape=shape.name,
        target=target.name,
        body=orjson.dumps(out),
        execution_id=str(execution_id.value),
        event_id=None,
        event_id_minted=False,
        worker_id=_decode_str(worker_id)
        if worker_id and json_type(worker_id) == "string"
        else None,
        batch_size=len(items),
    )


def _convert_item(
    raw: bytes,
    item_sources: Mapping[str, tuple[Source, ...]],
    consumed: frozenset[str],
    target: Target,
) -> bytes:
    item = parse_object_value(raw)
    if item is None:
        raise InvalidFieldType(f"an item must be a JSON object, got {json_type(raw)}")
    members = _Members(item)
    out: dict[str, Any] = {}
    for field in _BATCH_ITEM_FIELDS:
        top_level = tuple(s for s in item_sources[field] if s.is_top_level)
        value, origin = _resolve(members, field, top_level, "")
        if field == "context":
            if value is not None:
                out[target.item_keys[field]] = _fragment(value)
            continue
        value = _string(value, field, origin)
        if value is None:
            raise MissingField(f"missing field {field}", field=field)
        out[target.item_keys[field]] = _fragment(value)
    _pass_through(item, consumed, out)
    return orjson.dumps(out)
