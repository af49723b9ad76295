"""Checking quarantined records against rules, and sending them again at most once.

`convert_record` is the conversion `serve` does (the same engine, built from the same
settings, by kind of endpoint). `replay` converts each record with the current rules and
sends the accepted ones through `Upstream` (the upstream connection pool `serve` forwards
events over, with its not-sent / maybe-sent classification), at most `rate` per second,
journalling each send (see `journal`) so that it never sends a record twice, even across an
interrupted run.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from proxy.config import Settings
from proxy.envelope import Conversion, Engine, EnvelopeError, Rules
from proxy.quarantine import journal as j
from proxy.quarantine.records import body_of
from proxy.server import problems
from proxy.server.forward import Answer, UpstreamError
from proxy.server.state import choose_target
from proxy.server.upstream import PoolBusy, UpstreamPool, origin_and_prefix, request_bytes
from proxy.server.version import HEALTH_PATH, version_from_health

REPLAY_HEADER = "X-Envelope-Replay"
# Request headers of the original that go with a replayed event (who sent it).
RESENT_HEADERS = ("user-agent", "x-noetl-client")


def convert_record(engine: Engine, record: Mapping[str, Any], target: str) -> Conversion:
    """The record's body converted as `serve` would for its endpoint; raises EnvelopeError."""
    body = body_of(record)
    if record.get("kind") == "batch":
        return engine.convert_batch(body, target)
    return engine.convert_event(body, target)


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where replayed events go: one kept-alive connection of `serve`'s pool kind."""

    pool: UpstreamPool
    prefix: bytes  # the upstream URL's base path, before request paths
    connect_timeout: float
    timeout: float

    @classmethod
    def open(cls, url: str, *, connect_timeout: float, timeout: float) -> Upstream:
        origin, prefix = origin_and_prefix(url)
        return cls(
            pool=UpstreamPool(origin, 1),
            prefix=prefix,
            connect_timeout=connect_timeout,
            timeout=timeout,
        )

    def request(
        self, method: bytes, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> bytes:
        """The request's bytes; raises UpstreamError when a header cannot be sent (nothing
        was sent)."""
        try:
            target = self.prefix + path.encode("utf-8", "surrogateescape")
            wire = [
                (name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape"))
                for name, value in headers.items()
            ]
        except UnicodeEncodeError:
            raise UpstreamError(
                problems.UPSTREAM_REQUEST_FAILED, "a header or the path cannot be encoded"
            ) from None
        return request_bytes(method, target, self.pool.host_header, wire, body)

    async def send(self, request: bytes) -> Answer:
        """One exchange; raises UpstreamError (PoolBusy cannot happen with one caller)."""
        return await self.pool.send(
            request, within=self.timeout, connect_timeout=self.connect_timeout
        )


async def probe_target(
    upstream: Upstream, settings: Settings, rules: Rules
) -> tuple[str, str | None]:
    """(target, upstream version) as `serve` would choose it; `auto` asks the upstream once."""
    probed: str | None = None
    if settings.upstream.version == "auto":
        try:
            probe = upstream.request(b"GET", HEALTH_PATH, {"Accept": "application/json"}, None)
            answer = await upstream.send(probe)
            _, probed = version_from_health(answer.status, answer.body)
        except (UpstreamError, PoolBusy):
            probed = None
    return choose_target(settings, rules, probed)


@dataclass(slots=True)
class Summary:
    sent: int = 0
    still_refused: int = 0
    upstream_refused: int = 0
    upstream_failed: int = 0
    uncertain: int = 0  # the upstream may have stored it; not sent again
    skipped: int = 0  # replayed before
    refused_codes: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        text = (
            f"sent {self.sent}, still refused {self.still_refused}, "
            f"upstream refused {self.upstream_refused}, upstream failed {self.upstream_failed}, "
            f"uncertain {self.uncertain}, already replayed {self.skipped}"
        )
        if self.uncertain:
            text += (
                "\nuncertain: sent when a replay was interrupted or timed out; the upstream "
                "may have stored them. Check the upstream, then --resend-uncertain to send them."
            )
        return text


class Progress:
    """One rewritten line on a terminal; nothing otherwise (logs and pipes stay clean)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.stream = stream
        self.on = stream.isatty()
        self.done = 0

    def step(self, summary: Summary) -> None:
        self.done += 1
        if not self.on:
            return
        width = 30
        filled = width * self.done // max(self.total, 1)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"sent {summary.sent} refused {summary.still_refused} "
            f"upstream-refused {summary.upstream_refused}"
        )
        self.stream.flush()

    def end(self) -> None:
        if self.on and self.done:
            self.stream.write("\n")
            self.stream.flush()


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    rate: float  # sends per second at most
    resend_uncertain: bool = False
    timeout_seconds: float = 25.0
    connect_timeout_seconds: float = 2.0


def _headers(record: Mapping[str, Any]) -> dict[str, str]:
    kept = record.get("headers") or {}
    headers = {name: kept[name] for name in RESENT_HEADERS if isinstance(kept.get(name), str)}
    headers["Content-Type"] = "application/json"
    headers[REPLAY_HEADER] = str(record["id"])
    return headers


class Replayer:
    """Sends quarantined records the rules now accept, once each, at a bounded rate."""

    def __init__(
        self,
        *,
        engine: Engine,
        target: str,
        upstream: str,
        journal: j.ReplayJournal,
        options: ReplayOptions,
    ) -> None:
        self.engine = engine
        self.target = target
        self.url = upstream
        self.journal = journal
        self.options = options
        self.summary = Summary()
        self._next_at = 0.0

    async def run(
        self, records: Iterable[Mapping[str, Any]], progress: Progress | None = None
    ) -> Summary:
        upstream = Upstream.open(
            self.url,
            connect_timeout=self.options.connect_timeout_seconds,
            timeout=self.options.timeout_seconds,
        )
        try:
            for record in records:
                await self._one(upstream, record)
                if progress is not None:
                    progress.step(self.summary)
        finally:
            upstream.pool.close()
        return self.summary

    async def _mark(self, record_id: str, state: str, **extra: Any) -> None:
        # fsync per line: off the loop, which may be waiting for another answer meanwhile.
        await asyncio.to_thread(self.journal.mark, record_id, state, **extra)

    async def _one(self, upstream: Upstream, record: Mapping[str, Any]) -> None:
        summary, journal = self.summary, self.journal
        record_id = str(record["id"])
        state = journal.states.get(record_id)
        if state in j.DONE:
            summary.skipped += 1
            return
        if state == j.IN_FLIGHT and not self.options.resend_uncertain:
            summary.uncertain += 1
            return
        try:
            conv = convert_record(self.engine, record, self.target)
        except EnvelopeError as err:
            summary.still_refused += 1
            summary.refused_codes[err.code] = summary.refused_codes.get(err.code, 0) + 1
            return
        wait = self._next_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._next_at = time.monotonic() + 1.0 / self.options.rate
        path = str(record.get("path", "/api/events"))
        try:
            request = upstream.request(b"POST", path, _headers(record), conv.body)
        except UpstreamError as err:  # built before the in-flight mark: never sent
            await self._mark(record_id, j.NOT_SENT, code=err.problem.code)
            summary.upstream_failed += 1
            return
        await self._mark(record_id, j.IN_FLIGHT, target=self.target)
        try:
            answer = await upstream.send(request)
        except UpstreamError as err:
            if err.problem is problems.UPSTREAM_UNAVAILABLE:
                await self._mark(record_id, j.NOT_SENT, code=err.problem.code)
                summary.upstream_failed += 1
            else:  # it may have been stored: the in-flight mark stays the last word
                summary.uncertain += 1
            return
        if 200 <= answer.status < 300:
            await self._mark(record_id, j.SENT, status=answer.status)
            summary.sent += 1
        elif answer.status < 500:
            await self._mark(record_id, j.UPSTREAM_REFUSED, status=answer.status)
            summary.upstream_refused += 1
        else:
            await self._mark(record_id, j.UPSTREAM_FAILED, status=answer.status)
            summary.upstream_failed += 1
