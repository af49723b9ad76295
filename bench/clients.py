"""The event path's upstream client next to the candidates it was chosen over, side by side.

Run: `python -m bench.clients` (about 3 minutes; `--quick` about 1). The candidates besides
`UpstreamPool` (`proxy/server/upstream.py`, what `serve` forwards events over) come with
the `bench` extra: `pip install -c requirements.lock -e '.[bench]'`.

- `UpstreamPool`: `request_bytes(...)` built per request, as `serve` does, then
  `pool.send(request, within=, connect_timeout=)`;
- `aiohttp`: one shared `ClientSession` as the event path had it before `UpstreamPool`
  (`TCPConnector(limit=N, limit_per_host=N)`, `auto_decompress=False`, `DummyCookieJar`,
  a `ClientTimeout` per request, no redirects, the answer's `Content-Length` checked
  against the cap before `read()`);
- `aiosonic`: `HTTPClient` over a `TCPConnector` with a pool of N connections, never
  recycled after a request count (its default is 1 000, which would add reconnects);
- `httpcore`: `AsyncConnectionPool(max_connections=N)`, HTTP/1.1, on its anyio backend
  (the one it picks under asyncio);
- `pyreqwest`: a `Client` (Rust reqwest/hyper on a Tokio runtime thread) with at most N
  connections, no redirects, no transparent decompression (the proxy relays answers
  as they are).

Every client sends the same request: `POST /api/events` with the ExecutorEvent body that
`bench.event_path` sends (compact `executor_event__command_completed_full.json`) and the
same four headers, to a stub upstream that answers a fixed JSON; every answer's status and
body are checked. The stub is nginx (`worker_processes 1`, as `bench.event_path` starts
it) when installed, else `bench/_stub_upstream.py` (raw asyncio protocols, no parser);
the report shows how busy the stub's CPU was, to show it was never the limit.

Each measurement runs in a fresh process (`python -m bench.clients --worker CLIENT`), on
uvloop as `serve` does, pinned to CPU 0 (the stub gets CPU 1). A process of its own per
client and round, rather than all clients in one process, because what one client leaves
behind would be charged to the next: pyreqwest's Tokio thread, connections still closing,
garbage, a warmer or colder allocator. The CPU per request is `time.process_time()` of
that process over the measured window, so pyreqwest's runtime thread counts too. Each
worker measures, each with a new client and a short warm-up that opens its connections:

- c1: `--requests` sequential requests, one in flight: latency p50/p99 (µs);
- c32 and c64: 32 and 64 tasks sending back to back over a pool of 32 and 64
  connections for `--seconds`: req/s and CPU µs per request.

Rounds rotate the order of the clients (the machine is shared and noisy). The report gives
medians over the rounds; for req/s also the best round (other work on the machine only
slows a round down); the worker's CPU share at c64 (`busy`: well below 100 % it waited, for
answers or for its CPU); and the ratios to `UpstreamPool`: the median of the same-round
ratios for latency and CPU, best against best for req/s. CPU per request is the figure
that carries over from one run to the next.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from bench._procs import LOOPBACK, Child, children, cpu_seconds, descendants, free_port
from bench._procs import python_module as module_argv
from bench._senders import LIBRARIES, SENDERS, Sender
from bench.event_path import ANSWER, sample_body, start_nginx

CLIENTS = ("UpstreamPool", "aiohttp", "aiosonic", "httpcore", "pyreqwest")
BASE = CLIENTS[0]
CONCURRENCY = (32, 64)
EXPECTED = ANSWER.encode()
WARMUP_SECONDS = 0.3
WARMUP_REQUESTS = 200
SAMPLES = Path(__file__).parents[1] / "spec/samples"


# -- one worker: one client, every phase ---------------------------------------------------


@dataclass
class Tally:
    ok: int = 0
    bad: int = 0
    first_error: str | None = None

    def check(self, status: int, body: bytes) -> None:
        if status == 200 and body == EXPECTED:
            self.ok += 1
        else:
            self.failed(f"answer {status} {body[:80]!r}")

    def failed(self, what: str) -> None:
        self.bad += 1
        if self.first_error is None:
            self.first_error = what


@dataclass
class Phase:
    concurrency: int
    requests: int
    seconds: float
    cpu_seconds: float
    stub_cpu_seconds: float
    p50_us: float | None = None
    p99_us: float | None = None

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds * 1e6 / self.requests if self.requests else 0.0

    @property
    def busy(self) -> float:
        """The share of one CPU the client process used: below ~95 % at c32/c64 it was
        waiting (for the stub, or for a CPU that other work on the machine held)."""
        return self.cpu_seconds / self.seconds if self.seconds else 0.0


@dataclass
class Result:
    client: str
    versions: dict[str, str]
    phases: dict[int, Phase] = field(default_factory=dict)
    tally: Tally = field(default_factory=Tally)


async def _send(sender: Sender, tally: Tally) -> None:
    try:
        status, body = await sender.post()
    except Exception as exc:  # counted and reported: every answer must arrive
        tally.failed(f"{type(exc).__name__}: {exc}")
    else:
        tally.check(status, body)


async def _sequential(sender: Sender, count: int, tally: Tally) -> list[float]:
    latencies = []
    clock = time.perf_counter
    for _ in range(count):
        started = clock()
        await _send(sender, tally)
        latencies.append(clock() - started)
    return latencies


async def _concurrent(sender: Sender, tasks: int, seconds: float, tally: Tally) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds

    async def loop_until() -> None:
        while loop.time() < until:
            await _send(sender, tally)

    await asyncio.gather(*(loop_until() for _ in range(tasks)))


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class _StubClock:
    """CPU seconds of the stub upstream's processes (read outside the measured windows)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = [p for pid in pids for p in (pid, *descendants(pid))]

    def seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self._pids)


