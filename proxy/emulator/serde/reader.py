"""A JSON reader that fails exactly where and how `serde_json` fails inside axum's `Json`.

The Rust control plane deserializes `POST /api/events` with axum's `Json` extractor, which
runs `serde_json` through `serde_path_to_error`. Its refusals are text and carry the serde
message, the field path and a line/column (`execution_id: invalid type: integer `5`,
expected a string at line 1 column 18`). To answer byte for byte like it, this module reads
the body the way `serde_json::Deserializer::from_slice` does: one pass, the same error
codes, the same position rules (`error` = last byte consumed, `peek_error` = next byte),
and the same 128-level recursion limit (`skip` has the lax path for unknown fields).

Typed fields (strings, booleans, ids, timestamps, structs) are built on top of this in
`structs`; this module only knows JSON and serde's error vocabulary.
"""

from __future__ import annotations

import re
from typing import Any

from proxy.emulator.serde.errors import (
    CONTROL_CHARACTER,
    DATA,
    EOF_LIST,
    EOF_OBJECT,
    EOF_STRING,
    EOF_VALUE,
    EXPECTED_COLON,
    EXPECTED_IDENT,
    EXPECTED_LIST_COMMA_OR_END,
    EXPECTED_OBJECT_COMMA_OR_END,
    EXPECTED_VALUE,
    INVALID_ESCAPE,
    INVALID_NUMBER,
    INVALID_UNICODE,
    KEY_MUST_BE_A_STRING,
    LONE_LEADING_SURROGATE,
    NUMBER_OUT_OF_RANGE,
    RECURSION_LIMIT,
    TRAILING_CHARACTERS,
    TRAILING_COMMA,
    UNEXPECTED_END_OF_HEX_ESCAPE,
    SerdeError,
    Unexpected,
    render_path,
)

RECURSION_LIMIT_DEPTH = 128
U64_MAX = 2**64 - 1
I64_MIN = -(2**63)

_PLAIN_STRING = re.compile(rb'[^"\\\x00-\x1f]*')
_DIGITS = re.compile(rb"[0-9]*")
_WHITESPACE = re.compile(rb"[ \t\n\r]*")
_WHITESPACE_BYTES = frozenset(b" \t\n\r")
_HEX4 = re.compile(rb"[0-9A-Fa-f]{4}")
SIMPLE_ESCAPES = {
    ord('"'): '"',
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}


