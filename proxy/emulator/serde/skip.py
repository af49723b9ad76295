"""serde_json's `ignore_value`: how the Rust server skips fields its structs do not declare.

Unknown fields are read without building a value, and with fewer checks than a declared
`serde_json::Value`: no recursion limit (an explicit stack), no UTF-8 or surrogate
validation inside strings, no range check on numbers. A body the server accepts only
because the oddity sits in an unknown field is accepted here too.
"""

from __future__ import annotations

import re

from proxy.emulator.serde.errors import (
    CONTROL_CHARACTER,
    EOF_LIST,
    EOF_OBJECT,
    EOF_STRING,
    EOF_VALUE,
    EXPECTED_COLON,
    EXPECTED_LIST_COMMA_OR_END,
    EXPECTED_OBJECT_COMMA_OR_END,
    EXPECTED_VALUE,
    INVALID_ESCAPE,
    INVALID_NUMBER,
    KEY_MUST_BE_A_STRING,
)
from proxy.emulator.serde.reader import SIMPLE_ESCAPES, Reader

_PLAIN_STRING = re.compile(rb'[^"\\\x00-\x1f]*')
_DIGITS = re.compile(rb"[0-9]*")


def ignore_value(r: Reader) -> None:
    """Skip any value without building it: no recursion limit, no UTF-8 or number
    range checks, as serde_json does for fields a struct does not declare."""
    stack: list[int] = []
    enclosing: int | None = None
    while True:
        peek = r.parse_whitespace()
        if peek is None:
            raise r.peek_error(EOF_VALUE)
        frame: int | None = None
        if peek == 0x6E:
            r.i += 1
            r.parse_ident(b"ull")
        elif peek == 0x74:
            r.i += 1
            r.parse_ident(b"rue")
        elif peek == 0x66:
            r.i += 1
            r.parse_ident(b"alse")
        elif peek == 0x2D:
            r.i += 1
            _ignore_number(r)
        elif 0x30 <= peek <= 0x39:
            _ignore_number(r)
        elif peek == 0x22:
            r.i += 1
            _ignore_str(r)
        elif peek in (0x5B, 0x7B):
            if enclosing is not None:
                stack.append(enclosing)
                enclosing = None
            r.i += 1
            frame = peek
        else:
            raise r.peek_error(EXPECTED_VALUE)

        if frame is not None:
            accept_comma = False
        elif enclosing is not None:
            frame, enclosing, accept_comma = enclosing, None, True
        elif stack:
            frame, accept_comma = stack.pop(), True
        else:
            return
        while True:
            peek = r.parse_whitespace()
            if peek == 0x2C and accept_comma:
                r.i += 1
                break
            if (peek == 0x5D and frame == 0x5B) or (peek == 0x7D and frame == 0x7B):
                r.i += 1
                if not stack:
                    return
                frame = stack.pop()
                accept_comma = True
                continue
            if peek is None:
                raise r.peek_error(EOF_LIST if frame == 0x5B else EOF_OBJECT)
            if accept_comma:
                raise r.peek_error(
                    EXPECTED_LIST_COMMA_OR_END if frame == 0x5B else EXPECTED_OBJECT_COMMA_OR_END
                )
            break
        if frame == 0x7B:
            peek = r.parse_whitespace()
            if peek is None:
                raise r.peek_error(EOF_OBJECT)
            if peek != 0x22:
                raise r.peek_error(KEY_MUST_BE_A_STRING)
            r.i += 1
            _ignore_str(r)
            peek = r.parse_whitespace()
            if peek is None:
                raise r.peek_error(EOF_OBJECT)
            if peek != 0x3A:
                raise r.peek_error(EXPECTED_COLON)
            r.i += 1
        enclosing = frame


def _ignore_number(r: Reader) -> None:
    first = r.data[r.i] if r.i < r.n else 0
    if r.i < r.n:
        r.i += 1
    if first == 0x30:
        if 0x30 <= r.peek_or_null() <= 0x39:
            raise r.peek_error(INVALID_NUMBER)
    elif 0x31 <= first <= 0x39:
        _skip_digits(r)
    else:
        raise r.error(INVALID_NUMBER)
    if r.peek_or_null() == 0x2E:
        r.i += 1
        if not _skip_digits(r):
            raise r.peek_error(INVALID_NUMBER)
    if r.peek_or_null() in (0x65, 0x45):
        r.i += 1
        if r.peek_or_null() in (0x2B, 0x2D):
            r.i += 1
        digit = r.data[r.i] if r.i < r.n else 0
        if r.i < r.n:
            r.i += 1
        if not 0x30 <= digit <= 0x39:
            raise r.error(INVALID_NUMBER)
        _skip_digits(r)


def _skip_digits(r: Reader) -> bool:
    match = _DIGITS.match(r.data, r.i)
    assert match is not None
    moved = match.end() > r.i
    r.i = match.end()
    return moved


def _ignore_str(r: Reader) -> None:
    while True:
        match = _PLAIN_STRING.match(r.data, r.i)
        assert match is not None
        r.i = match.end()
        if r.i == r.n:
            raise r.error(EOF_STRING)
        byte = r.data[r.i]
        if byte == 0x22:
            r.i += 1
            return
        if byte != 0x5C:
            raise r.error(CONTROL_CHARACTER)
        r.i += 1
        if r.i >= r.n:
            raise r.error(EOF_STRING)
        ch = r.data[r.i]
        r.i += 1
        if ch == 0x75:
            r.decode_hex_escape()
        elif ch not in SIMPLE_ESCAPES:
            raise r.error(INVALID_ESCAPE)
