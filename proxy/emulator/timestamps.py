"""chrono's relaxed RFC 3339 parser, as the Rust server reads `created_at`.

`DateTime<Utc>` deserializes through `DateTime<FixedOffset>::from_str`: a date, `T`, `t`
or a space, a time with any fraction, optional spaces, then `Z`/`z` or a numeric offset.
An offset is required. Refusals carry chrono's `ParseError` texts.
"""

from __future__ import annotations

import re

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
