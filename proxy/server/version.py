"""The upstream version probe behind `upstream.version: auto`.

`GET {upstream}/api/health` at start and every `probe_interval_seconds` (sooner while the
upstream has not answered yet). The Rust server puts its release in `version`, also in the
503 it answers while its database is down, so a 200 or a 503 with a JSON object is
authoritative: its `version` (or none, as the Python server sends) decides the target
through the rules' thresholds. Anything else (refused, timeout, another status, not JSON)
says nothing about the version: the last known one stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson

from proxy.config import redact_url
from proxy.server.forward import UpstreamError
from proxy.server.state import ProxyState
from proxy.server.upstream import PoolBusy, UpstreamPool, request_bytes

log = logging.getLogger(__name__)

HEALTH_PATH = "/api/health"
# A health answer is small; a probe must never hold the loop on a huge one.
MAX_HEALTH_BYTES = 64 * 1024
MAX_PROBE_SECONDS = 5.0
FIRST_RETRY_SECONDS = 0.25


def version_from_health(status: int, body: bytes) -> tuple[bool, str | None]:
    """(authoritative, version) for a health answer."""
    if status not in (200, 503):
        return False, None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False, None
    if not isinstance(data, dict):
        return False, None
    version = data.get("version")
    if isinstance(version, str) and version.strip():
        return True, version.strip()
    return True, None


class VersionProbe:
    """Keeps `ProxyState` told of the upstream's version while the mode is `auto`."""

    def __init__(self, state: ProxyState):
        self._state = state
        self._wake = asyncio.Event()
        self._healthy: bool | None = None
        self._pool: UpstreamPool | None = None  # one kept-alive connection of its own

    def _pool_for(self, origin: str) -> UpstreamPool:
        if self._pool is None or self._pool.origin != origin:
            if self._pool is not None:
                self._pool.close()
            self._pool = UpstreamPool(origin, 1)
        return self._pool

    def wake(self) -> None:
        """Probe now (after a reload changed the mode, URL or interval)."""
        self._wake.set()

    async def probe_once(self) -> None:
        snapshot = self._state.snapshot
        upstream = snapshot.settings.upstream
        if upstream.version != "auto":
            return
        pool = self._pool_for(snapshot.upstream_origin)
        timeout = min(upstream.timeout_seconds, MAX_PROBE_SECONDS)
        target = snapshot.upstream_prefix + HEALTH_PATH.encode()
        try:
            answer = await pool.send(
                request_bytes(b"GET", target, pool.host_header, [(b"Accept", b"application/json")]),
                within=timeout,
                connect_timeout=upstream.connect_timeout_seconds,
            )
            authoritative, version = version_from_health(answer.status, answer.body)
            problem = f"answered {answer.status} without a JSON body"
        except (UpstreamError, PoolBusy) as exc:
            authoritative, version = False, None
            problem = f"unreachable ({getattr(exc, 'detail', exc.__class__.__name__)})"
        url = snapshot.upstream_base + HEALTH_PATH
        if self._state.snapshot.upstream_base != snapshot.upstream_base:
            return  # a reload changed the upstream meanwhile; this answer was the old one's
        if authoritative:
            if self._healthy is False:
                log.info("upstream health probe answers again")
            self._healthy = True
            self._state.set_probed(version)
        elif self._healthy is not False:
            self._healthy = False
            log.warning(
                "upstream health probe %s %s; keeping version %s",
                redact_url(url),
                problem,
                self._state.probed_version or "unknown",
            )

    async def run(self) -> None:
        """Probe forever; the first probe has already run when this starts.

        Until the upstream has answered once, probes come quickly (0.25 s, doubling up to
        the interval): a sidecar starts before its server, and readiness waits on it.
        """
        retry = FIRST_RETRY_SECONDS
        while True:
            interval = self._state.snapshot.settings.upstream.probe_interval_seconds
            if not self._state.upstream_reached:
                interval, retry = min(retry, interval), min(retry * 2, interval)
            else:
                retry = FIRST_RETRY_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await self.probe_once()
            except Exception:  # the probe must outlive any surprise; the next one may work
                log.exception("upstream version probe failed unexpectedly")

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
