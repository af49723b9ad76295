"""Plans: the detection and conversion work a body's key layout alone decides, done once.

A layout is the tuple of a body's top-level keys in order. On first sight of a layout and
target an engine compiles which shapes the keys admit (only their first-byte type checks
are left per body), which member feeds which canonical field, which members pass through
under which `,"key":` prefix, and the target's output order. Per body only the values are
checked. Whatever a plan does not cover, and every refusal, is handed to the general path
(`detect` and `convert`), which then decides: both paths give the same bytes and errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Generic, TypeVar

import msgspec
from msgspec import ValidationError

from proxy.envelope.convert import (
    _NULL,
    Context,
    Conversion,
    JsonBytes,
    _is_null,
    _key_prefix,
    _meta,
    _resolve_nested,
    _status,
)
from proxy.envelope.detect import keys_admit
from proxy.envelope.errors import EnvelopeError
from proxy.envelope.ids import I64_MAX, I64_MIN, decimal_value, exact_id
from proxy.envelope.jsonbody import (
    QUOTE,
    Raw,
    RawObject,
    decode_string,
    is_string,
    refuse_repeated_keys,
    split_array,
    split_nested,
)
from proxy.envelope.rule_files import CANONICAL_FIELDS
from proxy.envelope.rules import FieldPlan, Rules, Shape, Target
from proxy.envelope.timestamps import plain_timestamp, validate_timestamp

# Per target and kind: clients choose their keys, so layouts past this take the general path.
MAX_LAYOUTS = 256
MAX_STATUSES = 256  # entries of each value cache (statuses, derived statuses, metas)
MAX_CACHED = 256  # longer values (characters or bytes) are not cached: clients choose them
# A layout whose keys take more bytes than this is not compiled (nor kept): keys are
# client-chosen too, and may be as long as the body.
MAX_LAYOUT_BYTES = 4096

Layout = tuple[str, ...]
# (member index, first bytes allowed, integers only): a shape's type check on one member.
_Check = tuple[int, frozenset[int], bool]
_FIELD_AT = {field: index for index, field in enumerate(CANONICAL_FIELDS)}
_NOT_A_NUMBER = frozenset(b".eE")
_STRING_START = frozenset(b'"')
_INTEGER_FIRST_BYTES = frozenset(b"-0123456789")
_INTEGER_BYTES = b"-0123456789\x00"
_NUL = b"\x00"
_NUL_QUOTE = b'\x00"'
# Fields a converted event may lack (the others always have a value).
_MAY_BE_ABSENT = frozenset(_FIELD_AT[f] for f in ("context", "event_id", "worker_id", "meta"))
_NULL_AT = len(CANONICAL_FIELDS)  # where a plan's converted fields keep a null
# Typed decoders double as the type checks: a wrong type raises ValidationError.
_decode_id = msgspec.json.Decoder(int | str).decode
_decode_optional_id = msgspec.json.Decoder(int | str | None).decode
_decode_optional_string = msgspec.json.Decoder(str | None).decode


def _refuse_repeats(raw: bytes | Raw, members: RawObject, key_size: int) -> None:
    """`refuse_repeated_keys`, settled at once when the kept members account for every byte.

    `key_size` is what the layout's keys take with their quotes, colons, commas and the
    braces; the values add their own. Equal to the object's size: nothing was dropped.
    """
    if key_size + sum(map(len, members.values())) != len(raw):
        refuse_repeated_keys(raw, members)


def _id_token(value: int | str, field: str, integer: bool) -> tuple[bytes, str]:
    """An id's token for the target and its decimal, from its decoded JSON value."""
    number = value if isinstance(value, int) else decimal_value(value)
    if number is not None and I64_MIN <= number <= I64_MAX:
        decimal = str(number)
        if integer:
            return decimal.encode(), decimal
        return b'"' + (value if isinstance(value, str) else decimal).encode() + b'"', decimal
    exact = exact_id(value, field)  # refuses it
    return exact.encode("integer" if integer else "string"), str(exact.value)


