"""Soak: many events through envelope-proxy into a misbehaving upstream; prove none was lost.

Run: `python -m bench.soak` (100 000 events, a few minutes) or `--events 5000
--time-scale 0.1` (seconds). On 127.0.0.1 only: the emulator (`rust-2.19.1`, SQLite store
in a file) runs in this process, `envelope-proxy serve` runs as a child process in front of
it, and `--clients` concurrent producers (`bench/_soak_events.py`) send events of three
shapes, retrying like NoETL workers. Meanwhile the emulator injects faults: a share of 503s
with `Retry-After`, connections dropped after the request was read (alternately stored
first and not), slow answers, and the emulator is stopped and started again on the same
port with the same database once halfway through. An event whose retries all failed is
dispatched again once the emulator is up (as NoETL dispatches a failed command again).

At the end `bench/_soak_verify.py` proves from the store and the clients' logs that nothing
was lost, that duplicates come only from lost answers, and that no id changed; and the
proxy's resident memory after warm-up must not grow by 20 MB or more. One summary line is
printed (events, acked, stored, lost, exhausted, re-dispatched, duplicates, attempts by
outcome, faults, RSS); the exit code is 1 on any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from bench._procs import LOOPBACK, Child, free_port, python_module
from bench._soak_events import ClientLog, run_client
from bench._soak_verify import Proof, prove
from proxy.emulator import create_emulator_app
from proxy.emulator.app import EMULATOR_KEY
from proxy.emulator.faults import FaultConfig

PROFILE = "rust-2.19.1"
VERSION = "3.83.1"
RSS_GROWTH_LIMIT = 20 * 1024 * 1024


@dataclass
class SoakConfig:
    events: int = 100_000
    clients: int = 32
    time_scale: float = 1.0  # scales backoff, slow answers and the restart pause
    # The emulator draws the 503 and the slow answer with one shared rate: `rate_503` of
    # the requests get a 503, and the same share of the others a slow answer.
    rate_503: float = 0.015
    rate_drop: float = 0.005
    slow_seconds: float = 0.2
    phase_seconds: float = 0.5  # fault configuration changes this often
    restart_at: float = 0.5  # share of acknowledged events when the upstream restarts
    timeout: float = 1800.0
    work_dir: Path | None = None


@dataclass
class Summary:
    config: SoakConfig
    proof: Proof
    log: ClientLog
    faults: Counter[str]
    restarts: int
    rss_warm: int
    rss_end: int
    rss_peak: int
    seconds: float
    attempts: Counter[str] = field(default_factory=Counter)

    @property
    def lost(self) -> int:
        """Events of which no copy was stored."""
        return self.proof.events - self.proof.stored_events

    @property
    def ok(self) -> bool:
        return not (self.log.problems or self.proof.violations or self.log.exhausted)

    def line(self) -> str:
        p = self.proof
        rss = (self.rss_end - self.rss_warm) / 2**20
        faults = " ".join(f"{k}={v}" for k, v in sorted(self.faults.items()) if k != "requests")
        outcomes = " ".join(f"{k}={v}" for k, v in self.attempts.most_common())
        return (
            f"soak {'PASS' if self.ok else 'FAIL'}: events={p.events} acked={p.acked} "
            f"stored={p.stored_events} lost={self.lost} exhausted={len(self.log.exhausted)} "
            f"redispatched={self.log.redispatched} "
            f"duplicates={p.duplicates} (marked drops {p.duplicates_from_marked_drops}, "
            f"other lost answers {p.duplicates - p.duplicates_from_marked_drops}) "
            f"violations={sum(p.violations.values())} attempts=[{outcomes}] "
            f"faults=[{faults}] upstream_restarts={self.restarts} "
            f"proxy_rss_growth={rss:+.1f}MB (warm {self.rss_warm / 2**20:.1f}, "
            f"end {self.rss_end / 2**20:.1f}, peak {self.rss_peak / 2**20:.1f}) "
            f"elapsed={self.seconds:.1f}s"
        )


class Upstream:
    """The in-process emulator; stopped and started again on the same port and database."""

    def __init__(self, db_file: Path) -> None:
        self.db_file = db_file
        self.port = 0
        self.runner: web.AppRunner | None = None
        self.faults: Counter[str] = Counter()
        self.config = FaultConfig()
        self.up = asyncio.Event()  # set while the emulator is serving

    async def start(self) -> None:
        app = create_emulator_app(PROFILE, version=VERSION, db_path=str(self.db_file))
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, LOOPBACK, self.port)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        self.configure(self.config)
        self.up.set()

    def configure(self, config: FaultConfig) -> None:
        """Replace the fault configuration, keeping the counts of what was injected."""
        self.config = config
        if self.runner is None:
            return
        emulator = self.runner.app[EMULATOR_KEY]
        self.faults.update(emulator.faults.counters)
        emulator.faults.configure(config)
        emulator.state.store_down = config.store_down

    async def wait_up(self) -> None:
        """Return once the emulator serves (at once, unless it is being restarted)."""
        await self.up.wait()

    async def stop(self) -> None:
        self.up.clear()
        if self.runner is not None:
            runner, self.runner = self.runner, None
            app = runner.app
            await runner.cleanup()
            # Counted after the shutdown: requests still in flight get their faults too.
            self.faults.update(app[EMULATOR_KEY].faults.counters)


def fault_config(cfg: SoakConfig, phase: int) -> FaultConfig:
    return FaultConfig(
        status=503,
        retry_after=1,
        # `rate` is shared by the status and the delay draws; the delay's share follows.
        rate=cfg.rate_503,
        delay_seconds=cfg.slow_seconds * cfg.time_scale,
        drop_after_read=cfg.rate_drop,
        store_before_drop=phase % 2 == 0,
        seed=phase,
    )


async def _chaos(cfg: SoakConfig, upstream: Upstream) -> None:
    """Alternate the fault configuration: drops that store first, drops that do not."""
    phase = 0
    while True:
        upstream.configure(fault_config(cfg, phase))
        phase += 1
        await asyncio.sleep(cfg.phase_seconds)


async def _start_proxy(work: Path, upstream_port: int) -> tuple[Child, int]:
    """`envelope-proxy serve` in front of the upstream; returns once it is ready."""
    port, admin = free_port(), free_port()
    argv = python_module(
        "proxy",
        "serve",
        f"--listen={LOOPBACK}:{port}",
        f"--admin-listen={LOOPBACK}:{admin}",
        f"--upstream=http://{LOOPBACK}:{upstream_port}",
        "--probe-interval=1",
    )
    proxy = Child("proxy", argv, log_dir=work)
    deadline = time.monotonic() + 30
    url = f"http://{LOOPBACK}:{admin}/readyz"
    while True:
        try:
            await asyncio.to_thread(_status, url)
            return proxy, port
        except OSError as exc:
            if proxy.proc.poll() is not None or time.monotonic() > deadline:
                proxy.stop()
                raise RuntimeError(f"proxy never became ready:\n{proxy.log_text()}") from exc
            await asyncio.sleep(0.1)


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as response:
        return int(response.status)


@dataclass
class _Watch:
    """What the watcher saw: the proxy's RSS and the upstream restarts it made."""

    warm: int = 0
    end: int = 0
    peak: int = 0
    restarts: int = 0


