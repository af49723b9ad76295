"""Asking the Prometheus HTTP API for the fleet-wide verdict: transport, auth, TLS, bounds.

`PrometheusClient` posts queries to `/api/v1/query` and `/api/v1/query_range` with the
standard library (the command line runs no event loop), with an optional bearer token that
is never printed, a CA bundle or no verification, a timeout per request, a cap on the size
of an answer, and no redirects (a redirect must not carry the token elsewhere).
`fleet_report` runs `fleet.plan`'s queries at one instant and hands the answers to
`fleet.build_report`.
"""

from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

from proxy.observability import fleet

MAX_ANSWER_BYTES = 32 * 1024 * 1024
DEFAULT_WINDOW_SECONDS = 86400.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class PrometheusUnavailable(OSError):
    """Prometheus could not be reached, or did not answer as its HTTP API does."""


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `24h`, `7d`, `2w` as seconds (argparse type)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"not a duration: {text!r} (examples: 3600, 90m, 24h, 7d)")
    return float(match[1]) * _UNITS[match[2]]


parse_duration.__name__ = "duration"  # argparse names the type in its error message


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is raised as an HTTPError


class PrometheusClient:
    """Queries one Prometheus server's HTTP API."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        ca_file: str | None = None,
        insecure: bool = False,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise fleet.FleetError(f"--prometheus needs an http(s) URL, got {base_url!r}")
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:
            netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
        # Credentials in the URL are neither sent nor shown: use --token-file.
        self.base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.display_url = self.base
        self._token = token
        self._timeout = timeout
        context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=ca_file)
            if insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        self._opener = urllib.request.build_opener(
            _NoRedirect(), urllib.request.HTTPSHandler(context=context)
        )

    def query(self, expr: str, at: float) -> object:
        return self._post("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})

    def query_range(self, expr: str, start: float, end: float, step: float) -> object:
        form = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        return self._post("/api/v1/query_range", form)

    def _post(self, path: str, form: dict[str, str]) -> object:
        url = self.base + path
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                raw = response.read(MAX_ANSWER_BYTES + 1)
                status = response.status
        except urllib.error.HTTPError as exc:
            # Prometheus answers refused queries with 400/422 and its JSON error document.
            raw, status = exc.read(MAX_ANSWER_BYTES + 1), exc.code
            if status in (401, 403):
                raise PrometheusUnavailable(
                    f"Prometheus at {self.display_url} answered {status}: check the token"
                ) from None
            if 300 <= status < 400:
                raise PrometheusUnavailable(
                    f"{url} answered a redirect ({status}); give the final URL"
                ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusUnavailable(f"cannot reach Prometheus at {url}: {reason}") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise PrometheusUnavailable(f"the answer from {url} is larger than {MAX_ANSWER_BYTES}")
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise PrometheusUnavailable(
                f"{url} answered HTTP {status} with a body that is not JSON: not the Prometheus "
                "HTTP API (check --prometheus)"
            ) from None
        if not isinstance(answer, dict) or "status" not in answer:
            raise PrometheusUnavailable(
                f"{url} answered JSON without a status: not the Prometheus HTTP API"
            )
        return answer


def fleet_report(
    client: PrometheusClient, selector: str, window_seconds: float | None, now: float
) -> dict[str, Any]:
    """Ask every question of the verdict at `now` and build the fleet report."""
    if window_seconds is None:
        configured = fleet.vector(client.query(fleet.window_query(selector), now))
        window_seconds = configured[0][1] if configured else DEFAULT_WINDOW_SECONDS
    the_plan = fleet.plan(selector, window_seconds)
    answers = {name: client.query(expr, now) for name, expr in the_plan.instant.items()}
    start = now - window_seconds
    coverage = client.query_range(the_plan.coverage, start, now, the_plan.step_seconds)
    return fleet.build_report(answers, coverage, the_plan, now)