def _filled(parts: Sequence[Any], optional: tuple[tuple[int, bool], ...]) -> list[Any]:
    """The output parts with each absent value written as null or left out with its key."""
    filled = list(parts)
    for place, null in optional:
        if filled[place] is None:
            if null:
                filled[place] = _NULL
            else:
                filled[place - 1] = filled[place] = b""
    return filled


def _sources(
    layout: Layout, key_fields: Mapping[str, str], written: AbstractSet[str]
) -> tuple[dict[str, int], list[tuple[bytes, int]]] | None:
    """Each field's member index and the pass-through members' prefixes and indices; None
    for an input key named like an output key, or two names of one field."""
    given: dict[str, int] = {}
    extras: list[tuple[bytes, int]] = []
    for index, key in enumerate(layout):
        field = key_fields.get(key)
        if field is None:
            if key in written:
                return None
            extras.append((_key_prefix(key), index))
        elif field in given:
            return None
        else:
            given[field] = index
    return given, extras


def _key_size(layout: Layout) -> int:
    return 1 + sum(len(key.encode()) + 4 for key in layout)


@dataclass(frozen=True, slots=True)
class _EventPlan:
    """One layout converted from one shape to one target."""

    shape: str
    target: str
    pick: Callable[[Sequence[Any]], tuple[Any, ...]]  # the canonical fields, None if absent
    nested: tuple[FieldPlan, ...]  # fields resolved per body from nested or default sources
    # The output: from the nine converted fields, a null, the members and `keys` (the
    # prefixes in output order, the first opening the object, then its closing brace),
    # `arrange` picks the parts of the output in order: each prefix and its value (the
    # target's fields, then the pass-through members), then the brace.
    arrange: Callable[[Sequence[Any]], tuple[Any, ...]]
    keys: tuple[bytes, ...]
    # Where in the output parts a value may be absent, and whether it is then written as
    # null (else left out with its key).
    optional: tuple[tuple[int, bool], ...]
    omit_null_context: bool
    integer_ids: bool  # else decimal strings
    mint: bool


@dataclass(frozen=True, slots=True)
class _BatchPlan:
    """One batch layout converted to one target."""

    shape: str
    target: Target
    integer_id: bool  # the batch's execution_id as an integer, else a decimal string
    execution_id: int  # member indices
    events: int
    worker_id: int | None
    frame: tuple[bytes | None, ...]  # every member's prefix and a slot for its value


@dataclass(frozen=True, slots=True)
class _ItemPlan:
    """One batch item layout converted to one target."""

    key_size: int
    step: int  # member indices
    event_type: int
    context: int | None
    # The item's context is left out when null (a null the target writes anyway is kept).
    drop_null_context: bool
    # The output, as for events: from the members and `keys`, `arrange` picks the parts
    # in order (step, event type, context, the other members, the closing brace).
    arrange: Callable[[Sequence[Any]], tuple[Any, ...]]
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class _Checks:
    """A shape's type checks on one layout's members: strings and integers in bulk, any
    other type one member at a time.

    The bulk checks join the members with NUL, which valid JSON never holds outside an
    escape: every string member starts with a quote exactly when the joined bytes hold as
    many NUL-quote pairs as there are members; integer members (first byte `-` or a digit,
    no fraction or exponent) are exactly those made of `-` and digits only.
    """

    strings: Callable[[Sequence[Any]], tuple[Any, ...]] | None
    string_count: int
    integers: Callable[[Sequence[Any]], tuple[Any, ...]] | None
    others: tuple[_Check, ...]

    @classmethod
    def of(cls, shape: Shape, layout: Layout) -> _Checks:
        strings: list[int] = []
        integers: list[int] = []
        others: list[_Check] = []
        for check in shape.typed:
            if check.key not in layout:
                continue
            index = layout.index(check.key)
            if check.first_bytes == _STRING_START:
                strings.append(index)
            elif check.first_bytes == _INTEGER_FIRST_BYTES and check.integral:
                integers.append(index)
            else:
                others.append((index, check.first_bytes, check.integral))
        return cls(_picker(strings), len(strings), _picker(integers), tuple(others))

    @property
    def empty(self) -> bool:
        return self.strings is None and self.integers is None and not self.others

    def hold(self, values: Sequence[Any]) -> bool:
        """The same verdict as `detect`'s type checks on these members."""
        strings = self.strings
        if strings is not None:
            joined = _NUL + _NUL.join(strings(values))
            if joined.count(_NUL_QUOTE) != self.string_count:
                return False
        integers = self.integers
        if integers is not None and _NUL.join(integers(values)).translate(None, _INTEGER_BYTES):
            return False
        for index, first_bytes, integral in self.others:
            data = bytes(values[index])
            if data[0] not in first_bytes:
                return False
            if integral and data[0] != QUOTE and not _NOT_A_NUMBER.isdisjoint(data):
                return False
        return True