async def _measure(args: argparse.Namespace) -> Result:
    name = args.worker
    body = sample_body(args.samples)
    result = Result(name, {d: _version(d) for d in LIBRARIES[name]})
    stub = _StubClock(args.stub_pids)
    for concurrency in (1, *CONCURRENCY):
        sender = SENDERS[name](args.upstream, concurrency, body)
        try:
            warm = Tally()
            if concurrency == 1:
                await _sequential(sender, WARMUP_REQUESTS, warm)
            else:
                await _concurrent(sender, concurrency, WARMUP_SECONDS, warm)
            if warm.bad:
                result.tally.failed(f"warm-up: {warm.first_error}")
            gc.collect()
            before = result.tally.ok + result.tally.bad
            stub_before, cpu_before, started = (
                stub.seconds(),
                time.process_time(),
                time.perf_counter(),
            )
            if concurrency == 1:
                latencies = await _sequential(sender, args.requests, result.tally)
            else:
                await _concurrent(sender, concurrency, args.seconds, result.tally)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_before
            phase = Phase(
                concurrency,
                result.tally.ok + result.tally.bad - before,
                wall,
                cpu,
                stub.seconds() - stub_before,
            )
            if concurrency == 1:
                phase.p50_us = _percentile(latencies, 0.50) * 1e6
                phase.p99_us = _percentile(latencies, 0.99) * 1e6
            result.phases[concurrency] = phase
        finally:
            await sender.close()
    return result


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _worker(args: argparse.Namespace) -> int:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(_measure(args))
    print(json.dumps(_to_json(result)), flush=True)
    return 0


def _to_json(result: Result) -> dict[str, Any]:
    return {
        "client": result.client,
        "versions": result.versions,
        "tally": asdict(result.tally),
        "phases": {str(c): asdict(p) for c, p in result.phases.items()},
    }


def _from_json(data: dict[str, Any]) -> Result:
    return Result(
        data["client"],
        data["versions"],
        {int(c): Phase(**p) for c, p in data["phases"].items()},
        Tally(**data["tally"]),
    )


# -- the run: rounds of workers, the report ------------------------------------------------


