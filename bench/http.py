"""What envelope-proxy costs over HTTP, side by side with a naive aiohttp pass-through.

Run: `python -m bench.http` (about 8 minutes), `python -m bench.http --quick` (about 2).
On 127.0.0.1 only, it starts the emulator in fast mode (`envelope-proxy upstream --emulate
rust-2.19.1 --fast`) as the upstream, then, behind it, the naive pass-through of
`bench/naive_proxy.py` and envelope-proxy (`envelope-proxy serve`) with tracing off, with
tracing on (100 % sampling, OTLP/HTTP to a loopback sink) and with `--workers 2`. For ~1 KB
envelopes of each shape and for a 64 KB and a 1 MB context it measures, with the raw-socket
load generator of `bench/_loadgen.py` in its own process: requests/s and p50/p99 latency at
saturation (`--connections`, default 32) and at one connection, and the server process's
CPU µs per request from /proc; each as a ratio to the naive pass-through of the same run.

The direct and naive runs send the body envelope-proxy would send upstream (converted to
`executor_event`), so the upstream does the same work in every configuration.

CPUs: the server under test gets CPU 0 to itself; the upstream, the trace sink and the load
generator share CPU 1 (for the direct runs the load generator takes CPU 0, where no proxy
is busy). `--workers 2` is started on both CPUs. Every run is bounded in time, and every
process is stopped on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import _profile, _report
from bench._procs import (
    LOOPBACK,
    Child,
    children,
    cpu_count,
    free_port,
    python_module,
)
from bench.engine import bodies
from proxy.envelope import Engine, load_rules

PROFILE = "rust-2.19.1"
TARGET = "executor_event"  # what envelope-proxy sends to a rust-2.19.1 upstream


@dataclass
class Body:
    name: str
    path: str
    original: bytes  # what producers send envelope-proxy
    converted: bytes  # what envelope-proxy sends upstream (sent as is by direct and naive)


@dataclass
class Server:
    """One configuration under test: where the load goes and which process to measure."""

    name: str
    port: int
    process: Child | None  # None: nothing extra (direct)
    converted: bool  # send the converted body (direct, naive) or the original one
    cpus: tuple[int, ...] | None
    loadgen_cpus: tuple[int, ...] | None


@dataclass
class Measurement:
    server: str
    body: str
    connections: int
    result: dict[str, Any]
    cpu_us_per_request: float | None
    cpu_busy: float | None  # share of one CPU the server used while measured
    round: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _one_megabyte() -> bytes:
    """A canonical event of at most 1 000 000 bytes, under aiohttp's default 1 MiB limit
    (which the naive pass-through keeps)."""
    size = 1_000_000
    body = bodies(size)["executor_event"]
    while len(body) > 1_000_000:
        size = size * 1_000_000 // len(body) - 500
        body = bodies(size)["executor_event"]
    return body


def make_bodies(selected: list[str] | None) -> list[Body]:
    engine = Engine(load_rules())
    small = bodies(800)
    chosen: list[tuple[str, bytes]] = [(f"{shape} 1KB", body) for shape, body in small.items()]
    chosen.append(("executor_event 64KB", bodies(64 * 1024)["executor_event"]))
    chosen.append(("executor_event 1MB", _one_megabyte()))
    out = []
    for name, body in chosen:
        if selected and not any(sel in name for sel in selected):
            continue
        batch = name.startswith("batch")
        conv = (engine.convert_batch if batch else engine.convert_event)(body, TARGET)
        path = "/api/events/batch" if batch else "/api/events"
        out.append(Body(name, path, body, conv.body))
    return out


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _wait_ready(admin_port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _get_json(f"http://{LOOPBACK}:{admin_port}/readyz")["status"] == "ready":
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"proxy with admin port {admin_port} never became ready")


class Bench:
    """Starts the servers once, then runs every measurement against them."""

    def __init__(self, args: argparse.Namespace, log_dir: Path, started: list[Child]):
        self.args = args
        self.log_dir = log_dir
        self.started = started
        cpus = sorted(os.sched_getaffinity(0))
        self.pinned = len(cpus) >= 2 and not args.no_pin
        self.server_cpu = (cpus[0],) if self.pinned else None
        self.other_cpu = (cpus[1],) if self.pinned else None
        self.all_cpus = tuple(cpus) if self.pinned else None
        self.servers: list[Server] = []
        self.admin_ports: dict[str, int] = {}
        self.sink_port = 0

    def _start(self, name: str, argv: list[str], cpus: tuple[int, ...] | None, **env: str) -> Child:
        child = Child(name, argv, log_dir=self.log_dir, cpus=cpus, env=env)
        self.started.append(child)
        return child

    def _proxy(
        self, name: str, upstream: int, cpus: tuple[int, ...] | None, *extra: str, **env: str
    ) -> Server:
        port, admin = free_port(), free_port()
        argv = python_module(
            "proxy",
            "serve",
            f"--listen={LOOPBACK}:{port}",
            f"--admin-listen={LOOPBACK}:{admin}",
            f"--upstream=http://{LOOPBACK}:{upstream}",
            *extra,
        )
        child = self._start(name, argv, cpus, **env)
        child.wait_for_port(port)
        _wait_ready(admin)
        self.admin_ports[name] = admin
        return Server(name, port, child, False, cpus, self.other_cpu)

    def start_servers(self) -> None:
        args = self.args
        upstream = self._start(
            "upstream",
            python_module(
                "proxy", "upstream", "--emulate", PROFILE, "--fast", f"--listen={LOOPBACK}:0"
            ),
            self.other_cpu,
        )
        up_port = upstream.wait_for_url_port()
        self.servers.append(Server("direct", up_port, None, True, None, self.server_cpu))

        naive_port = free_port()
        naive = self._start(
            "naive",
            python_module(
                "bench.naive_proxy",
                f"--port={naive_port}",
                f"--upstream=http://{LOOPBACK}:{up_port}",
            ),
            self.server_cpu,
        )
        naive.wait_for_port(naive_port)
        self.servers.append(
            Server("naive", naive_port, naive, True, self.server_cpu, self.other_cpu)
        )
        if not args.no_naive_uvloop:
            port = free_port()
            child = self._start(
                "naive-uvloop",
                python_module(
                    "bench.naive_proxy",
                    f"--port={port}",
                    f"--upstream=http://{LOOPBACK}:{up_port}",
                    "--uvloop",
                ),
                self.server_cpu,
            )
            child.wait_for_port(port)
            self.servers.append(
                Server("naive-uvloop", port, child, True, self.server_cpu, self.other_cpu)
            )

        self.servers.append(self._proxy("proxy", up_port, self.server_cpu))

        self.sink_port = free_port()
        sink = self._start(
            "otlp-sink",
            python_module("bench._otlp_sink", f"--port={self.sink_port}"),
            self.other_cpu,
        )
        sink.wait_for_port(self.sink_port)
        self.servers.append(
            self._proxy(
                "proxy+trace",
                up_port,
                self.server_cpu,
                ENVELOPE_PROXY_TRACING__OTLP_ENDPOINT=f"http://{LOOPBACK}:{self.sink_port}",
                OTEL_TRACES_SAMPLER="always_on",
            )
        )
        if not args.no_workers:
            server = self._proxy("proxy-w2", up_port, self.all_cpus, "--workers=2")
            assert server.process is not None
            deadline = time.monotonic() + 30
            while server.process.log_text().count("envelope-proxy listening on") < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError("the second worker never started listening")
                time.sleep(0.1)
            self.servers.append(server)

    def measure(self, server: Server, body: Body, connections: int, rnd: int) -> Measurement:
        payload = body.converted if server.converted else body.original
        body_file = self.log_dir / f"body-{server.converted}-{body.name.replace(' ', '_')}.json"
        body_file.write_bytes(payload)
        argv = python_module(
            "bench._loadgen",
            f"--port={server.port}",
            f"--path={body.path}",
            f"--body-file={body_file}",
            f"--connections={connections}",
            f"--warmup={self.args.warmup}",
            f"--duration={self.args.duration}",
        )
        loadgen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            preexec_fn=(
                (lambda: os.sched_setaffinity(0, set(server.loadgen_cpus or ())))
                if server.loadgen_cpus
                else None
            ),
        )
        assert loadgen.stdout is not None
        process = server.process
        try:
            line = loadgen.stdout.readline()
            if line.strip() != b"measuring":
                raise RuntimeError(f"load generator said {line!r}")
            cpu_before = process.cpu_seconds() if process else 0.0
            wall_before = time.monotonic()
            line = loadgen.stdout.readline()
            cpu_after = process.cpu_seconds() if process else 0.0
            wall = time.monotonic() - wall_before
            loadgen.wait(30)
        finally:
            if loadgen.poll() is None:
                loadgen.kill()
                loadgen.wait()
        result = json.loads(line)
        requests = int(result["requests"])
        cpu = cpu_after - cpu_before
        return Measurement(
            server=server.name,
            body=body.name,
            connections=connections,
            result=result,
            cpu_us_per_request=(cpu / requests * 1e6) if process and requests else None,
            cpu_busy=(cpu / wall) if process and wall > 0 else None,
            round=rnd,
        )

    def profile(self, body: Body, name: str) -> str:
        """Saturate server `name` with `body` while py-spy records it; the top entries."""
        server = next((s for s in self.servers if s.name == name), None)
        if server is None or server.process is None:
            raise SystemExit(f"--profile: no server process named {name!r}")
        raw = self.log_dir / "profile.raw"
        recorder = _profile.record(server.process.pid, self.args.duration, raw)
        m = self.measure(server, body, self.args.connections, 0)
        recorder.wait(self.args.duration + 30)
        _report.progress(m)
        return f"profile of {name}, {body.name}, {m.connections} connections\n" + (
            _profile.summary(raw)
        )

    def run(self, all_bodies: list[Body]) -> list[Measurement]:
        results: list[Measurement] = []
        for rnd in range(self.args.repeat):
            for body in all_bodies:
                for connections in (self.args.connections, 1):
                    # Interleaved per body and mode, so all servers see the same machine load.
                    for server in self.servers:
                        m = self.measure(server, body, connections, rnd)
                        results.append(m)
                        _report.progress(m)
        return results

    def span_export(self) -> dict[str, int] | None:
        """Spans the sink received against twice the requests the traced proxy answered."""
        traced = next((s for s in self.servers if s.name == "proxy+trace"), None)
        if traced is None or traced.process is None:
            return None
        metrics = urllib.request.urlopen(
            f"http://{LOOPBACK}:{self.admin_ports['proxy+trace']}/metrics", timeout=5
        ).read()
        answered = _report.metric_sum(metrics.decode(), "envelope_proxy_events_total")
        traced.process.stop()  # shutdown flushes the spans still queued
        stats = _get_json(f"http://{LOOPBACK}:{self.sink_port}/stats")
        return {"requests": int(answered), "spans": int(stats["spans"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run: 1 s per measurement")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--connections", type=int, default=32, help="connections at saturation")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over everything")
    parser.add_argument("--bodies", nargs="*", help="only bodies whose name contains one of these")
    parser.add_argument("--no-workers", action="store_true", help="skip --workers 2")
    parser.add_argument("--no-naive-uvloop", action="store_true", help="skip naive on uvloop")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", type=Path, help="write every measurement to this file")
    parser.add_argument(
        "--profile",
        metavar="SERVER",
        help="instead of the tables: profile SERVER (e.g. proxy) with py-spy under load",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 1.0, 0.3
    all_bodies = make_bodies(args.bodies)
    with (
        tempfile.TemporaryDirectory(prefix="envelope-proxy-bench-") as tmp,
        children(Path(tmp)) as started,
    ):
        bench = Bench(args, Path(tmp), started)
        bench.start_servers()
        if args.profile:
            print(bench.profile(all_bodies[0], args.profile), flush=True)
            return 0
        _report.header(args, bench.pinned, cpu_count(), bench.server_cpu, bench.other_cpu)
        results = bench.run(all_bodies)
        spans = bench.span_export()
    _report.tables(results, [b.name for b in all_bodies], args.connections)
    ok = _report.floors(results, args.connections, spans)
    if args.json:
        args.json.write_text(
            json.dumps([m.__dict__ for m in results] + [{"spans": spans}], indent=1)
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
