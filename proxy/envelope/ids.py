"""Exact 64-bit ids: parsing from raw JSON tokens, range checks, and snowflake minting.

Ids are read from the raw token bytes, never through a float or a lax decoder: a JSON
integer, or a JSON string of an optional `-` and digits, within the signed 64-bit range.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import orjson

from proxy.envelope.errors import InvalidId
from proxy.envelope.jsonbody import decode_string

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


class ExactId(NamedTuple):
    """An id value, and the string it was written as when the client sent a string."""

    value: int
    written: str | None = None

    def as_string(self) -> str:
        """The decimal string for a string target: as written when it came as a string."""
        return self.written if self.written is not None else str(self.value)

    def encode(self, kind: str) -> bytes:
        """The JSON token for a target that wants ids as `integer` or `string`."""
        if kind == "integer":
            return str(self.value).encode()
        return orjson.dumps(self.as_string())


def parse_id(raw: bytes, field: str) -> ExactId:
    """Parse the raw JSON token of an id field; refuse anything that is not exact."""
    if raw[:1] == b'"':
        return exact_id(decode_string(raw), field)
    try:
        # A valid JSON token that int() accepts is a plain integer: JSON has no '+',
        # '_' or spaces inside numbers, and fractions or exponents make int() fail.
        value = int(raw)
    except ValueError:
        kinds = {
            b"t": "a boolean",
            b"f": "a boolean",
            b"n": "null",
            b"[": "an array",
            b"{": "an object",
        }
        what = kinds.get(raw[:1], "a number with a fraction or exponent")
        raise InvalidId(
            f"{field} must be an integer or a decimal string; got {what}", field=field
        ) from None
    return ExactId(_checked(value, field))


def exact_id(value: int | str, field: str) -> ExactId:
    """An id from its decoded JSON value: an integer, or a string of an optional '-' and digits."""
    if isinstance(value, str):
        number = decimal_value(value)
        if number is None:
            raise InvalidId(
                f"{field} must be a decimal integer string (optional '-' and digits only);"
                f" got {_preview(value)}",
                field=field,
            )
        return ExactId(_checked(number, field), written=value)
    return ExactId(_checked(value, field))


def decimal_value(text: str) -> int | None:
    """The integer a decimal id string (an optional '-' and ASCII digits) spells, or None."""
    if text.isascii() and (text.isdigit() or (text[:1] == "-" and text[1:].isdigit())):
        return int(text)
    return None


def _checked(value: int, field: str) -> int:
    if not I64_MIN <= value <= I64_MAX:
        raise InvalidId(f"{field} {value} is outside the signed 64-bit range", field=field)
    return value


def _preview(text: str, limit: int = 40) -> str:
    shown = text if len(text) <= limit else text[:limit] + "..."
    return repr(shown)


# Application snowflake layout, as the NoETL server and worker mint them.
SNOWFLAKE_EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
_MACHINE_BITS = 10
_SEQUENCE_BITS = 12
_MAX_SEQUENCE = (1 << _SEQUENCE_BITS) - 1
MAX_MACHINE_ID = (1 << _MACHINE_BITS) - 1


class SnowflakeMinter:
    """Mints `(ms since 2024-01-01) << 22 | machine << 12 | seq`, strictly increasing.

    Safe across threads. When the clock stands still or steps back, the minter keeps using
    its last millisecond and borrows the next one once the sequence is exhausted, so ids
    never repeat or decrease within a process.
    """

    def __init__(self, machine_id: int, clock_ms: Callable[[], int] | None = None) -> None:
        if not 0 <= machine_id <= MAX_MACHINE_ID:
            raise ValueError(f"machine_id must be within 0..{MAX_MACHINE_ID}, got {machine_id}")
        self.machine_id = machine_id
        self._machine = machine_id << _SEQUENCE_BITS
        self._clock_ms = clock_ms or _now_ms
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0

    def next(self) -> int:
        with self._lock:
            now = self._clock_ms()
            if now <= self._last_ms:
                now = self._last_ms
                if self._sequence == _MAX_SEQUENCE:
                    now += 1
                    self._sequence = 0
                else:
                    self._sequence += 1
            else:
                self._sequence = 0
            self._last_ms = now
            elapsed = now - SNOWFLAKE_EPOCH_MS
            return (elapsed << (_MACHINE_BITS + _SEQUENCE_BITS)) | self._machine | self._sequence


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