async def _watch(
    cfg: SoakConfig, upstream: Upstream, proxy: Child, log: ClientLog, watch: _Watch
) -> None:
    """Restart the upstream once at `restart_at`; sample the proxy's RSS all along."""
    warm_after = max(1, min(cfg.events // 10, 5000))
    restart_after = int(cfg.events * cfg.restart_at)
    while True:
        rss = proxy.rss_bytes()
        watch.peak = max(watch.peak, rss)
        if not watch.warm and log.acked >= warm_after:
            watch.warm = rss
        if not watch.restarts and log.acked >= restart_after:
            await upstream.stop()
            await asyncio.sleep(0.2 * cfg.time_scale)
            await upstream.start()
            watch.restarts += 1
        await asyncio.sleep(0.02)


async def _drive(cfg: SoakConfig, upstream: Upstream, work: Path, log: ClientLog) -> _Watch:
    """Start the proxy, run the clients against it under faults, stop the proxy."""
    watch = _Watch()
    proxy, port = await _start_proxy(work, upstream.port)
    url = f"http://{LOOPBACK}:{port}/api/events"
    background = [
        asyncio.create_task(_chaos(cfg, upstream)),
        asyncio.create_task(_watch(cfg, upstream, proxy, log, watch)),
    ]
    indices = iter(range(cfg.events))
    clients = [
        asyncio.create_task(
            run_client(f"soak-w{n}", url, indices, log, cfg.time_scale, upstream.wait_up)
        )
        for n in range(cfg.clients)
    ]
    try:
        done, pending = await asyncio.wait(clients, timeout=cfg.timeout)
        if pending:
            log.problems.append(f"timed out after {cfg.timeout:.0f} s")
        for task in done:
            if task.exception() is not None:
                log.problems.append(f"a client failed: {task.exception()!r}")
        watch.end = proxy.rss_bytes()
    finally:
        for task in [*clients, *background]:
            task.cancel()
        await asyncio.gather(*clients, *background, return_exceptions=True)
        code = await asyncio.to_thread(proxy.stop)
        if code != 0:
            log.problems.append(f"proxy exited with {code}: {proxy.log_text()[-500:]}")
    return watch


async def run(cfg: SoakConfig) -> Summary:
    """Run the soak and return its summary (see `Summary.ok`); everything is stopped after."""
    started = time.monotonic()
    log = ClientLog()
    with tempfile.TemporaryDirectory(prefix="envelope-proxy-soak-") as tmp:
        work = cfg.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        db_file = work / "upstream.db"
        db_file.unlink(missing_ok=True)
        upstream = Upstream(db_file)
        await upstream.start()
        try:
            watch = await _drive(cfg, upstream, work, log)
        finally:
            await upstream.stop()
        proof = prove(db_file, log, cfg.events)
    if watch.restarts != 1:
        log.problems.append("the upstream was not restarted during the run")
    if watch.end - watch.warm >= RSS_GROWTH_LIMIT:
        log.problems.append("proxy memory grew by 20 MB or more after warm-up")
    return Summary(
        config=cfg,
        proof=proof,
        log=log,
        faults=upstream.faults,
        restarts=watch.restarts,
        rss_warm=watch.warm,
        rss_end=watch.end,
        rss_peak=watch.peak,
        seconds=time.monotonic() - started,
        attempts=Counter(a.detail for tries in log.attempts.values() for a in tries),
    )


def report(summary: Summary) -> str:
    """The summary line, then one line per violation kind, problem and exhausted event."""
    lines = [summary.line()]
    lines += [f"  violation {kind}: {n}" for kind, n in summary.proof.violations.items()]
    lines += [f"    e.g. {example}" for example in summary.proof.examples]
    lines += [f"  problem: {problem}" for problem in summary.log.problems]
    for index in summary.log.exhausted[:20]:
        tries = ", ".join(a.detail for a in summary.log.attempts[index])
        lines.append(f"  exhausted soak-{index}: every attempt failed ({tries})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    defaults = SoakConfig()
    parser.add_argument("--events", type=int, default=defaults.events)
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument(
        "--time-scale",
        type=float,
        default=defaults.time_scale,
        help="scale retry backoff, slow answers and the restart pause (e.g. 0.1 for tests)",
    )
    parser.add_argument(
        "--rate-503", type=float, default=defaults.rate_503, help="also the slow-answer share"
    )
    parser.add_argument("--rate-drop", type=float, default=defaults.rate_drop)
    parser.add_argument("--timeout", type=float, default=defaults.timeout, help="seconds")
    parser.add_argument("--work-dir", type=Path, help="keep the database and proxy log here")
    args = parser.parse_args(argv)
    cfg = SoakConfig(
        events=args.events,
        clients=args.clients,
        time_scale=args.time_scale,
        rate_503=args.rate_503,
        rate_drop=args.rate_drop,
        timeout=args.timeout,
        work_dir=args.work_dir,
    )
    summary = asyncio.run(run(cfg))
    print(report(summary), flush=True)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
