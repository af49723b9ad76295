"""Bytes to a top-level JSON object of raw values, with every bound checked first.

The engine never re-serialises a value it does not change: a body is split into its
top-level members as `msgspec.Raw` slices of the original bytes, so untouched values (a
1 MB context, unknown keys, nested numbers) are forwarded byte for byte and cost no extra
pass in Python. Raw values are buffers: `bytes.join` writes them out without a copy.

Before splitting, three bounds are enforced in C-speed passes: valid UTF-8, nesting depth,
and integer literals beyond 64 bits (which most JSON stacks, orjson included, silently turn
into floats). An object the engine rewrites must not repeat a key: the split would keep the
last value and drop the first without a word (`refuse_repeated_keys`).
"""

from __future__ import annotations

import json
import re
from typing import Literal

import msgspec

from proxy.envelope.errors import (
    ConflictingFields,
    InvalidFieldType,
    InvalidId,
    InvalidJson,
    NotAnObject,
    TooDeep,
)

Raw = msgspec.Raw
RawObject = dict[str, msgspec.Raw]
JsonType = Literal["string", "integer", "number", "boolean", "null", "object", "array"]

_decode_object = msgspec.json.Decoder(RawObject).decode
_decode_array = msgspec.json.Decoder(list[msgspec.Raw]).decode
decode_string = msgspec.json.Decoder(str).decode

# One translation serves two bounds: digits fold to "0" (a run of 19 is a candidate
# integer beyond 64 bits: below -2^63 takes 19 digits, above 2^64-1 takes 20) and "{"
# folds to "[" (fewer openers than the depth limit cannot nest deeper than it).
_FOLD = bytes.maketrans(b"123456789{", b"000000000[")
_LONG_DIGITS = b"0" * 19
# The exact depth pass keeps quotes and brackets only, braces folded into square brackets:
# depth does not depend on the bracket kind once the JSON is known to be valid.
_NOT_STRUCTURAL = bytes(c for c in range(256) if c not in b'"[]{}')
_FOLD_BRACES = bytes.maketrans(b"{}", b"[]")
_STRING_CONTENT = re.compile(rb'"[^"]*"')
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
# An integer token: not part of a fraction or an exponent (digits after `e-` included).
_BIG_INTEGER = re.compile(rb"(?<![0-9.eE+-])-?[0-9]{19,}(?![0-9.eE])")
_U64_MAX = 2**64 - 1
_I64_MIN = -(2**63)
_ID_FIELDS = frozenset({"execution_id", "event_id"})


def split_object(body: bytes, max_depth: int) -> RawObject:
    """Split a body into its top-level members, or raise the engine's error for it."""
    members = split_bounded(body, max_depth)
    refuse_repeated_keys(body, members)
    return members


def split_bounded(body: bytes, max_depth: int) -> RawObject:
    """`split_object` without the repeated-key check, which the caller then owes."""
    if not body.isascii():  # ASCII is UTF-8; only other bodies need decoding to tell
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidJson(f"the body is not valid UTF-8 (byte {exc.start})") from exc
    folded = body.translate(_FOLD)
    if folded.count(b"[") > max_depth:
        _check_depth(body, max_depth)
    try:
        members = _decode_object(body)
    except msgspec.ValidationError as exc:
        raise NotAnObject(f"an event body must be a JSON object: {exc}") from exc
    except msgspec.DecodeError as exc:
        message = "the body is empty" if not body.strip() else str(exc)
        raise InvalidJson(message) from exc
    except RecursionError as exc:  # pragma: no cover - the depth check runs first
        raise TooDeep("the body is nested too deeply") from exc
    if _LONG_DIGITS in folded:
        _refuse_big_integers(members)
    return members


_WHITESPACE = b" \t\n\r"


def _whitespace(data: Raw | bytes) -> int:
    return len(data) - len(bytes(data).translate(None, _WHITESPACE))


