"""RFC 3339 timestamps: validated as written, never parsed and re-rendered.

Producers send 0 to 9 fractional digits; Python's datetime keeps only microseconds, so a
valid timestamp is forwarded byte for byte and only the proxy's own stamps are rendered.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime

from proxy.envelope.errors import InvalidTimestamp

_RFC3339 = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"[Tt](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.[0-9]+)?"
    r"(?P<offset>[Zz]|[+-](?P<off_hour>[0-9]{2}):(?P<off_minute>[0-9]{2}))?"
)


def validate_timestamp(text: str, field: str = "created_at") -> None:
    """Refuse anything but an RFC 3339 date-time with a `Z` or `±hh:mm` offset."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise InvalidTimestamp(
            f"{field} must be an RFC 3339 date-time such as 2026-06-05T12:00:00Z; got {text!r}",
            field=field,
        )
    if match["offset"] is None:
        raise InvalidTimestamp(
            f"{field} {text!r} has no UTC offset; add 'Z' or '+hh:mm'", field=field
        )
    year, month, day = int(match["year"]), int(match["month"]), int(match["day"])
    in_range = (
        1 <= month <= 12
        and 1 <= day <= calendar.monthrange(year or 2000, month)[1]
        and int(match["hour"]) <= 23
        and int(match["minute"]) <= 59
        and int(match["second"]) <= 60  # RFC 3339 allows a leap second
        and (match["off_hour"] is None or int(match["off_hour"]) <= 23)
        and (match["off_minute"] is None or int(match["off_minute"]) <= 59)
        and year >= 1
    )
    if not in_range:
        raise InvalidTimestamp(f"{field} {text!r} is not a real date and time", field=field)


def render_utc(moment: datetime) -> str:
    """The proxy's own stamp: UTC, microseconds, `Z` suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
