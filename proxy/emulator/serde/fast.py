"""A C-speed shortcut for the bodies the Rust server accepts without a second look.

The exact reader (`structs`) walks the body byte by byte in Python so that every
refusal carries serde's message and position. Most bodies are ordinary, though, and need
no message. This module accepts a body only when it can prove the exact reader would
accept it with the same values: orjson (as strict as serde_json on grammar, UTF-8 and
surrogates) parses it, no object repeats a key, nesting stays within serde's recursion
limit, and every declared field has its exact type. Anything else returns None and the
exact reader decides, message and all.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

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
    Struct,
)
from proxy.emulator.timestamps import chrono_rfc3339_problem

# serde_json refuses the 128th nested container; the struct itself is the first.
_MAX_DEPTH = 127
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_U64_MAX = 2**64 - 1


class _Unusual(Exception):
    """The body needs the exact reader."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Unusual
    return obj


def _refuse_constant(_: str) -> Any:
    raise _Unusual


def _serde_number(token: str) -> int | float:
    """An integer token as serde_json reads it: u64 or negative i64, else an f64
    (so `-0` and integers beyond 64 bits are floats)."""
    value = int(token)
    if token[0] == "-":
        return value if _I64_MIN <= value < 0 else float(token)
    return value if value <= _U64_MAX else float(token)


def _within_depth(value: Any, limit: int) -> bool:
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return False
        children = item.values() if isinstance(item, dict) else item
        pending.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field_value(kind: str, value: Any, struct: Struct) -> Any:
    """The value the exact reader would produce for `value`, or raise `_Unusual`."""
    if kind in (VALUE, OPT_VALUE):
        return value
    if value is None and kind in (OPT_STRING, OPT_I64_VEC, OPT_DATETIME, OPT_ID_LAX):
        return None
    if kind in (STRING, OPT_STRING) and isinstance(value, str):
        return value
    if kind == BOOL and isinstance(value, bool):
        return value
    if kind in (ID_LAX, OPT_ID_LAX):
        if isinstance(value, str):
            return value
        if _is_int(value) and _I64_MIN <= value <= _U64_MAX:
            return str(value)
    if (
        kind == OPT_I64_VEC
        and isinstance(value, list)
        and all(_is_int(v) and _I64_MIN <= v <= _I64_MAX for v in value)
    ):
        return value
    if kind == OPT_DATETIME and isinstance(value, str) and chrono_rfc3339_problem(value) is None:
        return value
    if kind == ITEMS and isinstance(value, list) and struct.items is not None:
        return [_struct_values(item, struct.items) for item in value]
    raise _Unusual


def _struct_values(obj: Any, struct: Struct) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _Unusual
    values: dict[str, Any] = {}
    for key, value in obj.items():
        target: Field | None = struct.lookup.get(key)
        if target is None:
            continue
        if target.name in values:
            raise _Unusual  # both names of an alias pair
        values[target.name] = _field_value(target.kind, value, struct)
    for f in struct.fields:
        if f.name not in values:
            if f.has_default:
                values[f.name] = f.default
            elif f.optional:
                values[f.name] = None
            else:
                raise _Unusual
    return values


def _nesting_within(tree: Any, body: bytes, limit: int) -> bool:
    """`_within_depth` for the tree parsed from `body`, mostly at C speed: few brackets
    settle it, else orjson's indented rendering, which indents every element by two spaces
    per enclosing container: with no line indented `2 * (limit - 1)`, no container sits
    deeper than `limit - 1`."""
    if body.count(b"{") + body.count(b"[") <= limit:
        return True
    try:
        indented = orjson.dumps(tree, option=orjson.OPT_INDENT_2)
    except orjson.JSONEncodeError:
        return _within_depth(tree, limit)
    return b"\n" + b" " * (2 * (limit - 1)) not in indented or _within_depth(tree, limit)


def fast_deserialize(body: bytes, struct: Struct) -> dict[str, Any] | None:
    """The exact reader's values for an ordinary body, or None when it must decide."""
    try:
        tree = orjson.loads(body)
        # A body orjson writes back byte for byte repeats no key (a repeated one would be
        # dropped) and has no integer serde reads differently (`-0` comes back as `0`), so
        # orjson's tree is the one the pair-checking reader below would build.
        if orjson.dumps(tree) != body:
            tree = json.loads(
                body,
                object_pairs_hook=_unique_pairs,
                parse_constant=_refuse_constant,
                parse_int=_serde_number,
            )
        if not isinstance(tree, dict):
            return None
        if not _nesting_within(tree, body, _MAX_DEPTH):
            return None
        return _struct_values(tree, struct)
    except (_Unusual, ValueError, RecursionError, TypeError):
        return None