def _picker(indices: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]] | None:
    """A C-level getter of these positions as a tuple (None: no positions)."""
    if not indices:
        return None
    if len(indices) == 1:
        return itemgetter(slice(indices[0], indices[0] + 1))
    return itemgetter(*indices)


_Plan = TypeVar("_Plan", _EventPlan, _BatchPlan)


@dataclass(frozen=True, slots=True)
class _LayoutPlan(Generic[_Plan]):
    """A layout's shapes in detection order, each with its remaining type checks and its
    plan (None: the general path takes bodies detected as that shape)."""

    key_size: int
    candidates: tuple[tuple[_Checks | None, _Plan | None], ...]  # None: no checks left

    def detected(self, values: Sequence[Any]) -> _Plan | None:
        """The plan of the first shape whose type checks hold (None: the general path)."""
        for checks, plan in self.candidates:
            if checks is None or checks.hold(values):
                return plan
        return None


class Plans:
    """An engine's compiled plans, per target and layout, and its status caches; bounded."""

    def __init__(self, rules: Rules, ctx: Context) -> None:
        self._rules = rules
        self._ctx = ctx
        targets = rules.targets
        self._events: dict[str, dict[Layout, _LayoutPlan[_EventPlan]]] = {t: {} for t in targets}
        self._batches: dict[str, dict[Layout, _LayoutPlan[_BatchPlan]]] = {t: {} for t in targets}
        self._items: dict[str, dict[Layout, _ItemPlan | None]] = {t: {} for t in targets}
        self._statuses: dict[str, tuple[bytes | None, str | None]] = {}
        self._derived: dict[str, JsonBytes] = {}
        self._metas: dict[bytes, JsonBytes | None] = {}

    def convert_event(self, body: bytes, members: RawObject, target: str) -> Conversion | None:
        """The conversion of an event body by plan; None: the general path decides.

        `members` come from `split_bounded`: the repeated-key check is done here.
        """
        found = self._layout_plan(self._events, members, self._compile_event, target)
        if found is None:
            return None
        values: tuple[Any, ...] = (*members.values(), None)  # None: an absent field's pick
        try:
            if found.key_size + sum(map(len, members.values())) != len(body):
                refuse_repeated_keys(body, members)  # see _refuse_repeats
            plan = found.detected(values)
            return self._event(plan, members, values) if plan is not None else None
        except (EnvelopeError, ValidationError):
            return None  # a refusal: the general path raises it, with its own message

    def convert_batch(self, body: bytes, members: RawObject, target: str) -> Conversion | None:
        """The conversion of a batch body by plan; None: the general path decides."""
        found = self._layout_plan(self._batches, members, _compile_batch, target)
        if found is None:
            return None
        values: tuple[Any, ...] = (*members.values(), None)
        try:
            _refuse_repeats(body, members, found.key_size)
            plan = found.detected(values)
            return self._batch(plan, values) if plan is not None else None
        except (EnvelopeError, ValidationError):
            return None

    def _layout_plan(
        self,
        plans: dict[str, dict[Layout, _LayoutPlan[_Plan]]],
        members: RawObject,
        compile_shape: Callable[[Layout, Shape, Target], _Plan | None],
        target: str,
    ) -> _LayoutPlan[_Plan] | None:
        """The plan of these members' key layout for `target`, compiled on first sight;
        None when there are no plans for `target` or the layout is not kept (see bounds)."""
        by_layout = plans.get(target)
        if by_layout is None:
            return None
        layout = tuple(members)
        found = by_layout.get(layout)
        if found is None:
            if len(by_layout) >= MAX_LAYOUTS or _key_size(layout) > MAX_LAYOUT_BYTES:
                return None
            found = by_layout[layout] = self._compile(layout, compile_shape, target)
        return found

    # --- compiling --------------------------------------------------------------------------

    def _compile(
        self,
        layout: Layout,
        compile_shape: Callable[[Layout, Shape, Target], _Plan | None],
        target: str,
    ) -> _LayoutPlan[_Plan]:
        keys = frozenset(layout)
        candidates: list[tuple[_Checks | None, _Plan | None]] = []
        for shape in self._rules.shapes:
            if not keys_admit(shape, keys):
                continue
            checks = _Checks.of(shape, layout)
            plan = compile_shape(layout, shape, self._rules.targets[target])
            if checks.empty:
                candidates.append((None, plan))
                break  # this shape always matches these keys: later ones are never reached
            candidates.append((checks, plan))
        return _LayoutPlan(_key_size(layout), tuple(candidates))

    def _compile_event(self, layout: Layout, shape: Shape, target: Target) -> _EventPlan | None:
        """The plan, or None where the keys alone refuse the body (the general path says how)."""
        if shape.kind != "event":
            return None
        sources = _sources(layout, shape.key_fields, target.written_keys)
        if sources is None:
            return None
        given, extras = sources
        nested = tuple(plan for plan in shape.nested_plan if plan.field not in given)
        sourced = {*given, *(plan.field for plan in nested)}
        if not {"execution_id", "event_type", "step"} <= sourced:
            return None  # a required field with no source
        ctx = self._ctx
        mint = ctx.mint == "always" or (ctx.mint == "auto" and target.mint_event_id)
        # Fields no key (nor a nested source, nor minting) can give are left out, or
        # written as null, here once rather than per body.
        never = {"context", "worker_id"} | (set() if mint else {"event_id"})
        output: list[tuple[int, bytes, bool]] = []  # (what arrange picks, prefix, null)
        for field, prefix in target.prefixes:
            null = field in target.null_when_absent
            if field in never - sourced:
                if null:
                    output.append((_NULL_AT, prefix, False))
                continue
            output.append((_FIELD_AT[field], prefix, null))
        if output[0][0] in _MAY_BE_ABSENT and not output[0][2]:
            return None  # the key opening the object might be left out
        output += [(_NULL_AT + 1 + index, prefix, False) for prefix, index in extras]
        keys = [b"{" + output[0][1][1:], *(prefix for _, prefix, _ in output[1:]), b"}"]
        keys_at = _NULL_AT + 1 + len(layout) + 1  # after the members and their None
        parts: list[int] = []
        for place, (index, _, _) in enumerate(output):
            parts += (keys_at + place, index)
        parts.append(keys_at + len(output))
        absent = len(layout)  # the None after the members
        return _EventPlan(
            shape=shape.name,
            target=target.name,
            pick=itemgetter(*(given.get(field, absent) for field in CANONICAL_FIELDS)),
            nested=nested,
            arrange=itemgetter(*parts),
            keys=tuple(keys),
            optional=tuple(
                (2 * place + 1, null)
                for place, (index, _, null) in enumerate(output)
                if index in _MAY_BE_ABSENT
            ),
            omit_null_context="context" in target.omit_null,
            integer_ids=target.id_type == "integer",
            mint=mint,
        )

    def _compile_item(self, layout: Layout, target: Target) -> _ItemPlan | None:
        item_keys = target.item_keys
        sources = _sources(layout, self._ctx.item_key_fields, frozenset(item_keys.values()))
        if sources is None:
            return None
        given, extras = sources
        if "step" not in given or "event_type" not in given:
            return None
        keys: list[bytes] = []
        parts: list[int] = []
        keys_at = len(layout)

        def write(prefix: bytes, index: int | None) -> None:
            """A key and the member written under it (None: a null)."""
            keys.append(prefix)
            parts.append(keys_at + len(keys) - 1)
            if index is None:
                keys.append(_NULL)
                index = keys_at + len(keys) - 1
            parts.append(index)

        write(b"{" + _key_prefix(item_keys["step"])[1:], given["step"])
        write(_key_prefix(item_keys["event_type"]), given["event_type"])
        context = given.get("context")
        null_when_absent = "context" in target.null_when_absent
        if context is not None or null_when_absent:
            write(_key_prefix(item_keys["context"]), context)
        for prefix, index in extras:
            write(prefix, index)
        keys.append(b"}")
        parts.append(keys_at + len(keys) - 1)
        return _ItemPlan(
            key_size=_key_size(layout),
            step=given["step"],
            event_type=given["event_type"],
            context=context,
            drop_null_context=context is not None
            and "context" in target.omit_null
            and not null_when_absent,
            arrange=itemgetter(*parts),
            keys=tuple(keys),
        )

    # --- per body ---------------------------------------------------------------------------

    def _event(
        self, plan: _EventPlan, members: RawObject, values: tuple[Any, ...]
    ) -> Conversion | None:
        """Check and convert the values; None (or a raised refusal) for the general path."""
        ctx = self._ctx
        fields = plan.pick(values)
        if plan.nested:
            fields = self._resolved(plan.nested, members, list(fields))
        execution_id, event_type, step, status, created_at, context, event_id, worker_id, meta = (
            fields
        )
        if execution_id is None or event_type is None or step is None:
            return None
        integer = plan.integer_ids
        execution_token, execution_decimal = _id_token(
            _decode_id(execution_id), "execution_id", integer
        )
        decode_string(step)  # a string, or a refusal
        event_text = decode_string(event_type)
        original_status: str | None = None
        status_text = _decode_optional_string(status) if status is not None else None
        if status_text is None:
            status = self._derived.get(event_text) or self._derive(event_text, event_type)
        else:
            canonical, original_status = self._statuses.get(status_text) or self._normalise(
                status_text, status, event_type
            )
            if canonical is not None:
                status = canonical

        if created_at is None:
            created_at = ctx.stamp()
        elif plain_timestamp(created_at) is None:
            text = _decode_optional_string(created_at)
            if text is None:
                created_at = ctx.stamp()
            else:
                validate_timestamp(text)

        if context is not None and plan.omit_null_context and _is_null(context):
            context = None
        event_token: bytes | None = None
        event_decimal: str | None = None
        if event_id is not None:
            value = _decode_optional_id(event_id)
            if value is not None:
                event_token, event_decimal = _id_token(value, "event_id", integer)
        worker_text = _decode_optional_string(worker_id) if worker_id is not None else None
        if worker_text is None:
            worker_id = None
        if meta is not None:
            meta = bytes(meta)
            if meta == _NULL:
                meta = None
        if original_status is not None:
            meta = _meta(meta, original_status, ctx)
        elif meta is None:
            meta = ctx.attempts_meta
        else:
            meta = self._metas.get(meta) or self._meta(meta)

        # Last, once nothing can refuse the body: a minted id is never spent on a refusal.
        minted = False
        if event_token is None and plan.mint:
            event_token, event_decimal = _id_token(ctx.minter.next(), "event_id", integer)
            minted = True

        parts: Sequence[Any] = plan.arrange(
            (
                execution_token,
                event_type,
                step,
                status,
                created_at,
                context,
                event_token,
                worker_id,
                meta,
                _NULL,
                *values,
                *plan.keys,
            )
        )
        if None in parts:
            parts = _filled(parts, plan.optional)
        return tuple.__new__(
            Conversion,
            (
                plan.shape,
                plan.target,
                b"".join(parts),  # no None is left
                execution_decimal,
                event_decimal,
                minted,
                worker_text,
                None,
            ),
        )

    def _resolved(
        self, nested: tuple[FieldPlan, ...], members: RawObject, fields: list[Any]
    ) -> tuple[Any, ...]:
        """Fill fields no top-level key gave from their nested or default sources."""
        split: dict[str, RawObject | None] = {}
        step = self._ctx.rules.defaults.step
        for field_plan in nested:
            value, _ = _resolve_nested(members, field_plan.nested, split, step, field_plan.field)
            if value is not None:
                fields[_FIELD_AT[field_plan.field]] = value
        return tuple(fields)

    # The value caches: each holds what the conversion makes of a value (alone), bounded.

    def _normalise(
        self, text: str, status: JsonBytes, event_type: JsonBytes
    ) -> tuple[bytes | None, str | None]:
        """A status's canonical form (None: send it as written) and the original it replaces."""
        sent, original = _status(status, event_type, self._ctx)
        known = (bytes(sent) if original is not None else None, original)
        if len(self._statuses) < MAX_STATUSES and len(text) <= MAX_CACHED:
            self._statuses[text] = known
        return known

    def _derive(self, text: str, event_type: JsonBytes) -> JsonBytes:
        """The status derived from an event type, for a body without one."""
        derived = _status(None, event_type, self._ctx)[0]
        if len(self._derived) < MAX_STATUSES and len(text) <= MAX_CACHED:
            self._derived[text] = derived
        return derived

    def _meta(self, meta: bytes) -> JsonBytes | None:
        """A given meta as sent when normalisation changed no status."""
        sent = _meta(meta, None, self._ctx)
        if len(self._metas) < MAX_STATUSES and len(meta) <= MAX_CACHED:
            self._metas[meta] = sent
        return sent

    def _batch(self, plan: _BatchPlan, values: tuple[Any, ...]) -> Conversion | None:
        """Check and convert a batch and its items; None (or a refusal) for the general path."""
        token, decimal = _id_token(
            _decode_id(values[plan.execution_id]), "execution_id", plan.integer_id
        )
        raw_items = split_array(values[plan.events])
        if len(raw_items) > self._ctx.batch_max_items:
            return None
        items = self._items[plan.target.name]
        converted = [self._item(raw, plan.target, items) for raw in raw_items]
        if None in converted:
            return None
        row: list[Any] = list(values[:-1])
        row[plan.execution_id] = token
        row[plan.events] = b"[" + b",".join(converted) + b"]"  # type: ignore[arg-type]
        parts = list(plan.frame)
        parts[1:-1:2] = row
        worker_id = values[plan.worker_id] if plan.worker_id is not None else None
        worker_text = (
            decode_string(worker_id) if worker_id is not None and is_string(worker_id) else None
        )
        return tuple.__new__(
            Conversion,
            (
                plan.shape,
                plan.target.name,
                b"".join(parts),  # type: ignore[arg-type]  # no None is left
                decimal,
                None,
                False,
                worker_text,
                len(raw_items),
            ),
        )

    def _item(
        self, raw: Raw, target: Target, items: dict[Layout, _ItemPlan | None]
    ) -> bytes | None:
        item = split_nested(raw)
        if item is None:
            return None
        layout = tuple(item)
        plan = items.get(layout)
        if plan is None:
            if layout in items or len(items) >= MAX_LAYOUTS or _key_size(layout) > MAX_LAYOUT_BYTES:
                return None  # a layout the keys refuse, or one past the bounds
            plan = items[layout] = self._compile_item(layout, target)
            if plan is None:
                return None
        values = tuple(item.values())
        _refuse_repeats(raw, item, plan.key_size)
        step, event_type = values[plan.step], values[plan.event_type]
        decode_string(step)  # strings, or a refusal
        decode_string(event_type)
        parts: Sequence[Any] = plan.arrange((*values, *plan.keys))
        context = plan.context
        if plan.drop_null_context and context is not None and _is_null(values[context]):
            parts = list(parts)
            parts[4] = parts[5] = b""  # the context's key and value, after step and event type
        return b"".join(parts)


def _compile_batch(layout: Layout, shape: Shape, target: Target) -> _BatchPlan | None:
    if shape.kind != "batch":
        return None
    if "execution_id" not in layout or "events" not in layout:
        return None
    frame: list[bytes | None] = []
    for key in layout:
        frame += (_key_prefix(key), None)
    frame[0] = b"{" + _key_prefix(layout[0])[1:]
    frame.append(b"}")
    return _BatchPlan(
        shape=shape.name,
        target=target,
        integer_id=target.batch_id == "integer",
        execution_id=layout.index("execution_id"),
        events=layout.index("events"),
        worker_id=layout.index("worker_id") if "worker_id" in layout else None,
        frame=tuple(frame),
    )