def refuse_repeated_keys(raw: Raw | bytes, members: RawObject, where: str = "") -> None:
    """Refuse an object (`raw`, split into `members`) in which a key appears twice.

    The split keeps the last value of a repeated key, so a repetition shows as bytes no
    kept member accounts for. Kept members of unescaped keys take exactly `"key":value`
    plus a comma between them; if the object is longer than that by its whitespace between
    members alone, nothing was dropped. Only otherwise (escaped keys, or a real repetition)
    is the object read again, key by key.
    """
    if not members:
        return
    size = len(raw)
    kept = 1 + 4 * len(members)  # braces, quotes, colons and commas
    for key, value in members.items():
        kept += len(key) + len(value)
    if kept == size:
        return
    keys = [key.encode() for key in members]
    kept += sum(map(len, keys)) - sum(map(len, members))  # non-ASCII keys: bytes, not chars
    between = _whitespace(raw) - sum(_whitespace(value) for value in members.values())
    between -= sum(_whitespace(key) for key in keys)
    if kept + between == size:
        return
    repeated = _repeated_key(bytes(raw))
    if repeated is not None:
        raise ConflictingFields(
            f'key "{where}{repeated}" appears more than once in one object; the proxy does'
            " not guess which value was meant",
            field=f"{where}{repeated}",
        )


def _repeated_key(data: bytes) -> str | None:
    """The first key repeated in the outermost object of `data` (valid JSON), else None."""
    objects: list[list[tuple[str, object]]] = []

    def keep(pairs: list[tuple[str, object]]) -> dict[str, object]:
        objects.append(pairs)  # innermost first: the outermost object comes last
        return {}

    try:
        json.loads(data, object_pairs_hook=keep)
    except ValueError:  # pragma: no cover - msgspec has validated it; json is more lenient
        return None
    seen: set[str] = set()
    for key, _ in objects[-1]:
        if key in seen:
            return key
        seen.add(key)
    return None


def split_nested(raw: Raw | bytes) -> RawObject | None:
    """Split a nested raw value into its members, or None when it is not an object."""
    try:
        return _decode_object(raw)
    except msgspec.ValidationError:
        return None


def split_array(raw: Raw) -> list[Raw]:
    """Split a raw value already known to be an array into its raw items."""
    return _decode_array(raw)


def _check_depth(body: bytes, max_depth: int) -> None:
    """Refuse bodies nested deeper than `max_depth`, without recursion.

    Only quotes and brackets are kept (escaped quotes and backslashes removed first).
    Strings without brackets then read `""` and vanish in one pass; that pass pairs quotes
    from the left, so if no quote is left every string was bracket-free and what remains
    is exactly the structure. Otherwise strings are removed one by one (rare). Innermost
    pairs are then peeled one level per round: one `replace` pass removes only the pairs
    that were innermost before it started.
    """
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = body.translate(_FOLD_BRACES, _NOT_STRUCTURAL).replace(b'""', b"")
    if b'"' in brackets:
        brackets = _STRING_CONTENT.sub(b"", body.translate(_FOLD_BRACES, _NOT_STRUCTURAL))
    for _ in range(max_depth):
        if not brackets:
            return
        brackets = brackets.replace(b"[]", b"")
    if brackets:
        raise TooDeep(f"the body is nested deeper than {max_depth} levels")


def _refuse_big_integers(members: RawObject) -> None:
    """Refuse integer literals beyond 64 bits: they cannot be carried exactly downstream."""
    for key, raw in members.items():
        value = bytes(raw)
        if _LONG_DIGITS not in value.translate(_FOLD):
            continue
        for match in _BIG_INTEGER.finditer(_JSON_STRING.sub(b'""', value)):
            number = int(match.group())
            if number > _U64_MAX or number < _I64_MIN:
                if key in _ID_FIELDS:
                    raise InvalidId(f"{key} {number} is outside the signed 64-bit range", field=key)
                raise InvalidFieldType(
                    f"{key} holds the integer {number}, beyond 64 bits; it cannot be"
                    " forwarded without losing precision",
                    field=key,
                )


_FIRST_BYTE_TYPES: dict[int, JsonType] = {
    ord('"'): "string",
    ord("{"): "object",
    ord("["): "array",
    ord("t"): "boolean",
    ord("f"): "boolean",
    ord("n"): "null",
}
QUOTE = ord('"')


def json_type(raw: Raw | bytes) -> JsonType:
    """The JSON type of a raw value, from its bytes (the value is known to be valid)."""
    kind = _FIRST_BYTE_TYPES.get(memoryview(raw)[0])
    if kind is not None:
        return kind
    number = bytes(raw)
    return "number" if b"." in number or b"e" in number or b"E" in number else "integer"


def is_string(raw: Raw | bytes) -> bool:
    return memoryview(raw)[0] == QUOTE
