"""RFC 3339 timestamps: validated as written, never parsed and re-rendered.

Producers send 0 to 9 fractional digits; Python's datetime keeps only microseconds, so a
valid timestamp is forwarded byte for byte and only the proxy's own stamps are rendered.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime

from proxy.envelope.errors import InvalidTimestamp

# Field ranges are in the pattern so that one match settles everything except the days of
# short months (29-31), which are checked against the calendar.
_RFC3339 = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>0[1-9]|1[0-2])-(?P<day>0[1-9]|[12][0-9]|3[01])"
    r"[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\.[0-9]+)?"
    r"(?P<offset>[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?"
)

# The common case as one bytes match on the raw JSON string, quotes included: no escapes,
# an offset, and a day every month of that number has (29 and 30 but in February, 31 in
# the long months; not in year 0, which the full check refuses). What it accepts, the full
# check accepts; anything else goes to the full check. A match or None.
plain_timestamp = re.compile(
    rb'"(?!0000-..-(?:29|3))[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])'
    rb"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
    rb"[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\.[0-9]+)?"
    rb'(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"'
).fullmatch


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
    day = int(match["day"])
    if day > 28:
        year, month = int(match["year"]), int(match["month"])
        if year == 0 or day > calendar.monthrange(year, month)[1]:
            raise InvalidTimestamp(f"{field} {text!r} is not a real date", field=field)


def render_utc(moment: datetime) -> str:
    """The proxy's own stamp: UTC, microseconds, `Z` suffix."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"  # drop "+00:00"


class UtcStamper:
    """Renders "now" as a JSON string, formatting each second only once.

    Stamping is on the hot path of every event without `created_at`; most events in a
    second share the date and time, so only the microseconds are formatted per call.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def __call__(self) -> bytes:
        micros = time.time_ns() // 1000
        second, fraction = divmod(micros, 1_000_000)
        if second != self._second:
            # Two threads may both refresh the cache; both write the same value.
            prefix = time.strftime('"%Y-%m-%dT%H:%M:%S.', time.gmtime(second)).encode()
            self._prefix, self._second = prefix, second
        return self._prefix + b'%06dZ"' % fraction
