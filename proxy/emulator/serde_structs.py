"""The Rust server's request structs, deserialized the way `#[derive(Deserialize)]` does.

Each struct is data (`Struct` of `Field`s in declaration order, with serde aliases and
defaults); `deserialize_body` runs it over `serde_reader.Reader` and returns either the
field values or the axum rejection (status and text) the server would send. Field kinds
cover what the NoETL structs use: `String`, `Option<String>`, `bool`, `serde_json::Value`,
`Option<Vec<i64>>`, `Option<DateTime<Utc>>`, the lax string-or-integer id decoders of
v2.19.1+, and `Vec<BatchEventItem>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from proxy.emulator.serde_errors import DATA, EOF_VALUE, EXPECTED_VALUE, SerdeError, Unexpected
from proxy.emulator.serde_reader import I64_MIN, Reader
from proxy.emulator.serde_skip import ignore_value

STRING = "string"
OPT_STRING = "opt_string"
BOOL = "bool"
VALUE = "value"
OPT_VALUE = "opt_value"
OPT_I64_VEC = "opt_i64_vec"
OPT_DATETIME = "opt_datetime"
ID_LAX = "id_lax"
OPT_ID_LAX = "opt_id_lax"
ITEMS = "items"

_ID_LAX_EXPECTING = "a string or signed/unsigned integer representing a snowflake id"
_OPT_ID_LAX_EXPECTING = (
    "null, a string, or a signed/unsigned integer representing an optional snowflake id"
)
_DATETIME_EXPECTING = "an RFC 3339 formatted date and time string"
_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One struct field: its Rust name, serde aliases, kind, and `#[serde(default)]`."""

    name: str
    kind: str
    aliases: tuple[str, ...] = ()
    default: Any = _REQUIRED

    @property
    def has_default(self) -> bool:
        return self.default is not _REQUIRED

    @property
    def optional(self) -> bool:
        # serde fills a missing `Option<T>` with None unless `deserialize_with` is used.
        return self.kind in (OPT_STRING, OPT_VALUE, OPT_I64_VEC, OPT_DATETIME)


@dataclass(frozen=True)
class Struct:
    """A `#[derive(Deserialize)]` struct; `items` is the element struct of an ITEMS field."""

    name: str
    fields: tuple[Field, ...]
    items: Struct | None = None
    lookup: dict[str, Field] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        names: dict[str, Field] = {}
        for f in self.fields:
            for key in (f.name, *f.aliases):
                names[key] = f
        object.__setattr__(self, "lookup", names)


@dataclass(frozen=True)
class Rejection:
    """What axum's `Json` extractor answers: status and text/plain body."""

    status: int
    text: str


_SYNTAX_PREFIX = "Failed to parse the request body as JSON: "
_DATA_PREFIX = "Failed to deserialize the JSON body into the target type: "


def deserialize_body(body: bytes, struct: Struct) -> dict[str, Any] | Rejection:
    """Deserialize a whole body into `struct` like `axum::Json<T>`; refusals as axum words them."""
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


# -- chrono's relaxed RFC 3339 parser (`DateTime<FixedOffset>::from_str`) ---------------

_INVALID = "input contains invalid characters"
_TOO_SHORT = "premature end of input"
_TOO_LONG = "trailing input"
_OUT_OF_RANGE = "input is out of range"
_DATE_PART = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_TIME_PART = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?")
_OFFSET_PART = re.compile(r"([+-])([0-9]{2}):?([0-9]{2})")
_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def chrono_rfc3339_problem(text: str) -> str | None:
    """chrono's error message for a timestamp it refuses, or None when it parses.

    An offset is required: a naive `2026-06-05T12:00:00` ends early (`premature end of
    input`), which is what the Rust server answers for an offset-less `created_at`.
    """
    date = _DATE_PART.match(text)
    if date is None:
        return _template_problem(text, "DDDD-DD-DD")
    pos = date.end()
    if pos >= len(text):
        return _TOO_SHORT
    if text[pos] not in "Tt ":
        return _INVALID
    pos += 1
    time = _TIME_PART.match(text, pos)
    if time is None:
        return _template_problem(text[pos:], "DD:DD:DD")
    pos = time.end()
    while pos < len(text) and text[pos] == " ":
        pos += 1
    if pos >= len(text):
        return _TOO_SHORT
    if text[pos] in "Zz":
        pos += 1
        offset_ok = True
    else:
        offset = _OFFSET_PART.match(text, pos)
        if offset is None:
            if text[pos] not in "+-":
                return _INVALID
            return _template_problem(text[pos + 1 :], "DD:DD")
        pos = offset.end()
        offset_ok = int(offset.group(2)) < 24 and int(offset.group(3)) < 60
    if text[pos:].strip():
        return _TOO_LONG
    year, month, day = (int(g) for g in date.groups())
    hour, minute, second = (int(g) for g in time.groups()[:3])
    leap_year = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    month_days = _DAYS[month - 1] if 1 <= month <= 12 else 0
    if month == 2 and not leap_year:
        month_days = 28
    if not (offset_ok and 1 <= day <= month_days and hour < 24 and minute < 60 and second <= 60):
        return _OUT_OF_RANGE
    return None


def _template_problem(rest: str, template: str) -> str:
    """Input that stops while still matching the template ends early; else it is invalid."""
    for ch, want in zip(rest, template, strict=False):
        if (want == "D" and ch not in "0123456789") or (want != "D" and ch != want):
            return _INVALID
    return _TOO_SHORT if len(rest) < len(template) else _INVALID
