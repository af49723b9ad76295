"""What may reach the log from a request: control characters escaped, no request bytes quoted.

`printable` escapes every character that could forge or hide log lines (CR, LF, ESC, C1
controls, U+2028/U+2029, bidi overrides and other non-printable code points) in text taken
from a request. `ServerLog` is the logger the HTTP server is given: aiohttp logs a request
it could not parse with a traceback whose message quotes the offending request bytes (a
header line with its value, the request line with its query); `ServerLog` turns that into
one line with the status, the peer and a reason that quotes nothing the client sent.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError

# Longest reason kept: parser reasons are short fixed phrases.
_MAX_REASON = 80
# Where a parser message starts quoting the request: llhttp's "reason:\n\n  b'...'", the
# pure-Python parser's "reason: 'value'" and "when reading: b'...'".
_QUOTE_START = re.compile(r""":\s*\n|:?\s*b?['"]""")


def printable(text: str) -> str:
    """`text` with every non-printable character written as a Python escape (`\\x1b`)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def parse_reason(exc: HttpProcessingError) -> str:
    """Why the parser refused a request, without the request bytes its message quotes."""
    message = str(exc.message or "")
    found = _QUOTE_START.search(message)
    if found is not None:
        message = message[: found.start()]
    reason = printable(message.strip().rstrip(":"))[:_MAX_REASON]
    name = exc.__class__.__name__
    return f"{name}: {reason}" if reason else name


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, with requests it could not parse logged as one line."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__(logger or logging.getLogger("aiohttp.server"), None)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            peer = args[0] if args else None
            # A client's mistake, not the proxy's: no traceback, no ERROR.
            quiet = isinstance(exc, BadHttpMethod) or level < logging.INFO
            self.logger.log(
                logging.DEBUG if quiet else logging.INFO,
                "refused a malformed request from %s: %s %s",
                printable(str(peer)),
                exc.code or 400,
                parse_reason(exc),
            )
            return
        super().log(level, msg, *args, **kwargs)
