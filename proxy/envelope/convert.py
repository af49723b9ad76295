"""Detected body -> canonical fields -> target body, on raw JSON values.

Only what a target renames or derives is rewritten; every other value (context, unknown
keys, meta that needs no change) is written out as the exact bytes the client sent. The
output is assembled with `bytes.join` over raw slices, so a large context is copied once
and never re-serialised. This is the hot path of the proxy: it avoids per-value Python
work wherever the bytes can be used as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import NamedTuple

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
from proxy.envelope.jsonbody import (
    QUOTE,
    Raw,
    RawObject,
    decode_string,
    is_string,
    json_type,
    refuse_repeated_keys,
    split_array,
    split_nested,
)
from proxy.envelope.rules import Rules, Shape, Source, Target
from proxy.envelope.timestamps import UtcStamper, render_utc, validate_timestamp

JsonBytes = Raw | bytes  # a JSON value as it will be written
_NULL = b"null"
_OPEN_BRACE = ord("{")
# Fields for which an explicit JSON null means "not given", as in the servers' Option<T>.
_NULL_IS_ABSENT = frozenset({"event_id", "worker_id", "status", "created_at", "meta"})
_STRING_FIELDS = frozenset({"event_type", "step", "status", "created_at", "worker_id"})
_BATCH_ITEM_FIELDS = ("step", "event_type", "context")


class Conversion(NamedTuple):
    """A converted body and what the proxy needs to know about it."""

    shape: str
    target: str
    body: bytes
    execution_id: str  # decimal
    event_id: str | None  # decimal, given or minted
    event_id_minted: bool
    worker_id: str | None
    batch_size: int | None


class Context(NamedTuple):
    """Everything a conversion depends on besides the body."""

    rules: Rules
    normalise_status: bool
    mint: str  # auto | always | never
    minter: SnowflakeMinter
    batch_max_items: int
    stamp: Callable[[], bytes]  # "now" as a JSON string
    normalise: dict[bytes, bytes]  # lower-cased JSON string content -> canonical status
    derive: tuple[tuple[tuple[bytes, ...], bytes], ...]  # needles -> JSON status
    derive_otherwise: bytes
    attempts_meta: bytes | None  # the meta written when there is none
    item_key_fields: Mapping[str, str]  # batch item key -> step | event_type | context


def make_context(
    rules: Rules,
    *,
    normalise_status: bool,
    mint: str,
    minter: SnowflakeMinter,
    batch_max_items: int,
    now: Callable[[], datetime] | None,
) -> Context:
    attempts = rules.defaults.meta_attempts
    return Context(
        rules=rules,
        normalise_status=normalise_status,
        mint=mint,
        minter=minter,
        batch_max_items=batch_max_items,
        stamp=UtcStamper() if now is None else lambda: b'"' + render_utc(now()).encode() + b'"',
        normalise={
            alias.encode(): canonical.encode() for alias, canonical in rules.normalise.items()
        },
        derive=tuple(
            (tuple(needle.encode() for needle in needles), orjson.dumps(status))
            for needles, status in rules.derive
        ),
        derive_otherwise=orjson.dumps(rules.derive_otherwise),
        attempts_meta=orjson.dumps({"attempts": attempts}) if attempts is not None else None,
        item_key_fields={
            source.key: field
            for field, sources in rules.default_fields.items()
            if field in _BATCH_ITEM_FIELDS
            for source in sources
            if source.is_top_level
        },
    )


def _collect(
    members: RawObject, key_fields: Mapping[str, str], written: frozenset[str]
) -> tuple[dict[str, JsonBytes], dict[str, str], list[JsonBytes]]:
    """One pass over a body's members: each feeds a canonical field or passes through.

    Returns the fields' raw values, the key each came from, and the pass-through members
    as `,"key":` prefixes and raw values, in input order. Two members feeding one field
    (an alias pair) is a conflict, as is an unknown member named like a written key.
    """
    values: dict[str, JsonBytes] = {}
    origins: dict[str, str] = {}
    extras: list[JsonBytes] = []
    for key, raw in members.items():
        field = key_fields.get(key)
        if field is None:
            if key in written:
                raise ConflictingFields(
                    f"{key} is both an input key and a key the target writes", field=key
                )
            extras += (_key_prefix(key), raw)
        elif field in values:
            raise _conflict(field, origins[field], key)
        else:
            values[field] = raw
            origins[field] = key
    return values, origins, extras


def _conflict(field: str, first: str, second: str) -> ConflictingFields:
    return ConflictingFields(
        f"{first} and {second} are both present; they name the same field ({field})",
        field=field,
    )


def _resolve_nested(
    members: RawObject,
    sources: tuple[Source, ...],
    nested: dict[str, RawObject | None],
    default_step: str,
    field: str,
) -> tuple[JsonBytes | None, str]:
    for source in sources:
        if source.is_default:
            return orjson.dumps(default_step), "the default"
        assert source.member is not None  # nested sources name a member
        if source.key not in nested:
            raw = members.get(source.key)
            nested[source.key] = split_nested(raw) if raw is not None else None
        inner = nested[source.key]
        value = inner.get(source.member) if inner is not None else None
        if value is None or _is_null(value):  # null is "not given", as at the top level
            continue
        if source.parts is None:
            return value, source.text
        if is_string(value):
            pieces = decode_string(value).split(":")
            part = pieces[source.part or 0] if len(pieces) == source.parts else ""
            if part:
                return orjson.dumps(part), source.text
    return None, field


def _is_null(raw: JsonBytes) -> bool:
    return len(raw) == len(_NULL) and bytes(raw) == _NULL


def _text(raw: JsonBytes) -> str:
    """A JSON string's text; the common case (no escapes) without a decoder call."""
    data = bytes(raw)
    return data[1:-1].decode() if b"\\" not in data else decode_string(data)


