"""The event path's cost, side by side in one run: naive pass-through, `serve`, `serve` traced.

Run: `python -m bench.event_path` (about 4 minutes; `--rounds 1` about 1.5). It needs nginx
(Debian `nginx-light`) and wrk (Debian `wrk`): nginx is the stub upstream, so the upstream
is never the limit, and wrk the load generator.

On 127.0.0.1 only it starts:

- nginx answering `POST /api/events` with a fixed `{"status":"ok","event_id":...}` and
  `GET /api/health` with release 2.19.1 (so `serve` forwards the canonical target);
- `bench/naive_proxy.py`: aiohttp server + one shared `ClientSession`, default settings;
- `bench/pooled_proxy.py`: the same aiohttp server and upstream pool as `serve`, no work
  (the ceiling of `serve`'s design);
- `envelope-proxy serve`, tracing off (every other feature on: detection, conversion,
  metrics, ledger);
- `envelope-proxy serve` with tracing on, `always_on`, exporting every span over OTLP/HTTP
  to `bench/_otlp_sink.py`, which counts the spans it receives.

Every round measures each configuration in a rotated order with the same body (a real
ExecutorEvent from the NoETL sources): req/s at 32 and 64 connections, the proxy process's
CPU µs per request (from /proc over the measured window), and p50/p99 latency at one
connection. Ratios are to the naive pass-through of the same round. The proxies get CPU 0;
nginx, wrk and the sink share CPU 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._procs import LOOPBACK, Child, children, free_port, python_module

SAMPLE = "executor_event__command_completed_full.json"
ANSWER = '{"status":"ok","event_id":"371818175291621376"}'
HEALTH = '{"status":"ok","version":"2.19.1"}'
CONFIGS = ("naive", "pooled", "serve", "serve+trace")

_NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_buffer_size 64k;
    server {{
        listen {host}:{port} reuseport;
        default_type application/json;
        location = /api/health {{ return 200 '{health}'; }}
        location / {{ return 200 '{answer}'; }}
    }}
}}
"""

_WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-NoETL-Client"] = "bench"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""

_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


@dataclass
class Run:
    config: str
    connections: int
    requests_per_second: float
    p50_us: float
    p99_us: float
    cpu_us_per_request: float | None
    errors: int
    requests: int


def sample_body(samples: Path) -> bytes:
    """The sample, compact (as producers send it)."""
    return json.dumps(json.loads((samples / SAMPLE).read_bytes()), separators=(",", ":")).encode()


def start_nginx(binary: str, work: Path, cpus: Sequence[int] | None, started: list[Child]) -> int:
    """Start nginx as the stub upstream (its files under `work/nginx`); returns its port."""
    nginx_dir = work / "nginx"
    nginx_dir.mkdir()
    port = free_port()
    conf = nginx_dir / "nginx.conf"
    conf.write_text(
        _NGINX_CONF.format(dir=nginx_dir, host=LOOPBACK, port=port, answer=ANSWER, health=HEALTH)
    )
    nginx = Child("nginx", [binary, "-c", str(conf)], log_dir=work, cpus=cpus)
    started.append(nginx)
    nginx.wait_for_port(port)
    return port