class Reader:
    """`serde_json::Deserializer` over a byte slice: position rules and JSON grammar."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.n = len(data)
        self.i = 0
        self.remaining_depth = RECURSION_LIMIT_DEPTH
        self.path: list[str | int] = []

    # -- positions and errors ---------------------------------------------------------

    def _position_of(self, index: int) -> tuple[int, int]:
        start_of_line = self.data.rfind(b"\n", 0, index) + 1
        line = 1 + self.data.count(b"\n", 0, start_of_line)
        return line, index - start_of_line

    def position(self) -> tuple[int, int]:
        return self._position_of(self.i)

    def error(self, code: tuple[str, str]) -> SerdeError:
        """An error placed at the last consumed byte (serde_json's `error`)."""
        return SerdeError(code[0], code[1], render_path(self.path)).at(*self.position())

    def peek_error(self, code: tuple[str, str]) -> SerdeError:
        """An error placed at the next unread byte (serde_json's `peek_error`)."""
        where = self._position_of(min(self.n, self.i + 1))
        return SerdeError(code[0], code[1], render_path(self.path)).at(*where)

    def data_error(self, message: str) -> SerdeError:
        """A data error (422 class) without position yet; the caller fixes it."""
        return SerdeError(message, DATA, render_path(self.path))

    def fix(self, err: SerdeError) -> SerdeError:
        return err.at(*self.position())

    def invalid_type(self, unexpected: Unexpected, expected: str) -> SerdeError:
        return self.data_error(f"invalid type: {unexpected.text}, expected {expected}")

    # -- bytes ------------------------------------------------------------------------

    def parse_whitespace(self) -> int | None:
        """Skip JSON whitespace; the next byte, or None at the end of the body."""
        if self.i >= self.n:
            return None
        byte = self.data[self.i]
        if byte not in _WHITESPACE_BYTES:
            return byte
        match = _WHITESPACE.match(self.data, self.i)
        assert match is not None
        self.i = match.end()
        return self.data[self.i] if self.i < self.n else None

    def peek_or_null(self) -> int:
        return self.data[self.i] if self.i < self.n else 0

    def parse_ident(self, rest: bytes) -> None:
        for expected in rest:
            if self.i >= self.n:
                raise self.error(EOF_VALUE)
            got = self.data[self.i]
            self.i += 1
            if got != expected:
                raise self.error(EXPECTED_IDENT)

    def enter_nested(self) -> None:
        """serde_json's `check_recursion!`: refuse before consuming the bracket."""
        self.remaining_depth -= 1
        if self.remaining_depth == 0:
            raise self.peek_error(RECURSION_LIMIT)

    def leave_nested(self) -> None:
        self.remaining_depth += 1

    def end(self) -> None:
        """After a successful value: only whitespace may follow."""
        if self.parse_whitespace() is not None:
            raise self.peek_error(TRAILING_CHARACTERS)

    # -- numbers ----------------------------------------------------------------------

    def parse_number(self, positive: bool) -> int | float:
        """serde_json's `parse_integer` family; the leading `-` is already consumed.

        Returns an int for the u64/i64 ranges and a float otherwise, as serde_json's
        `ParserNumber` does (so `-0` and integers beyond 64 bits are floats).
        """
        start = self.i - (0 if positive else 1)
        if self.i >= self.n:
            raise self.error(EOF_VALUE)
        first = self.data[self.i]
        self.i += 1
        if first == 0x30:
            if 0x30 <= self.peek_or_null() <= 0x39:
                raise self.peek_error(INVALID_NUMBER)
        elif 0x31 <= first <= 0x39:
            match = _DIGITS.match(self.data, self.i)
            assert match is not None
            self.i = match.end()
        else:
            raise self.error(INVALID_NUMBER)
        is_float = False
        if self.peek_or_null() == 0x2E:
            is_float = True
            self.i += 1
            match = _DIGITS.match(self.data, self.i)
            assert match is not None
            if match.end() == self.i:
                if self.i < self.n:
                    raise self.peek_error(INVALID_NUMBER)
                raise self.peek_error(EOF_VALUE)
            self.i = match.end()
        if self.peek_or_null() in (0x65, 0x45):
            is_float = True
            self.i += 1
            if self.peek_or_null() in (0x2B, 0x2D):
                self.i += 1
            if self.i >= self.n:
                raise self.error(EOF_VALUE)
            digit = self.data[self.i]
            self.i += 1
            if not 0x30 <= digit <= 0x39:
                raise self.error(INVALID_NUMBER)
            match = _DIGITS.match(self.data, self.i)
            assert match is not None
            self.i = match.end()
        token = self.data[start : self.i]
        if not is_float:
            value = int(token)
            if 0 <= value <= U64_MAX and positive:
                return value
            if not positive and I64_MIN <= value < 0:
                return value
        result = float(token)
        if result in (float("inf"), float("-inf")):
            raise self.error(NUMBER_OUT_OF_RANGE)
        return result

    # -- strings ----------------------------------------------------------------------

    def parse_str(self) -> str:
        """A string whose opening quote is consumed; UTF-8 and surrogates are validated."""
        data = self.data
        start = self.i
        match = _PLAIN_STRING.match(data, start)
        assert match is not None
        end = match.end()
        if end < self.n and data[end] == 0x22:
            # The common case: no escape, one slice.
            self.i = end + 1
            try:
                return data[start:end].decode("utf-8")
            except UnicodeDecodeError:
                raise self.error(INVALID_UNICODE) from None
        scratch = bytearray()
        while True:
            match = _PLAIN_STRING.match(data, self.i)
            assert match is not None
            self.i = match.end()
            if self.i == self.n:
                raise self.error(EOF_STRING)
            byte = data[self.i]
            if byte == 0x22:
                scratch += data[start : self.i]
                self.i += 1
                try:
                    return scratch.decode("utf-8")
                except UnicodeDecodeError:
                    raise self.error(INVALID_UNICODE) from None
            if byte == 0x5C:
                scratch += data[start : self.i]
                self.i += 1
                self._parse_escape(scratch)
                start = self.i
                continue
            self.i += 1
            raise self.error(CONTROL_CHARACTER)

    def _parse_escape(self, scratch: bytearray) -> None:
        if self.i >= self.n:
            raise self.error(EOF_STRING)
        ch = self.data[self.i]
        self.i += 1
        simple = SIMPLE_ESCAPES.get(ch)
        if simple is not None:
            scratch += simple.encode()
            return
        if ch != 0x75:
            raise self.error(INVALID_ESCAPE)
        code = self.decode_hex_escape()
        if 0xDC00 <= code <= 0xDFFF:
            raise self.error(LONE_LEADING_SURROGATE)
        if not 0xD800 <= code <= 0xDBFF:
            scratch += chr(code).encode("utf-8", "surrogatepass")
            return
        for expected in (0x5C, 0x75):
            if self.i >= self.n:
                raise self.error(EOF_STRING)
            got = self.data[self.i]
            self.i += 1
            if got != expected:
                raise self.error(UNEXPECTED_END_OF_HEX_ESCAPE)
        low = self.decode_hex_escape()
        if not 0xDC00 <= low <= 0xDFFF:
            raise self.error(LONE_LEADING_SURROGATE)
        scratch += chr(((code - 0xD800) << 10 | (low - 0xDC00)) + 0x10000).encode()

    def decode_hex_escape(self) -> int:
        if self.n - self.i < 4:
            self.i = self.n
            raise self.error(EOF_STRING)
        chunk = self.data[self.i : self.i + 4]
        self.i += 4
        if not _HEX4.fullmatch(chunk):
            raise self.error(INVALID_ESCAPE)
        return int(chunk, 16)

    # -- generic values (serde_json::Value) -------------------------------------------

    def parse_value(self) -> Any:
        """`serde_json::Value` through `deserialize_any`: any JSON, strictly checked."""
        peek = self.parse_whitespace()
        if peek is None:
            raise self.peek_error(EOF_VALUE)
        if peek == 0x22:
            self.i += 1
            return self.parse_str()
        if peek == 0x7B:
            return self._parse_object()
        if peek == 0x5B:
            return self._parse_array()
        if peek == 0x2D:
            self.i += 1
            return self.parse_number(False)
        if 0x30 <= peek <= 0x39:
            return self.parse_number(True)
        if peek == 0x6E:
            self.i += 1
            self.parse_ident(b"ull")
            return None
        if peek == 0x74:
            self.i += 1
            self.parse_ident(b"rue")
            return True
        if peek == 0x66:
            self.i += 1
            self.parse_ident(b"alse")
            return False
        raise self.peek_error(EXPECTED_VALUE)

    def _parse_array(self) -> list[Any]:
        self.enter_nested()
        self.i += 1
        items: list[Any] = []
        first = True
        while self.has_next_element(first):
            first = False
            self.path.append(len(items))
            items.append(self.parse_value())
            self.path.pop()
        self.end_seq()
        self.leave_nested()
        return items

    def _parse_object(self) -> dict[str, Any]:
        self.enter_nested()
        self.i += 1
        obj: dict[str, Any] = {}
        first = True
        while self.has_next_key(first):
            first = False
            key = self.parse_key()
            self.path.append(key)
            self.parse_object_colon()
            obj[key] = self.parse_value()
            self.path.pop()
        self.end_map()
        self.leave_nested()
        return obj

    # -- sequence and map access ------------------------------------------------------

    def has_next_element(self, first: bool) -> bool:
        peek = self.parse_whitespace()
        if peek is None:
            raise self.peek_error(EOF_LIST)
        if peek == 0x5D:
            return False
        if first:
            return True
        if peek == 0x2C:
            self.i += 1
            after = self.parse_whitespace()
            if after == 0x5D:
                raise self.peek_error(TRAILING_COMMA)
            if after is None:
                raise self.peek_error(EOF_VALUE)
            return True
        raise self.peek_error(EXPECTED_LIST_COMMA_OR_END)

    def end_seq(self) -> None:
        peek = self.parse_whitespace()
        if peek == 0x5D:
            self.i += 1
            return
        if peek == 0x2C:
            self.i += 1
            if self.parse_whitespace() == 0x5D:
                raise self.peek_error(TRAILING_COMMA)
            raise self.peek_error(TRAILING_CHARACTERS)
        if peek is None:
            raise self.peek_error(EOF_LIST)
        raise self.peek_error(TRAILING_CHARACTERS)

    def has_next_key(self, first: bool) -> bool:
        peek = self.parse_whitespace()
        if peek is None:
            raise self.peek_error(EOF_OBJECT)
        if peek == 0x7D:
            return False
        if first:
            if peek == 0x22:
                return True
            raise self.peek_error(KEY_MUST_BE_A_STRING)
        if peek == 0x2C:
            self.i += 1
            after = self.parse_whitespace()
            if after == 0x22:
                return True
            if after == 0x7D:
                raise self.peek_error(TRAILING_COMMA)
            if after is None:
                raise self.peek_error(EOF_VALUE)
            raise self.peek_error(KEY_MUST_BE_A_STRING)
        raise self.peek_error(EXPECTED_OBJECT_COMMA_OR_END)

    def parse_key(self) -> str:
        self.i += 1  # the opening quote, seen by has_next_key
        return self.parse_str()

    def parse_object_colon(self) -> None:
        peek = self.parse_whitespace()
        if peek == 0x3A:
            self.i += 1
            return
        if peek is None:
            raise self.peek_error(EOF_OBJECT)
        raise self.peek_error(EXPECTED_COLON)

    def end_map(self) -> None:
        peek = self.parse_whitespace()
        if peek == 0x7D:
            self.i += 1
            return
        if peek == 0x2C:
            raise self.peek_error(TRAILING_COMMA)
        if peek is None:
            raise self.peek_error(EOF_OBJECT)
        raise self.peek_error(TRAILING_CHARACTERS)

    def try_end(self, closing: int) -> None:
        """Run `end_seq`/`end_map` for its side effect only, as serde does after a failed
        visit (`match (ret, self.end_map())`): a closing bracket is consumed, errors dropped.
        """
        try:
            if closing == 0x5D:
                self.end_seq()
            else:
                self.end_map()
        except SerdeError:
            pass
