"""The event client: a pool of HTTP/1.1 keep-alive connections to the upstream, on asyncio
protocols, with httptools (llhttp) parsing the answers.

It does only what the event routes and the version probe need: one origin, one request per
connection at a time, answers framed by `Content-Length`, chunked or (HTTP/1.0 style) by the
connection's close, `Connection: close` honoured, 1xx interim answers skipped, a bounded
answer size, a connect deadline and an answer deadline. Streaming pass-through of other
routes keeps aiohttp's client (`passthrough.py`).

Every failure says whether the upstream could have seen the request, because
`POST /api/events` is not idempotent (the upstream mints ids):

- never sent: the connection could not be opened (retried once), the request could not be
  put into bytes, or the pool had no free connection in time. A pooled connection the
  upstream closed while it sat idle is noticed when its close arrives and never handed
  out, so no byte is ever written to it.
- maybe sent: anything after the first byte was written (a timeout, a reset, an answer cut
  short, garbage): never retried, answered as "may or may not have been stored".
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import httptools
from yarl import URL

from proxy.server.forward import Answer, UpstreamError
from proxy.server.problems import (
    BAD_UPSTREAM_RESPONSE,
    UPSTREAM_DISCONNECTED,
    UPSTREAM_REQUEST_FAILED,
    UPSTREAM_TIMEOUT,
    UPSTREAM_UNAVAILABLE,
    ProxyProblem,
)

# Event answers are a few hundred bytes (a batch's list of ids a few KiB); anything larger
# is not an answer, and each one in flight is held in memory.
MAX_ANSWER_BYTES = 64 * 1024
# An answer head (status line and headers) beyond this is not an event answer either.
MAX_ANSWER_HEAD_BYTES = 16 * 1024

_MAYBE_STORED = "the event may or may not have been stored"


@dataclass(slots=True)
class UpstreamStats:
    """Counters of the event client, for metrics and tests."""

    attempts: int = 0  # requests started (a refused connect that is retried counts twice)
    connections: int = 0  # connections opened


class _Stray(Exception):
    """Bytes after the answer: the connection's framing can no longer be trusted."""