def _latency_us(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"unreadable latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> tuple[float, float, float, int, int]:
    """(req/s, p50 µs, p99 µs, requests, errors) from `wrk --latency` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _latency_us(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _latency_us(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: .*?(\d+) timeout"):
        found = re.search(pattern, output)
        if found:
            errors += int(found.group(1))
    return rps, p50, p99, done, errors


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
    def __init__(self, args: argparse.Namespace, work: Path, started: list[Child]) -> None:
        self.args = args
        self.work = work
        self.started = started
        cpus = sorted(os.sched_getaffinity(0))
        pinned = len(cpus) >= 2 and not args.no_pin
        self.proxy_cpus = (cpus[0],) if pinned else None
        self.other_cpus = (cpus[1],) if pinned else None
        self.ports: dict[str, int] = {}
        self.procs: dict[str, Child] = {}
        self.sink_port = 0

    def _start(self, name: str, argv: list[str], cpus: tuple[int, ...] | None, **env: str) -> Child:
        child = Child(name, argv, log_dir=self.work, cpus=cpus, env=env)
        self.started.append(child)
        return child

    def start(self) -> None:
        up_port = start_nginx(self.args.nginx, self.work, self.other_cpus, self.started)
        upstream = f"http://{LOOPBACK}:{up_port}"

        self.sink_port = free_port()
        sink = self._start(
            "otlp-sink",
            python_module("bench._otlp_sink", f"--port={self.sink_port}"),
            self.other_cpus,
        )
        sink.wait_for_port(self.sink_port)

        port = free_port()
        naive = self._start(
            "naive",
            python_module("bench.naive_proxy", f"--port={port}", f"--upstream={upstream}"),
            self.proxy_cpus,
        )
        naive.wait_for_port(port)
        self.ports["naive"], self.procs["naive"] = port, naive
        port = free_port()
        pooled = self._start(
            "pooled",
            python_module("bench.pooled_proxy", f"--port={port}", f"--upstream={upstream}"),
            self.proxy_cpus,
        )
        pooled.wait_for_port(port)
        self.ports["pooled"], self.procs["pooled"] = port, pooled
        self._serve("serve", upstream)
        self._serve(
            "serve+trace",
            upstream,
            ENVELOPE_PROXY_TRACING__OTLP_ENDPOINT=f"http://{LOOPBACK}:{self.sink_port}",
            OTEL_TRACES_SAMPLER="always_on",
        )

    def _serve(self, name: str, upstream: str, **env: str) -> None:
        port, admin = free_port(), free_port()
        argv = python_module(
            "proxy",
            "serve",
            f"--listen={LOOPBACK}:{port}",
            f"--admin-listen={LOOPBACK}:{admin}",
            f"--upstream={upstream}",
        )
        child = self._start(name, argv, self.proxy_cpus, **env)
        child.wait_for_port(port)
        _wait_ready(admin)
        self.ports[name], self.procs[name] = port, child

    def spans_received(self) -> int:
        return int(_get_json(f"http://{LOOPBACK}:{self.sink_port}/stats")["spans"])

    def wrk(self, config: str, connections: int, seconds: float, lua: Path) -> Run:
        url = f"http://{LOOPBACK}:{self.ports[config]}/api/events"
        argv = [
            self.args.wrk,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(lua),
            url,
        ]
        proc = self.procs[config]
        cpu_before = proc.cpu_seconds()
        cpus = self.other_cpus
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
            preexec_fn=(lambda: os.sched_setaffinity(0, set(cpus))) if cpus else None,
        )
        cpu = proc.cpu_seconds() - cpu_before
        rps, p50, p99, count, errors = parse_wrk(done.stdout)
        cpu_us = cpu * 1e6 / count if count else None
        return Run(config, connections, rps, p50, p99, cpu_us, errors, count)


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "n/a"


def report(rounds: list[dict[str, dict[int, Run]]], spans: dict[str, int]) -> str:
    lines = ["| round | config | req/s c32 | req/s c64 | CPU µs/req c64 | p50 c1 | p99 c1 |"]
    lines.append("|---|---|---|---|---|---|---|")
    for number, result in enumerate(rounds, 1):
        naive = result["naive"]
        for config, runs in result.items():
            lines.append(
                f"| {number} | {config} | {runs[32].requests_per_second:,.0f} "
                f"({_ratio(runs[32].requests_per_second, naive[32].requests_per_second)}) | "
                f"{runs[64].requests_per_second:,.0f} "
                f"({_ratio(runs[64].requests_per_second, naive[64].requests_per_second)}) | "
                f"{runs[64].cpu_us_per_request or 0:.0f} | "
                f"{runs[1].p50_us:.0f} µs ({_ratio(runs[1].p50_us, naive[1].p50_us)}) | "
                f"{runs[1].p99_us:.0f} µs |"
            )
    lines.append("")
    lines.append("Medians over the rounds of the same-round ratios to naive:")
    for config in CONFIGS[1:]:
        ratios = {
            f"req/s c{c}": statistics.median(
                r[config][c].requests_per_second / r["naive"][c].requests_per_second for r in rounds
            )
            for c in (32, 64)
        }
        ratios["p50 c1"] = statistics.median(
            r[config][1].p50_us / r["naive"][1].p50_us for r in rounds
        )
        text = ", ".join(f"{name} {value:.2f}x" for name, value in ratios.items())
        lines.append(f"- {config}: {text}")
    errors = sum(run.errors for r in rounds for runs in r.values() for run in runs.values())
    lines.append(f"- non-2xx answers or timeouts in all runs: {errors}")
    if spans:
        lines.append(
            f"- serve+trace: {spans['requests']:,} requests sent, "
            f"{spans['spans']:,} spans received by the sink"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="each measured run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--samples", type=Path, default=Path(__file__).parents[1] / "spec/samples")
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    samples = args.samples
    if not samples.is_dir():
        samples = Path(__file__).parents[2] / "shared/spec/samples"
    with (
        tempfile.TemporaryDirectory(prefix="bench-event-path-") as tmp,
        children(Path(tmp)) as started,
    ):
        work = Path(tmp)
        body_file = work / "body.json"
        body_file.write_bytes(sample_body(samples))
        lua = work / "post.lua"
        lua.write_text(_WRK_LUA.format(body=body_file))
        bench = Bench(args, work, started)
        bench.start()
        rounds: list[dict[str, dict[int, Run]]] = []
        traced_requests = 0
        spans_before = bench.spans_received()
        for number in range(args.rounds):
            order = CONFIGS[number % len(CONFIGS) :] + CONFIGS[: number % len(CONFIGS)]
            result: dict[str, dict[int, Run]] = {}
            for config in order:
                warm = bench.wrk(config, 64, args.warmup, lua)
                runs = {c: bench.wrk(config, c, args.seconds, lua) for c in (32, 64, 1)}
                result[config] = runs
                if config == "serve+trace":
                    traced_requests += warm.requests + sum(r.requests for r in runs.values())
                print(
                    f"round {number + 1} {config}: "
                    + ", ".join(
                        f"c{c} {r.requests_per_second:,.0f}/s p50 {r.p50_us:.0f}µs "
                        f"cpu {r.cpu_us_per_request or 0:.0f}µs"
                        for c, r in runs.items()
                    ),
                    flush=True,
                )
            rounds.append({c: result[c] for c in CONFIGS})
        time.sleep(7)  # the batch span processor exports every 5 s
        spans = {"spans": bench.spans_received() - spans_before, "requests": traced_requests}
        print(report(rounds, spans))
        if args.json:
            raw = [
                {c: {k: vars(v) for k, v in r.items()} for c, r in rnd.items()} for rnd in rounds
            ]
            args.json.write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