def convert_event(members: RawObject, shape: Shape, target: Target, ctx: Context) -> Conversion:
    """Convert one event body of a detected event shape to `target`."""
    values, origins, extras = _collect(members, shape.key_fields, target.written_keys)
    if shape.nested_plan:
        _resolve_missing(members, shape, values, origins, ctx.rules.defaults.step)

    # Small fields as bytes; an explicit null counts as absent where the servers say so.
    small: dict[str, bytes] = {}
    for field, given in values.items():
        if field == "context":
            continue
        data = bytes(given)
        if data == _NULL and field in _NULL_IS_ABSENT:
            continue
        if field in _STRING_FIELDS and data[0] != QUOTE:
            origin = origins[field]
            named = field if origin == field else f"{field} (sent as {origin})"
            raise InvalidFieldType(f"{named} must be a string, got {json_type(data)}", field=field)
        small[field] = data

    raw_execution_id = small.get("execution_id")
    if raw_execution_id is None:
        raise MissingField("missing field execution_id", field="execution_id")
    execution_id = parse_id(raw_execution_id, "execution_id")
    event_type = small.get("event_type")
    if event_type is None:
        raise MissingField("missing field event_type (or its alias name)", field="event_type")
    step = small.get("step")
    if step is None:
        raise MissingField("missing field step", field="step")
    status, original_status = _status(small.get("status"), event_type, ctx)
    created_at = small.get("created_at")
    if created_at is None:
        created_at = ctx.stamp()
    else:
        validate_timestamp(_text(created_at))
    raw_event_id = small.get("event_id")
    event_id: ExactId | None = None
    minted = False
    if raw_event_id is not None:
        event_id = parse_id(raw_event_id, "event_id")
    elif ctx.mint == "always" or (ctx.mint == "auto" and target.mint_event_id):
        event_id, minted = ExactId(ctx.minter.next()), True
    context = values.get("context")
    if context is not None and "context" in target.omit_null and _is_null(context):
        context = None
    worker_id = small.get("worker_id")

    out: dict[str, JsonBytes | None] = {
        "execution_id": execution_id.encode(target.id_type),
        "event_type": event_type,
        "step": step,
        "status": status,
        "created_at": created_at,
        "context": context,
        "event_id": event_id.encode(target.id_type) if event_id is not None else None,
        "worker_id": worker_id,
        "meta": _meta(small.get("meta"), original_status, ctx),
    }
    parts: list[JsonBytes] = []
    for field, prefix in target.prefixes:
        value = out[field]
        if value is None:
            if field not in target.null_when_absent:
                continue
            value = _NULL
        parts += (prefix, value)
    parts += extras
    parts[0] = bytes(parts[0])[1:]  # a key prefix: the first one carries no comma
    return Conversion(
        shape=shape.name,
        target=target.name,
        body=b"".join([b"{", *parts, b"}"]),
        execution_id=str(execution_id.value),
        event_id=str(event_id.value) if event_id is not None else None,
        event_id_minted=minted,
        worker_id=_text(worker_id) if worker_id is not None else None,
        batch_size=None,
    )


def _resolve_missing(
    members: RawObject,
    shape: Shape,
    values: dict[str, JsonBytes],
    origins: dict[str, str],
    default_step: str,
) -> None:
    """Fill fields no top-level key gave from their nested or default sources."""
    nested: dict[str, RawObject | None] = {}
    for plan in shape.nested_plan:
        if plan.field not in values:
            value, origin = _resolve_nested(members, plan.nested, nested, default_step, plan.field)
            if value is not None:
                values[plan.field] = value
                origins[plan.field] = origin


_KEY_PREFIXES: dict[str, bytes] = {}


def _key_prefix(key: str) -> bytes:
    """`,"key":` for a pass-through key; the usual keys are encoded once per process."""
    prefix = _KEY_PREFIXES.get(key)
    if prefix is None:
        prefix = b"," + orjson.dumps(key) + b":"
        if len(_KEY_PREFIXES) < 4096 and len(key) <= 256:  # bounded: keys come from clients
            _KEY_PREFIXES[key] = prefix
    return prefix