class _Connection(asyncio.Protocol):
    """One upstream connection and the answer being parsed on it."""

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._started = 0.0
        self._budget = 0.0
        # The answer's deadline, and one timer per connection that checks it: re-armed only
        # when it fires during an exchange, instead of a timer made and cancelled for every
        # exchange (a request's costliest single step here).
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._reset_answer()

    def _reset_answer(self) -> None:
        self._status = 0
        self._interim = False
        self._head_bytes = 0
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: the parser knows where it ends
        self._keep_alive = False
        self._got_bytes = False
        self._body: list[bytes] = []
        self._size = 0
        self._content_type: str | None = None
        self._content_encoding: str | None = None
        self._retry_after: str | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self._close()
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BAD_UPSTREAM_RESPONSE, "the upstream switched protocols (101)")
        except httptools.HttpParserError as exc:
            # A callback's own refusal reaches here wrapped by the parser.
            refusal = exc.__context__
            if isinstance(refusal, UpstreamError):
                self._fail(refusal.problem, refusal.detail)
            elif isinstance(refusal, _Stray):
                self._close()
            else:
                self._fail(BAD_UPSTREAM_RESPONSE, f"the upstream's answer is malformed: {exc}")

    def eof_received(self) -> bool:
        self._lost(clean=True)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        # A reset is no end of an answer delimited by the close: what was in flight when
        # it came is lost, so such an answer is cut short, not complete.
        self._lost(clean=exc is None)

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None:
            raise _Stray  # a second answer to one request

    def on_status(self, status: bytes) -> None:
        self._head(len(status))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head(len(name) + len(value))
        if self._headers_done:
            # A chunked answer's trailer (llhttp reports it like the head): its fields must
            # not change what was relayed from the head, such as the encoding or the type.
            return
        lowered = name.lower()
        if lowered == b"content-type":
            self._content_type = value.decode("latin-1")
        elif lowered == b"content-encoding":
            self._content_encoding = value.decode("latin-1")
        elif lowered == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif lowered == b"content-length":
            self._framed = True
            if value.isdigit() and int(value) > MAX_ANSWER_BYTES:
                raise UpstreamError(BAD_UPSTREAM_RESPONSE, "the upstream's answer is too large")
        elif lowered == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status == 101:
            raise UpstreamError(BAD_UPSTREAM_RESPONSE, "the upstream switched protocols (101)")
        self._status = status
        self._interim = 100 <= status < 200
        self._headers_done = True
        self._keep_alive = self._parser.should_keep_alive()
        if status in (204, 304):
            self._framed = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_ANSWER_BYTES:
            raise UpstreamError(BAD_UPSTREAM_RESPONSE, "the upstream's answer is too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._interim:  # 100 Continue, 103 Early Hints: the final answer follows
            self._reset_answer()
            self._got_bytes = True
            return
        self._finish(reusable=self._keep_alive)

    # -- the exchange ----------------------------------------------------------------------

    def start(self, request: bytes, deadline: float, budget: float) -> asyncio.Future[Answer]:
        """Write `request`; its answer (or failure) comes in the returned future, which the
        caller awaits and then hands to `settle`. Not a coroutine: one frame less per event."""
        assert self.transport is not None
        self._budget = budget
        waiter: asyncio.Future[Answer] = self._loop.create_future()
        self._waiter = waiter
        self._started = time.perf_counter()
        self._reset_answer()
        self.transport.write(request)
        self._deadline = deadline
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        return waiter

    def settle(self, waiter: asyncio.Future[Answer]) -> None:
        """After the wait for `waiter` ended, however it ended."""
        if self._waiter is waiter:  # cancelled while waiting: the framing is lost
            self._waiter = None
            self._close()

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._check_deadline)
        self._timer_at = when

    def _check_deadline(self) -> None:
        self._timer = None
        if self._waiter is None or self.closed:
            return  # idle: the next exchange arms it again
        if self._loop.time() >= self._deadline:
            self._timed_out()
        else:
            self._arm(self._deadline)  # a later exchange than the one it was armed for

    def _head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_ANSWER_HEAD_BYTES:
            raise UpstreamError(BAD_UPSTREAM_RESPONSE, "the upstream's answer head is too large")

    def _finish(self, *, reusable: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            self._close()
            return
        waiter.set_result(
            Answer(
                status=self._status,
                body=b"".join(self._body),
                content_type=self._content_type,
                content_encoding=self._content_encoding,
                retry_after=self._retry_after,
                seconds=time.perf_counter() - self._started,
            )
        )
        transport = self.transport
        # An answer that came before the whole request was written (an early 413) leaves
        # request bytes in flight: the connection cannot carry another request.
        if reusable and not self.closed and transport and not transport.get_write_buffer_size():
            self._pool.release(self)
        else:
            self._close()

    def _fail(self, problem: ProxyProblem, detail: str) -> None:
        waiter, self._waiter = self._waiter, None
        self._close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(UpstreamError(problem, detail))

    def _timed_out(self) -> None:
        self._fail(
            UPSTREAM_TIMEOUT,
            f"the upstream did not answer within {self._budget:g} s; {_MAYBE_STORED}",
        )

    def abandon(self, error: UpstreamError) -> None:
        self._fail(error.problem, error.detail)

    def _lost(self, *, clean: bool) -> None:
        if self._waiter is None:
            self._close()
            return
        if clean and self._headers_done and not self._framed and not self._interim:
            self._finish(reusable=False)  # an answer delimited by the connection's close
        elif self._got_bytes:
            self._fail(
                UPSTREAM_DISCONNECTED, f"the upstream's answer was cut short; {_MAYBE_STORED}"
            )
        else:
            self._fail(
                UPSTREAM_DISCONNECTED,
                f"the upstream closed the connection without answering; {_MAYBE_STORED}",
            )

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._pool.forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            if self.transport.get_write_buffer_size():
                # Unsent request bytes: do not wait for a peer that stopped reading.
                self.transport.abort()
            else:
                self.transport.close()


class PoolBusy(Exception):
    """No pooled connection came free in time (or the proxy is shutting down): not sent."""


class UpstreamPool:
    """At most `size` exchanges at once with one upstream origin, over kept-alive connections.

    A request waits for a free slot at most as long as a new connection may take to open;
    each exchange keeps its connection for the next one unless the answer, the upstream or
    a failure says otherwise.
    """

    def __init__(self, origin: str, size: int, *, stats: UpstreamStats | None = None) -> None:
        url = URL(origin)
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise ValueError(f"not an http(s) URL: {origin}")
        self.loop = asyncio.get_running_loop()
        self.origin = origin
        self.host = url.raw_host
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if url.scheme == "https" else None
        )
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = url.explicit_port is None or url.is_default_port()
        self.host_header = (host if default_port else f"{host}:{self.port}").encode("idna")
        self.size = size
        self.stats = stats or UpstreamStats()
        self._busy = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._idle: collections.deque[_Connection] = collections.deque()
        self._all: set[_Connection] = set()
        self._cut: UpstreamError | None = None
        self._retired = False

    # -- slots -----------------------------------------------------------------------------

    async def _take_slot(self, wait: float) -> None:
        if self._cut is not None:
            raise PoolBusy
        if self._busy < self.size and not self._waiters:
            self._busy += 1
            return
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        timer = self.loop.call_later(max(wait, 0.0), _expire, waiter)
        try:
            await waiter  # the slot is handed over with `_busy` unchanged
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._give_slot()  # handed over just as we were cancelled: pass it on
            raise
        finally:
            timer.cancel()

    def _give_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._busy -= 1
        if self._retired and not self._busy:
            self.close()

    # -- connections -----------------------------------------------------------------------

    def forget(self, conn: _Connection) -> None:
        self._all.discard(conn)

    def release(self, conn: _Connection) -> None:
        if self._retired or len(self._idle) >= self.size:
            conn._close()
            return
        self._idle.append(conn)

    def _idle_connection(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()  # the most recently used: least likely to be timed out
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def _connect(self, seconds: float) -> _Connection:
        conn = _Connection(self)
        try:
            async with asyncio.timeout(seconds):
                await self.loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except TimeoutError:
            raise UpstreamError(
                UPSTREAM_UNAVAILABLE, f"no connection to the upstream within {seconds} s"
            ) from None
        except ssl.SSLError as exc:  # deterministic: a retry would fail the same way
            raise UpstreamError(
                UPSTREAM_UNAVAILABLE, f"TLS with the upstream failed: {exc.reason}"
            ) from exc
        self.stats.connections += 1
        self._all.add(conn)
        return conn

    # -- the exchange ----------------------------------------------------------------------

    async def send(self, request: bytes, *, within: float, connect_timeout: float) -> Answer:
        """Send one whole request (head and body); its whole answer must arrive `within`
        seconds, the wait for a connection included.

        Raises PoolBusy when no connection came free within `connect_timeout` (nothing was
        sent) and UpstreamError for every other failure. A connection that cannot be opened
        is tried once more: nothing was sent on it.
        """
        deadline = self.loop.time() + within
        if self._cut is None and self._busy < self.size and not self._waiters:
            self._busy += 1  # a free slot, as `_take_slot` would give it, without awaiting
        else:
            await self._take_slot(min(connect_timeout, within))
        try:
            if self._cut is not None:
                raise self._cut
            for attempt in (1, 2):
                self.stats.attempts += 1
                conn = self._idle_connection()
                if conn is None:
                    try:
                        conn = await self._connect(connect_timeout)
                    except OSError as exc:
                        if attempt == 1:
                            continue
                        raise UpstreamError(
                            UPSTREAM_UNAVAILABLE, f"cannot connect to the upstream: {exc}"
                        ) from exc
                waiter = conn.start(request, deadline, within)
                try:
                    return await waiter
                finally:
                    conn.settle(waiter)
            raise AssertionError("unreachable")
        finally:
            self._give_slot()

    def cut_off(self, error: UpstreamError) -> None:
        """Shutdown: requests waiting for a slot give up (not sent), exchanges still waiting
        for their answer end with `error`."""
        self._cut = error
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolBusy())
        for conn in list(self._all):
            conn.abandon(error)

    def retire(self) -> None:
        """The configuration moved to another upstream: close once the last exchange ends."""
        self._retired = True
        if not self._busy:
            self.close()

    def close(self) -> None:
        """Close every connection (idle ones and any still in an exchange)."""
        for conn in list(self._all):
            conn._close()
        self._all.clear()
        self._idle.clear()


