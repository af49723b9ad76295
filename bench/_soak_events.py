"""The soak's producers: traceable events of three shapes and clients that retry like NoETL.

Event `i` carries a unique marker (`soak-<i>`) in its context and, for the shapes that have
one, a unique `event_id` above 2^53, so every stored copy can be traced back to the event
and to the attempt that produced it: the attempt number travels in `meta.attempts` (in the
payload for `worker_event`, which has no `meta`), as a NoETL worker counts its retries.

A client retries any non-2xx answer or connection failure three times, waiting
0.5 s, 1 s, 2 s (doubling, capped at 5 s; `time_scale` shrinks them for tests), and logs
every attempt's outcome. An event whose retries all failed is sent again in a new round
(as NoETL's orchestrator dispatches a failed command again), up to `ROUNDS` rounds, each
once the caller's `ready` says the upstream is up: how long an upstream restart takes on a
loaded machine then changes how many attempts an event needs, not whether it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson

EXECUTION_BASE = 478775660589000000  # ids far above 2^53: a float would change them
EVENT_BASE = 478775660600000000
SHAPES = ("executor_event", "event_request", "worker_event")
RETRIES = 3
ROUNDS = 5  # dispatches of one event (each with RETRIES retries) before it counts as exhausted
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 5.0
CLIENT_TIMEOUT = 30.0  # the Rust worker's own timeout

# Outcomes after which the event may or may not have been stored upstream.
LOST_ANSWER_CODES = frozenset({"upstream_disconnected", "upstream_timeout"})
Outcome = Literal["acked", "refused", "lost"]


@dataclass(frozen=True)
class Event:
    index: int
    shape: str
    execution_id: int
    event_id: int | None  # None: the proxy mints one
    context: dict[str, Any]

    @property
    def marker(self) -> str:
        return f"soak-{self.index}"

    def body(self, attempt: int, worker: str) -> bytes:
        """The envelope a producer of this shape sends on its `attempt`-th try."""
        if self.shape == "executor_event":
            return orjson.dumps(
                {
                    "execution_id": self.execution_id,
                    "event_type": "command.completed",
                    "step": "fetch",
                    "status": "COMPLETED",
                    "created_at": "2026-06-05T12:00:03.123456789Z",
                    "context": self.context,
                    "event_id": self.event_id,
                    "worker_id": worker,
                    "meta": {"attempts": attempt},
                }
            )
        if self.shape == "event_request":
            return orjson.dumps(
                {
                    "execution_id": str(self.execution_id),
                    "step": "fetch",
                    "name": "call.done",
                    "payload": self.context,
                    "worker_id": worker,
                    "event_id": str(self.event_id),
                    "meta": {"attempts": attempt},
                    "actionable": True,
                }
            )
        payload = {**self.context, "step": "fetch", "worker_id": worker, "attempt": attempt}
        return orjson.dumps(
            {"event_type": "call.done", "execution_id": self.execution_id, "payload": payload}
        )


def make_event(index: int) -> Event:
    shape = SHAPES[index % len(SHAPES)]
    rows = [{"id": EVENT_BASE + index * 7 + n, "value": n * 1.25, "tag": "row"} for n in range(6)]
    context = {"marker": f"soak-{index}", "command_id": f"{index}:fetch:1", "rows": rows}
    return Event(
        index=index,
        shape=shape,
        execution_id=EXECUTION_BASE + index // 10,
        event_id=None if shape == "worker_event" else EVENT_BASE + index,
        context=context,
    )


@dataclass
class Attempt:
    number: int
    outcome: Outcome
    detail: str  # status and code, or the exception's name
    status: int | None = None
    answer_event_id: int | None = None
    retry_after: str | None = None


@dataclass
class ClientLog:
    """Every attempt of every event, by event index."""

    attempts: dict[int, list[Attempt]] = field(default_factory=dict)
    acked: int = 0
    redispatched: int = 0  # rounds after the first (all retries of a round failed)
    exhausted: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # anything else that went wrong


def backoff(retry: int, time_scale: float) -> float:
    """Seconds before retry number `retry` (1, 2, 3): 0.5 s doubling, capped."""
    return float(min(BACKOFF_FIRST * 2 ** (retry - 1), BACKOFF_CAP) * time_scale)


def _problem_code(body: bytes) -> str | None:
    with contextlib.suppress(orjson.JSONDecodeError):
        data = orjson.loads(body)
        if isinstance(data, dict) and isinstance(data.get("code"), str):
            return str(data["code"])
    return None


async def _attempt(
    session: aiohttp.ClientSession, url: str, event: Event, number: int, worker: str
) -> Attempt:
    body = event.body(number, worker)
    headers = {"Content-Type": "application/json", "X-NoETL-Client": worker}
    try:
        async with session.post(url, data=body, headers=headers) as response:
            answer = await response.read()
            status = response.status
            retry_after = response.headers.get("Retry-After")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return Attempt(number, "lost", exc.__class__.__name__)
    if 200 <= status < 300:
        event_id = orjson.loads(answer).get("event_id")
        return Attempt(number, "acked", str(status), status, event_id, retry_after)
    code = _problem_code(answer)
    outcome: Outcome = "lost" if code in LOST_ANSWER_CODES else "refused"
    detail = f"{status} {code}" if code else str(status)
    return Attempt(number, outcome, detail, status, None, retry_after)


async def _no_wait() -> None:
    return None


async def run_client(
    name: str,
    url: str,
    indices: Iterator[int],
    log: ClientLog,
    time_scale: float,
    ready: Callable[[], Awaitable[None]] = _no_wait,
) -> None:
    """Send events taken from `indices` one at a time, retrying like a NoETL worker; an
    event whose retries all failed gets another round once `ready()` returns."""
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        for index in indices:
            event = make_event(index)
            attempts = log.attempts.setdefault(index, [])
            if not await _send(session, url, event, name, attempts, log, time_scale, ready):
                log.exhausted.append(index)


async def _send(
    session: aiohttp.ClientSession,
    url: str,
    event: Event,
    name: str,
    attempts: list[Attempt],
    log: ClientLog,
    time_scale: float,
    ready: Callable[[], Awaitable[None]],
) -> bool:
    """Up to ROUNDS rounds of 1 + RETRIES attempts; True once one was acknowledged."""
    for round_ in range(ROUNDS):
        if round_:
            log.redispatched += 1
            await ready()
        for retry in range(RETRIES + 1):
            # Attempt numbers run on across rounds: each stored copy names its attempt.
            attempt = await _attempt(session, url, event, len(attempts) + 1, name)
            attempts.append(attempt)
            if attempt.outcome == "acked":
                log.acked += 1
                return True
            if retry < RETRIES:
                await asyncio.sleep(backoff(retry + 1, time_scale))
    return False
