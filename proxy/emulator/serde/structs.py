"""The Rust server's request structs, deserialized the way `#[derive(Deserialize)]` does.

Each struct is data (`schema`: fields in declaration order, with serde aliases and
defaults); `deserialize_body` runs it over `reader.Reader` and returns either the
field values or the axum rejection (status and text) the server would send. Field kinds
cover what the NoETL structs use: `String`, `Option<String>`, `bool`, `serde_json::Value`,
`Option<Vec<i64>>`, `Option<DateTime<Utc>>`, the lax string-or-integer id decoders of
v2.19.1+, and `Vec<BatchEventItem>`.
"""

from __future__ import annotations

from typing import Any

from proxy.emulator.serde.errors import DATA, EOF_VALUE, EXPECTED_VALUE, SerdeError, Unexpected
from proxy.emulator.serde.fast import fast_deserialize
from proxy.emulator.serde.reader import I64_MIN, Reader
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
from proxy.emulator.serde.skip import ignore_value
from proxy.emulator.timestamps import chrono_rfc3339_problem

_ID_LAX_EXPECTING = "a string or signed/unsigned integer representing a snowflake id"
_OPT_ID_LAX_EXPECTING = (
    "null, a string, or a signed/unsigned integer representing an optional snowflake id"
)
_DATETIME_EXPECTING = "an RFC 3339 formatted date and time string"


_SYNTAX_PREFIX = "Failed to parse the request body as JSON: "
_DATA_PREFIX = "Failed to deserialize the JSON body into the target type: "


def deserialize_body(body: bytes, struct: Struct) -> dict[str, Any] | Rejection:
    """Deserialize a whole body into `struct` like `axum::Json<T>`; refusals as axum words them.

    Ordinary bodies take `fast`'s shortcut; everything else the exact reader.
    """
    values = fast_deserialize(body, struct)
    return values if values is not None else exact_deserialize(body, struct)


def exact_deserialize(body: bytes, struct: Struct) -> dict[str, Any] | Rejection:
    """The byte-by-byte reader: always right, and the only one that words refusals."""
    reader = Reader(body)
    try:
        values = _deserialize_struct(reader, struct)
    except SerdeError as err:
        if err.category == DATA:
            return Rejection(422, _DATA_PREFIX + str(err))
        return Rejection(400, _SYNTAX_PREFIX + str(err))
    try:
        reader.end()
    except SerdeError as err:
        err.path = ""
        return Rejection(400, _SYNTAX_PREFIX + str(err))
    return values


# -- structs ---------------------------------------------------------------------------


def _deserialize_struct(r: Reader, struct: Struct) -> dict[str, Any]:
    peek = r.parse_whitespace()
    if peek is None:
        raise r.peek_error(EOF_VALUE)
    if peek not in (0x7B, 0x5B):
        raise _peek_invalid_type(r, f"struct {struct.name}")
    r.enter_nested()
    r.i += 1
    try:
        values = _visit_map(r, struct) if peek == 0x7B else _visit_seq(r, struct)
    except SerdeError as err:
        if err.line == 0:
            r.try_end(0x7D if peek == 0x7B else 0x5D)
            r.fix(err)
        raise
    if peek == 0x7B:
        r.end_map()
    else:
        r.end_seq()
    r.leave_nested()
    return values


def _visit_map(r: Reader, struct: Struct) -> dict[str, Any]:
    values: dict[str, Any] = {}
    first = True
    while r.has_next_key(first):
        first = False
        key = r.parse_key()
        target = struct.lookup.get(key)
        r.path.append(key)
        if target is None:
            r.parse_object_colon()
            ignore_value(r)
            r.path.pop()
            continue
        if target.name in values:
            r.path.pop()
            raise r.data_error(f"duplicate field `{target.name}`")
        r.parse_object_colon()
        values[target.name] = _deserialize_field(r, target, struct)
        r.path.pop()
    for f in struct.fields:
        if f.name in values:
            continue
        if f.has_default:
            values[f.name] = f.default
        elif f.optional:
            values[f.name] = None
        else:
            raise r.data_error(f"missing field `{f.name}`")
    return values


def _visit_seq(r: Reader, struct: Struct) -> dict[str, Any]:
    """A struct written as a JSON array of its fields in declaration order (serde allows it)."""
    values: dict[str, Any] = {}
    first = True
    ended = False
    for index, f in enumerate(struct.fields):
        if not ended and r.has_next_element(first):
            first = False
            r.path.append(index)
            values[f.name] = _deserialize_field(r, f, struct)
            r.path.pop()
            continue
        ended = True
        if not f.has_default:
            raise r.data_error(
                f"invalid length {index}, expected struct {struct.name}"
                f" with {len(struct.fields)} elements"
            )
        values[f.name] = f.default
    return values


# -- fields ----------------------------------------------------------------------------