def _status(
    value: JsonBytes | None, event_type: JsonBytes, ctx: Context
) -> tuple[JsonBytes, str | None]:
    """The status to send (JSON bytes) and, when normalisation changed it, the original."""
    if value is None:
        # Substrings of the raw JSON string; escapes could hide one, so decode those.
        name = bytes(event_type)
        if b"\\" in name:
            name = decode_string(name).encode()
        for needles, status in ctx.derive:
            for needle in needles:
                if needle in name:
                    return status, None
        return ctx.derive_otherwise, None
    if not ctx.normalise_status:
        return value, None
    written = bytes(value)
    text = written[1:-1] if b"\\" not in written else decode_string(written).encode()
    canonical = ctx.normalise.get(text.lower())
    if canonical is None or canonical == text:
        return value, None
    return b'"' + canonical + b'"', text.decode()


def _meta(value: JsonBytes | None, original_status: str | None, ctx: Context) -> JsonBytes | None:
    """meta with `attempts` and `original_status` added where the rules ask; else as sent."""
    attempts = ctx.rules.defaults.meta_attempts
    if value is None:
        if original_status is None:
            return ctx.attempts_meta
        additions = {"attempts": attempts} if attempts is not None else {}
        return orjson.dumps({**additions, "original_status": original_status})
    data = bytes(value)
    if data[0] != _OPEN_BRACE:
        return value  # a meta that is not an object is never touched
    if original_status is None and (attempts is None or _has_flat_attempts(data)):
        return value
    existing = split_nested(data)
    assert existing is not None  # it starts with a brace
    add_attempts = attempts is not None and "attempts" not in existing
    if not add_attempts and original_status is None:
        return value
    refuse_repeated_keys(data, existing, "meta.")
    parts: list[JsonBytes] = []
    for key, raw in existing.items():
        if key != "original_status" or original_status is None:
            parts += (b"," + orjson.dumps(key) + b":", raw)
    if add_attempts:
        parts.append(b',"attempts":' + orjson.dumps(attempts))
    if original_status is not None:
        parts.append(b',"original_status":' + orjson.dumps(original_status))
    parts[0] = bytes(parts[0])[1:]
    return b"".join([b"{", *parts, b"}"])


def _has_flat_attempts(meta: bytes) -> bool:
    """A flat meta object (no nested object) naming `attempts` as a key: no parse needed.

    In a flat object a `"attempts"` string followed by `:` can only be a key. Anything
    else (nested objects, spacing) is settled by splitting the object.
    """
    return meta.count(b"{") == 1 and b'"attempts":' in meta


def convert_batch(members: RawObject, shape: Shape, target: Target, ctx: Context) -> Conversion:
    """Convert a batch: its execution_id and each item's aliases; all items or nothing."""
    execution_id = parse_id(bytes(members["execution_id"]), "execution_id")
    items = split_array(members["events"])
    if len(items) > ctx.batch_max_items:
        raise BatchTooLarge(
            f"the batch has {len(items)} events; at most {ctx.batch_max_items} are allowed",
            field="events",
        )
    converted: list[bytes] = []
    for index, raw in enumerate(items):
        try:
            converted.append(_convert_item(raw, target, ctx))
        except EnvelopeError as exc:
            raise InvalidBatchItem(f"events[{index}]: {exc.message}", index=index) from exc
    parts: list[JsonBytes] = []
    for key, raw in members.items():
        parts.append(_key_prefix(key))
        if key == "execution_id":
            parts.append(execution_id.encode(target.batch_id))
        elif key == "events":
            parts.append(b"[" + b",".join(converted) + b"]")
        else:
            parts.append(raw)
    parts[0] = bytes(parts[0])[1:]
    worker_id = members.get("worker_id")
    return Conversion(
        shape=shape.name,
        target=target.name,
        body=b"".join([b"{", *parts, b"}"]),
        execution_id=str(execution_id.value),
        event_id=None,
        event_id_minted=False,
        worker_id=_text(worker_id) if worker_id is not None and is_string(worker_id) else None,
        batch_size=len(items),
    )


def _convert_item(raw: Raw, target: Target, ctx: Context) -> bytes:
    """One batch item: step, event type and context under the target's names, then the rest."""
    item = split_nested(raw)
    if item is None:
        raise InvalidFieldType(f"an item must be a JSON object, got {json_type(raw)}")
    refuse_repeated_keys(raw, item)
    item_keys = target.item_keys
    values, origins, extras = _collect(item, ctx.item_key_fields, frozenset(item_keys.values()))
    parts: list[JsonBytes] = []
    for field in ("step", "event_type"):
        value = values.get(field)
        if value is None:
            raise MissingField(f"missing field {field}", field=field)
        if not is_string(value):
            raise InvalidFieldType(f"{origins[field]} must be a string, got {json_type(value)}")
        parts += (_key_prefix(item_keys[field]), value)
    # Items follow the single event's rules, so conversions stay lossless both ways: the
    # canonical target writes a null context when there is none, the legacy one omits it.
    context = values.get("context")
    if context is not None and "context" in target.omit_null and _is_null(context):
        context = None
    if context is None and "context" in target.null_when_absent:
        context = _NULL
    if context is not None:
        parts += (_key_prefix(item_keys["context"]), context)
    parts += extras
    parts[0] = bytes(parts[0])[1:]
    return b"".join([b"{", *parts, b"}"])
