"""A closed-loop HTTP/1.1 load generator on raw asyncio protocols, run in its own process.

`python -m bench._loadgen --port P --path /api/events --body-file F --connections N
--warmup S --duration S` keeps N keep-alive connections busy, each sending the next request
as soon as the previous answer is complete. It prints `measuring` when the warm-up is over
(the caller samples the server's CPU time then), and one JSON line at the end: requests and
statuses counted inside the measured window, requests/s and latency percentiles in µs.

Raw protocols (no HTTP client library) keep the generator's own cost near 10 µs a request,
so on a small machine it takes as little CPU as possible from the server it measures.
Answers must carry `Content-Length` (aiohttp's and the emulator's do).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class _Run:
    """Shared state of all connections: the phase, the request bytes and the results."""

    def __init__(self, request: bytes, port: int) -> None:
        self.request = request
        self.port = port
        self.measuring = False
        self.running = True
        self.latencies_ns: list[int] = []
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.reconnects = 0


class _Connection(asyncio.Protocol):
    def __init__(self, run: _Run, closed: asyncio.Future[None]) -> None:
        self.run = run
        self.closed = closed
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.need = -1
        self.status = 0
        self.started = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.buffer.clear()
        self.need = -1
        self.started = time.perf_counter_ns()
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            match = _CONTENT_LENGTH.search(head)
            if match is None:
                self.run.errors["no content-length"] += 1
                assert self.transport is not None
                self.transport.close()
                return
            self.status = int(head[9:12])
            self.need = end + 4 + int(match.group(1))
        if len(self.buffer) < self.need:
            return
        run = self.run
        if run.measuring:
            run.latencies_ns.append(time.perf_counter_ns() - self.started)
            run.statuses[self.status] += 1
        if run.running:
            self._send()
        elif self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.run.running and self.run.measuring:
            self.run.errors["connection lost" if self.need < 0 else "closed mid-answer"] += 1
        if not self.closed.done():
            self.closed.set_result(None)


async def _connection_loop(run: _Run) -> None:
    loop = asyncio.get_running_loop()
    while run.running:
        closed: asyncio.Future[None] = loop.create_future()
        try:
            await loop.create_connection(
                functools.partial(_Connection, run, closed), "127.0.0.1", run.port
            )
        except OSError as exc:
            run.errors[f"connect: {exc.__class__.__name__}"] += 1
            await asyncio.sleep(0.05)
            continue
        await closed
        run.reconnects += 1


def _percentile(ordered: list[int], share: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, round(share * (len(ordered) - 1)))
    return ordered[index] / 1000.0


async def measure(
    request: bytes, port: int, connections: int, warmup: float, duration: float
) -> dict[str, object]:
    run = _Run(request, port)
    tasks = [asyncio.create_task(_connection_loop(run)) for _ in range(connections)]
    await asyncio.sleep(warmup)
    print("measuring", flush=True)
    run.measuring = True
    started = time.perf_counter()
    await asyncio.sleep(duration)
    elapsed = time.perf_counter() - started
    run.measuring = False
    run.running = False
    # Give connections a moment to finish their last answer, then stop them.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5.0)
    for task in tasks:
        task.cancel()
    ordered = sorted(run.latencies_ns)
    return {
        "requests": len(ordered),
        "seconds": elapsed,
        "rps": len(ordered) / elapsed,
        "p50_us": _percentile(ordered, 0.50),
        "p90_us": _percentile(ordered, 0.90),
        "p99_us": _percentile(ordered, 0.99),
        "max_us": _percentile(ordered, 1.0),
        "statuses": {str(k): v for k, v in sorted(run.statuses.items())},
        "errors": dict(run.errors),
        "reconnects": run.reconnects,
    }


def build_request(path: str, port: int, body: bytes, extra_headers: dict[str, str]) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "User-Agent: envelope-proxy-bench",
        *(f"{name}: {value}" for name, value in extra_headers.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


def _loop_runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/api/events")
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args(argv)
    body = args.body_file.read_bytes()
    request = build_request(args.path, args.port, body, {})
    with _loop_runner() as runner:
        result = runner.run(
            measure(request, args.port, args.connections, args.warmup, args.duration)
        )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