def _deserialize_field(r: Reader, f: Field, struct: Struct) -> Any:
    kind = f.kind
    if kind == STRING:
        return _deserialize_str(r)
    if kind == BOOL:
        return _deserialize_bool(r)
    if kind == VALUE:
        return r.parse_value()
    if kind == ID_LAX:
        return _deserialize_id_lax(r, optional=False)
    if kind == OPT_ID_LAX:
        return _deserialize_id_lax(r, optional=True)
    if kind == ITEMS:
        assert struct.items is not None
        return _deserialize_items(r, struct.items)
    # The Option<T> kinds: `null` is None, anything else is T.
    if r.parse_whitespace() == 0x6E:
        r.i += 1
        r.parse_ident(b"ull")
        return None
    if kind == OPT_STRING:
        return _deserialize_str(r)
    if kind == OPT_VALUE:
        return r.parse_value()
    if kind == OPT_I64_VEC:
        return _deserialize_i64_vec(r)
    if kind == OPT_DATETIME:
        return _deserialize_datetime(r)
    raise AssertionError(f"unknown field kind {kind}")


def _peek_invalid_type(r: Reader, expected: str) -> SerdeError:
    """serde_json's `peek_invalid_type`: consume a scalar to describe it, not a container."""
    peek = r.parse_whitespace()
    if peek == 0x5B:
        return r.fix(r.invalid_type(Unexpected("sequence"), expected))
    if peek == 0x7B:
        return r.fix(r.invalid_type(Unexpected("map"), expected))
    if peek is None or peek not in b'ntf-0123456789"':
        return r.peek_error(EXPECTED_VALUE)
    value = r.parse_value()
    return r.fix(r.invalid_type(Unexpected.of(value), expected))


def _deserialize_str(r: Reader) -> str:
    peek = r.parse_whitespace()
    if peek is None:
        raise r.peek_error(EOF_VALUE)
    if peek != 0x22:
        raise _peek_invalid_type(r, "a string")
    r.i += 1
    return r.parse_str()


def _deserialize_bool(r: Reader) -> bool:
    peek = r.parse_whitespace()
    if peek is None:
        raise r.peek_error(EOF_VALUE)
    if peek == 0x74:
        r.i += 1
        r.parse_ident(b"rue")
        return True
    if peek == 0x66:
        r.i += 1
        r.parse_ident(b"alse")
        return False
    raise _peek_invalid_type(r, "a boolean")


def _deserialize_any_scalar(r: Reader, expected: str) -> Any:
    """`deserialize_any` with a visitor that only accepts scalars: containers are refused
    right after their opening bracket, like a visitor without `visit_seq`/`visit_map`."""
    peek = r.parse_whitespace()
    if peek is None:
        raise r.peek_error(EOF_VALUE)
    if peek in (0x5B, 0x7B):
        r.enter_nested()
        r.i += 1
        r.try_end(0x5D if peek == 0x5B else 0x7D)
        kind = "sequence" if peek == 0x5B else "map"
        raise r.fix(r.invalid_type(Unexpected(kind), expected))
    return r.parse_value()


def _deserialize_id_lax(r: Reader, optional: bool) -> str | None:
    expected = _OPT_ID_LAX_EXPECTING if optional else _ID_LAX_EXPECTING
    value = _deserialize_any_scalar(r, expected)
    if value is None and optional:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise r.fix(r.invalid_type(Unexpected.of(value), expected))


def _deserialize_items(r: Reader, item: Struct) -> list[dict[str, Any]]:
    peek = r.parse_whitespace()
    if peek is None:
        raise r.peek_error(EOF_VALUE)
    if peek != 0x5B:
        raise _peek_invalid_type(r, "a sequence")
    r.enter_nested()
    r.i += 1
    items: list[dict[str, Any]] = []
    first = True
    while r.has_next_element(first):
        first = False
        r.path.append(len(items))
        items.append(_deserialize_struct(r, item))
        r.path.pop()
    r.end_seq()
    r.leave_nested()
    return items


def _deserialize_i64_vec(r: Reader) -> list[int]:
    peek = r.parse_whitespace()
    if peek is None:
        raise r.peek_error(EOF_VALUE)
    if peek != 0x5B:
        raise _peek_invalid_type(r, "a sequence")
    r.enter_nested()
    r.i += 1
    numbers: list[int] = []
    first = True
    while r.has_next_element(first):
        first = False
        r.path.append(len(numbers))
        peek = r.parse_whitespace()
        if peek is None:
            raise r.peek_error(EOF_VALUE)
        if peek != 0x2D and not 0x30 <= peek <= 0x39:
            raise _peek_invalid_type(r, "i64")
        value = r.parse_value()
        if isinstance(value, float):
            raise r.fix(r.invalid_type(Unexpected.of(value), "i64"))
        if value > 2**63 - 1 or value < I64_MIN:
            raise r.fix(r.data_error(f"invalid value: integer `{value}`, expected i64"))
        numbers.append(value)
        r.path.pop()
    r.end_seq()
    r.leave_nested()
    return numbers


def _deserialize_datetime(r: Reader) -> str:
    peek = r.parse_whitespace()
    if peek is None:
        raise r.peek_error(EOF_VALUE)
    if peek != 0x22:
        raise _peek_invalid_type(r, _DATETIME_EXPECTING)
    r.i += 1
    text = r.parse_str()
    problem = chrono_rfc3339_problem(text)
    if problem is not None:
        raise r.fix(r.data_error(problem))
    return text
