"""Bytes to a top-level JSON object of raw values, with every bound checked first.

The engine never re-serialises a value it does not change: a body is split into its
top-level members as `msgspec.Raw` slices, so untouched values (a 1 MB context, unknown
keys, nested numbers) are forwarded byte for byte and cost no extra pass in Python.

Before splitting, three bounds are enforced in C-speed passes: valid UTF-8, nesting depth,
and integer literals beyond 64 bits (which most JSON stacks, orjson included, silently turn
into floats).
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from proxy.envelope.errors import InvalidFieldType, InvalidId, InvalidJson, NotAnObject, TooDeep

RawObject = dict[str, bytes]
JsonType = Literal["string", "integer", "number", "boolean", "null", "object", "array"]

_decode_object = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode_array = msgspec.json.Decoder(list[msgspec.Raw]).decode

# The depth pass keeps quotes and brackets only, and folds braces into square brackets:
# nesting depth does not depend on the bracket kind once the JSON is known to be valid.
_NOT_STRUCTURAL = bytes(c for c in range(256) if c not in b'"[]{}')
_FOLD_BRACES = bytes.maketrans(b"{}", b"[]")
_STRING_CONTENT = re.compile(rb'"[^"]*"')
_LONG_DIGITS = re.compile(rb"[0-9]{20}")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BIG_INTEGER = re.compile(rb"(?<![0-9.eE+])-?[0-9]{20,}(?![0-9.eE])")
_U64_MAX = 2**64 - 1
_I64_MIN = -(2**63)
_ID_FIELDS = frozenset({"execution_id", "event_id"})


def parse_object(body: bytes, max_depth: int) -> RawObject:
    """Split a body into its top-level members, or raise the engine's error for it."""
    if not body.strip():
        raise InvalidJson("the body is empty")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"the body is not valid UTF-8 (byte {exc.start})") from exc
    check_depth(body, max_depth)
    try:
        members = _split_object(body)
    except msgspec.ValidationError as exc:
        raise NotAnObject(f"an event body must be a JSON object: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidJson(str(exc)) from exc
    except RecursionError as exc:  # pragma: no cover - check_depth runs first
        raise TooDeep("the body is nested too deeply") from exc
    if _LONG_DIGITS.search(body):
        _refuse_big_integers(members)
    return members


def parse_object_value(raw: bytes) -> RawObject | None:
    """Split a nested raw value into its members, or None when it is not an object."""
    if raw[:1] != b"{":
        return None
    return _split_object(raw)


def parse_array_value(raw: bytes) -> list[bytes]:
    """Split a raw value already known to be an array into its raw items."""
    return [bytes(item) for item in _decode_array(raw)]


def _split_object(raw: bytes) -> RawObject:
    return {key: bytes(value) for key, value in _decode_object(raw).items()}


def check_depth(body: bytes, max_depth: int) -> None:
    """Refuse bodies nested deeper than `max_depth`, without recursion.

    Fewer brackets than the limit cannot nest deeper than it, which settles nearly every
    body with two counts. Otherwise the brackets outside strings are kept (escaped quotes
    and backslashes removed first) and innermost pairs are peeled one level per round.
    """
    if body.count(b"{") + body.count(b"[") <= max_depth:
        return
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = _STRING_CONTENT.sub(b"", unescaped.translate(_FOLD_BRACES, _NOT_STRUCTURAL))
    for _ in range(max_depth):
        if not brackets:
            return
        brackets = brackets.replace(b"[]", b"")  # one pass peels exactly one level
    if brackets:
        raise TooDeep(f"the body is nested deeper than {max_depth} levels")


def _refuse_big_integers(members: RawObject) -> None:
    """Refuse integer literals beyond 64 bits: they cannot be carried exactly downstream."""
    for key, raw in members.items():
        if not _LONG_DIGITS.search(raw):
            continue
        for match in _BIG_INTEGER.finditer(_JSON_STRING.sub(b'""', raw)):
            number = int(match.group())
            if number > _U64_MAX or number < _I64_MIN:
                if key in _ID_FIELDS:
                    raise InvalidId(f"{key} {number} is outside the signed 64-bit range", field=key)
                raise InvalidFieldType(
                    f"{key} holds the integer {number}, beyond 64 bits; it cannot be"
                    " forwarded without losing precision",
                    field=key,
                )


def json_type(raw: bytes) -> JsonType:
    """The JSON type of a raw value, from its first bytes (the value is known to be valid)."""
    first = raw[:1]
    if first == b'"':
        return "string"
    if first == b"{":
        return "object"
    if first == b"[":
        return "array"
    if first in (b"t", b"f"):
        return "boolean"
    if first == b"n":
        return "null"
    if b"." in raw or b"e" in raw or b"E" in raw:
        return "number"
    return "integer"