def _run_worker(
    args: argparse.Namespace,
    client: str,
    upstream: str,
    stub_pids: Sequence[int],
    cpus: Sequence[int] | None,
) -> Result:
    argv = module_argv(
        "bench.clients",
        f"--worker={client}",
        f"--upstream={upstream}",
        f"--requests={args.requests}",
        f"--seconds={args.seconds}",
        f"--samples={args.samples}",
        f"--stub-pids={','.join(map(str, stub_pids))}",
    )
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=60 + args.requests * 0.01 + 4 * args.seconds,
        preexec_fn=(lambda: os.sched_setaffinity(0, set(cpus))) if cpus else None,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{client} worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return _from_json(json.loads(done.stdout.strip().splitlines()[-1]))


def _start_stub(
    args: argparse.Namespace, work: Path, cpus: Sequence[int] | None, started: list[Child]
) -> tuple[str, int, str]:
    """(origin, pid, what it is): nginx when found, else the Python stub."""
    nginx = args.nginx if args.stub == "nginx" else None
    if nginx:
        port = start_nginx(nginx, work, cpus, started)
        version = subprocess.run(
            [nginx, "-v"], capture_output=True, text=True, check=False
        ).stderr.strip()
        return f"http://{LOOPBACK}:{port}", started[-1].pid, version or "nginx"
    port = free_port()
    stub = Child(
        "stub", module_argv("bench._stub_upstream", f"--port={port}"), log_dir=work, cpus=cpus
    )
    started.append(stub)
    stub.wait_for_port(port)
    return f"http://{LOOPBACK}:{port}", stub.pid, "bench/_stub_upstream.py (uvloop, raw protocol)"


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(rounds: list[dict[str, Result]], clients: Sequence[str]) -> str:
    """Medians over the rounds; for req/s also the best round, since other work on the
    machine only ever slows a round down. Ratios to UpstreamPool: the median of the
    same-round ratios for p50 and CPU, best against best for req/s."""
    lines = [
        "| client | p50 c1 µs | p99 c1 µs | req/s c32 (best) | req/s c64 (best) "
        "| CPU µs/req c1 / c32 / c64 | busy c64 "
        "| vs UpstreamPool: p50 c1 · CPU c64 · best req/s c64 |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def values(client: str, concurrency: int, what: str) -> list[float]:
        return [float(getattr(r[client].phases[concurrency], what)) for r in rounds]

    def same_round(client: str, concurrency: int, what: str) -> float:
        pairs = zip(values(client, concurrency, what), values(BASE, concurrency, what), strict=True)
        return _median([value / base for value, base in pairs if base])

    for client in clients:

        def med(concurrency: int, what: str, client: str = client) -> float:
            return _median(values(client, concurrency, what))

        def rate(concurrency: int, client: str = client) -> str:
            found = values(client, concurrency, "requests_per_second")
            return f"{_median(found):,.0f} ({max(found):,.0f})"

        ratios = "n/a"
        if BASE in clients:
            best = max(values(client, 64, "requests_per_second")) / max(
                values(BASE, 64, "requests_per_second")
            )
            ratios = (
                f"{same_round(client, 1, 'p50_us'):.2f}x · "
                f"{same_round(client, 64, 'cpu_us_per_request'):.2f}x · {best:.2f}x"
            )
        cpu = " / ".join(f"{med(c, 'cpu_us_per_request'):,.0f}" for c in (1, *CONCURRENCY))
        lines.append(
            f"| {client} | {med(1, 'p50_us'):,.0f} | {med(1, 'p99_us'):,.0f} "
            f"| {rate(32)} | {rate(64)} | {cpu} | {med(64, 'busy'):.0%} | {ratios} |"
        )
    return "\n".join(lines)


def summary(rounds: list[dict[str, Result]], clients: Sequence[str]) -> list[str]:
    lines = []
    for client in clients:
        results = [r[client] for r in rounds]
        ok = sum(r.tally.ok for r in results)
        bad = sum(r.tally.bad for r in results)
        versions = ", ".join(f"{k} {v}" for k, v in results[0].versions.items())
        error = next((r.tally.first_error for r in results if r.tally.first_error), None)
        lines.append(
            f"- {client} ({versions}): {ok:,} answers checked, {bad} wrong or missing"
            + (f" (first: {error})" if error else "")
        )
    busy = [
        p.stub_cpu_seconds / p.seconds
        for r in rounds
        for result in r.values()
        for c, p in result.phases.items()
        if c > 1 and p.seconds
    ]
    if busy:
        lines.append(f"- stub upstream CPU busy at c32/c64: at most {max(busy):.0%} of its core")
    return lines


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.clients",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds, shorter runs (~1 min)")
    parser.add_argument("--rounds", type=int, help="default 5 (one per client order), quick 2")
    parser.add_argument("--requests", type=int, help="c1 requests; default 2000, quick 1000")
    parser.add_argument("--seconds", type=float, help="each c32/c64 run; default 1.5, quick 1")
    parser.add_argument(
        "--clients", default=",".join(CLIENTS), help=f"comma-separated, of {', '.join(CLIENTS)}"
    )
    parser.add_argument(
        "--stub",
        choices=("nginx", "python"),
        default="nginx",
        help="the stub upstream; nginx falls back to python when not installed",
    )
    parser.add_argument("--nginx", default=shutil.which("nginx") or shutil.which("/usr/sbin/nginx"))
    parser.add_argument("--samples", type=Path, default=SAMPLES)
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--worker", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument(
        "--stub-pids",
        type=lambda text: [int(p) for p in text.split(",") if p],
        default=[],
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.requests = args.requests or (1000 if args.quick else 2000)
    args.seconds = args.seconds or (1.0 if args.quick else 1.5)
    if not args.samples.is_dir():
        args.samples = Path(__file__).parents[2] / "shared/spec/samples"
    chosen = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = set(chosen) - set(CLIENTS)
    if unknown or not chosen:
        parser.error(f"unknown clients: {', '.join(sorted(unknown)) or '(none given)'}")
    args.clients = chosen
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker:
        return _worker(args)
    cpus = sorted(os.sched_getaffinity(0))
    pinned = len(cpus) >= 2 and not args.no_pin
    client_cpus = (cpus[0],) if pinned else None
    stub_cpus = (cpus[1],) if pinned else None
    if args.stub == "nginx" and not args.nginx:
        print("nginx is not installed: the stub upstream is bench/_stub_upstream.py", flush=True)
        args.stub = "python"
    clients: list[str] = args.clients
    started_at = datetime.now(UTC)
    with (
        tempfile.TemporaryDirectory(prefix="bench-clients-") as tmp,
        children(Path(tmp)) as started,
    ):
        upstream, stub_pid, stub_name = _start_stub(args, Path(tmp), stub_cpus, started)
        rounds: list[dict[str, Result]] = []
        for number in range(args.rounds):
            shift = number % len(clients)
            order = clients[shift:] + clients[:shift]
            results: dict[str, Result] = {}
            for client in order:
                result = _run_worker(args, client, upstream, [stub_pid], client_cpus)
                results[client] = result
                c1 = result.phases[1]
                print(
                    f"round {number + 1} {client}: c1 p50 {c1.p50_us:.0f}µs p99 {c1.p99_us:.0f}µs, "
                    + ", ".join(
                        f"c{c} {result.phases[c].requests_per_second:,.0f}/s "
                        f"cpu {result.phases[c].cpu_us_per_request:.0f}µs"
                        for c in CONCURRENCY
                    )
                    + (f", {result.tally.bad} wrong" if result.tally.bad else ""),
                    flush=True,
                )
            rounds.append(results)
    print()
    print(
        f"{started_at:%Y-%m-%d}, nproc {os.cpu_count()}, {platform.machine()}, "
        f"Python {platform.python_version()}, uvloop {importlib.metadata.version('uvloop')}, "
        f"stub: {stub_name}; {args.rounds} rounds, c1 {args.requests} requests, "
        f"c32/c64 {args.seconds:g} s each"
    )
    print(report(rounds, clients))
    print("\n".join(summary(rounds, clients)))
    if args.json:
        raw = [{c: _to_json(r) for c, r in rnd.items()} for rnd in rounds]
        args.json.write_text(json.dumps(raw, indent=1))
    wrong = sum(r.tally.bad for rnd in rounds for r in rnd.values())
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
