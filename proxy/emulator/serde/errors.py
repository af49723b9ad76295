"""serde_json's error vocabulary: codes, categories, paths, and how values are named.

`SerdeError` renders like `serde_path_to_error::Error<serde_json::Error>` does:
`<path>: <message> at line L column C`. The category decides axum's status: data errors
are 422, syntax and end-of-input errors 400. `Unexpected` names a wrong value the way
serde_json does (`integer `5``, `floating point `1.5``, `null`, `map`, ...).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

SYNTAX = "syntax"
EOF = "eof"
DATA = "data"

EOF_LIST = ("EOF while parsing a list", EOF)
EOF_OBJECT = ("EOF while parsing an object", EOF)
EOF_STRING = ("EOF while parsing a string", EOF)
EOF_VALUE = ("EOF while parsing a value", EOF)
EXPECTED_COLON = ("expected `:`", SYNTAX)
EXPECTED_LIST_COMMA_OR_END = ("expected `,` or `]`", SYNTAX)
EXPECTED_OBJECT_COMMA_OR_END = ("expected `,` or `}`", SYNTAX)
EXPECTED_IDENT = ("expected ident", SYNTAX)
EXPECTED_VALUE = ("expected value", SYNTAX)
INVALID_ESCAPE = ("invalid escape", SYNTAX)
INVALID_NUMBER = ("invalid number", SYNTAX)
NUMBER_OUT_OF_RANGE = ("number out of range", SYNTAX)
INVALID_UNICODE = ("invalid unicode code point", SYNTAX)
CONTROL_CHARACTER = (
    "control character (\\u0000-\\u001F) found while parsing a string",
    SYNTAX,
)
KEY_MUST_BE_A_STRING = ("key must be a string", SYNTAX)
LONE_LEADING_SURROGATE = ("lone leading surrogate in hex escape", SYNTAX)
TRAILING_COMMA = ("trailing comma", SYNTAX)
TRAILING_CHARACTERS = ("trailing characters", SYNTAX)
UNEXPECTED_END_OF_HEX_ESCAPE = ("unexpected end of hex escape", SYNTAX)
RECURSION_LIMIT = ("recursion limit exceeded", SYNTAX)


class SerdeError(Exception):
    """One serde_json error: message, category, position (0 = not yet known) and path."""

    def __init__(self, message: str, category: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.category = category
        self.path = path
        self.line = 0
        self.column = 0

    def at(self, line: int, column: int) -> SerdeError:
        """Fill the position unless it is known already (serde's `fix_position`)."""
        if self.line == 0:
            self.line, self.column = line, column
        return self

    def __str__(self) -> str:
        text = self.message
        if self.line:
            text = f"{text} at line {self.line} column {self.column}"
        return f"{self.path}: {text}" if self.path else text


def render_path(segments: list[str | int]) -> str:
    """`serde_path_to_error`'s rendering: `events[0].step`."""
    out: list[str] = []
    separator = ""
    for segment in segments:
        if isinstance(segment, int):
            out.append(f"[{segment}]")
        else:
            out.append(separator)
            out.append(segment)
        separator = "."
    return "".join(out)


def ryu_format(value: float) -> str:
    """Format a finite f64 like the `ryu` crate does (serde_json's `floating point` text)."""
    if value == 0:
        return "-0.0" if str(value).startswith("-") else "0.0"
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(str(d) for d in digit_tuple)
    assert isinstance(exponent, int)
    length = len(digits)
    kk = length + exponent  # 10^(kk-1) <= v < 10^kk
    if exponent >= 0 and kk <= 16:
        text = digits + "0" * exponent + ".0"
    elif 0 < kk <= 16:
        text = digits[:kk] + "." + digits[kk:]
    elif -5 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif length == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


def rust_debug_str(text: str) -> str:
    """Rust's `{:?}` of a `str`, as serde prints an unexpected string."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\0":
            out.append("\\0")
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\u{{{code:x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class Unexpected:
    """serde's `Unexpected`, rendered with serde_json's overrides (`null`, ryu floats)."""

    def __init__(self, text: str) -> None:
        self.text = text

    @staticmethod
    def of(value: Any) -> Unexpected:
        if value is None:
            return Unexpected("null")
        if value is True or value is False:
            return Unexpected(f"boolean `{'true' if value else 'false'}`")
        if isinstance(value, int):
            return Unexpected(f"integer `{value}`")
        if isinstance(value, float):
            return Unexpected(f"floating point `{ryu_format(value)}`")
        if isinstance(value, str):
            return Unexpected(f"string {rust_debug_str(value)}")
        if isinstance(value, list):
            return Unexpected("sequence")
        return Unexpected("map")
