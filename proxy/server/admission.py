"""What an event request is checked for before its body is read, and how a refusal reads.

`before_body` runs the checks, cheapest first: protocol version and transfer coding (505 /
400 / 501, see `framing`), content type and coding (415), declared length (413). The
handler runs it on every event request; the `Expect: 100-continue` handler runs the same
before telling the client to send its body. The in-flight budgets come next (`budget`).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import hdrs, web

from proxy.config import LimitSettings
from proxy.server import framing, problems


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the proxy answers itself with a problem document."""

    problem: problems.ProxyProblem
    detail: str
    close: bool = False  # end the connection after the answer: a body is left unread on it
    at_once: bool = False  # send now and close (a stalled body is not waited for)


def is_json_content_type(request: web.BaseRequest) -> bool:
    """`application/json` or `application/*+json`, in UTF-8 (as the Rust server accepts)."""
    if request.headers.get(hdrs.CONTENT_TYPE) == "application/json":
        return True  # what nearly every producer sends: no media-type parsing
    mime = request.content_type
    if mime != "application/json" and not (
        mime.startswith("application/") and mime.endswith("+json")
    ):
        return False
    charset = request.charset
    return charset is None or charset.lower() in ("utf-8", "utf8")


def before_body(
    request: web.BaseRequest, limits: LimitSettings, declared: int | None
) -> Refusal | None:
    """Why the request is refused before its body is read (`declared`: its Content-Length),
    or None."""
    refused = framing.refusal(request)
    if refused is not None:
        return Refusal(*refused, close=True)
    if not is_json_content_type(request):
        got = request.headers.get(hdrs.CONTENT_TYPE, "none")
        return Refusal(
            problems.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type must be application/json (UTF-8); got {got}",
        )
    encoding = request.headers.get(hdrs.CONTENT_ENCODING)
    if encoding is not None and encoding.lower() != "identity":
        return Refusal(
            problems.UNSUPPORTED_MEDIA_TYPE, "compressed request bodies are not accepted"
        )
    if declared is not None and declared > limits.max_body_bytes:
        return Refusal(
            problems.BODY_TOO_LARGE,
            f"body of {declared} bytes is over the {limits.max_body_bytes}-byte limit",
            close=True,
        )
    return None