class UpstreamPools:
    """The event pool of each upstream origin in use: a reload that names another upstream
    retires the old pool (it closes once its last exchange ends)."""

    def __init__(self, size: int, stats: UpstreamStats | None = None) -> None:
        self.size = size
        self.stats = stats or UpstreamStats()
        self._pools: dict[str, UpstreamPool] = {}
        self._generation = 0
        self._cut: UpstreamError | None = None

    def get(self, origin: str, generation: int) -> UpstreamPool:
        """The pool for `origin`, as a configuration of `generation` names it."""
        pool = self._pools.get(origin)
        if pool is not None:
            return pool
        pool = UpstreamPool(origin, self.size, stats=self.stats)
        if self._cut is not None:
            pool.cut_off(self._cut)
        if generation >= self._generation:
            self._generation = generation
            for old in self._pools.values():
                old.retire()
            self._pools = {origin: pool}
        else:  # a request still running under a replaced configuration
            pool.retire()
        return pool

    def cut_off(self, error: UpstreamError) -> None:
        self._cut = error
        for pool in self._pools.values():
            pool.cut_off(error)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools = {}


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(PoolBusy())


def origin_and_prefix(url: str) -> tuple[str, bytes]:
    """What a pool connects to (scheme://host:port) and the base path requests go under."""
    base = URL(url.rstrip("/"))
    return str(base.origin()), base.raw_path.rstrip("/").encode()


def request_bytes(
    method: bytes,
    target: bytes,
    host: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes | None = None,
) -> bytes:
    """One HTTP/1.1 request; a body gets a fresh `Content-Length`.

    Raises UpstreamError (never sent) for a header the wire cannot carry.
    """
    return with_body(request_head(method, target, host, headers), body)


def request_head(
    method: bytes, target: bytes, host: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> bytes:
    """A request's line, `Host` and `headers`, each line ended; no framing, no blank line.

    Raises UpstreamError (never sent) for a header the wire cannot carry.
    """
    lines = [method, b" ", target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    return checked_lines(b"".join(lines), len(headers) + 2)


def checked_lines(head: bytes, lines: int) -> bytes:
    """`head` if it holds exactly `lines` CRLF-ended lines and no other CR or LF, else
    UpstreamError (never sent).

    One count over the whole head rather than a test per header: every CR and LF in it
    must be one of the line ends written.
    """
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise UpstreamError(
            UPSTREAM_REQUEST_FAILED,
            "a request header cannot be sent to the upstream; the event was not sent",
        )
    return head


def with_body(head: bytes, body: bytes | None) -> bytes:
    """A request from its head (`request_head`) and body, framed by `Content-Length`."""
    if body is None:
        return head + b"\r\n"
    return b"".join((head, b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body))
