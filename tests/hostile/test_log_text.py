"""The log text helpers: escaped text is always printable, parser reasons quote nothing."""

from __future__ import annotations

from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine, InvalidHeader, LineTooLong
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.server.logsafe import parse_reason, printable

SECRET = "tok-5ecret"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_printable_text_is_always_printable_and_keeps_printable_text(text: str) -> None:
    escaped = printable(text)
    assert escaped.isprintable()
    if text.isprintable():
        assert escaped == text


def test_printable_escapes_line_breaks_escapes_and_separators() -> None:
    assert printable("a\r\nb\x1b[31m\u2028\u2029\x85\u202e") == (
        "a\\r\\nb\\x1b[31m\\u2028\\u2029\\x85\\u202e"
    )


def test_parser_reasons_keep_the_reason_and_drop_the_quoted_bytes() -> None:
    cases = {
        BadHttpMessage(
            f"Invalid header value char:\n\n  b'Authorization: Bearer {SECRET}'\n   ^"
        ): "BadHttpMessage: Invalid header value char",
        LineTooLong(f"X-Key: {SECRET}".encode(), 8190): (
            "LineTooLong: Got more than 8190 bytes when reading"
        ),
        BadStatusLine(f"GET /x?token={SECRET}"): "BadStatusLine: Bad status line",
        InvalidHeader(f"X-{SECRET}".encode()): "InvalidHeader: Invalid HTTP header",
        BadHttpMessage(f"Bad status line:\n  Invalid HTTP version:\n\n  b'{SECRET}'"): (
            "BadHttpMessage: Bad status line"
        ),
    }
    for exc, reason in cases.items():
        assert parse_reason(exc) == reason
        assert SECRET not in parse_reason(exc)
