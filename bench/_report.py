"""Printing for `bench.http`: progress lines, per-body tables, ratios and the floors.

Ratios are taken within one round (the same machine state) and then the median over
rounds is shown; with `--repeat N` the spread of req/s (min-max over rounds) ends the row.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

BASELINE = "naive"

# (server, what it is compared with, floor, which way): the targets the proxy is held to.
RPS_FLOORS = (("proxy", BASELINE, 1.0), ("proxy+trace", BASELINE, 0.9), ("proxy-w2", "proxy", 1.5))
ADDED_P50_US = 50.0


class _Measurement(Protocol):
    server: str
    body: str
    connections: int
    result: dict[str, Any]
    cpu_us_per_request: float | None
    cpu_busy: float | None
    round: int


def _out(text: str = "") -> None:
    print(text, flush=True)


def progress(m: _Measurement) -> None:
    r = m.result
    cpu = f"{m.cpu_us_per_request:7.0f} µs/req cpu" if m.cpu_us_per_request else " " * 16
    bad = {k: v for k, v in r["statuses"].items() if not k.startswith("2")}
    problems = f"  non-2xx {bad}" if bad else ""
    problems += f"  errors {r['errors']}" if r["errors"] else ""
    print(
        f"  [{m.round}] {m.body:<22} c={m.connections:<3} {m.server:<13}"
        f"{r['rps']:8.0f} req/s  p50 {r['p50_us']:8.0f} µs  p99 {r['p99_us']:8.0f} µs {cpu}"
        f"{problems}",
        file=sys.stderr,
        flush=True,
    )


def header(
    args: argparse.Namespace,
    pinned: bool,
    cpus: int,
    server_cpu: tuple[int, ...] | None,
    other_cpu: tuple[int, ...] | None,
) -> None:
    _out(
        f"envelope-proxy HTTP benchmark: {cpus} CPUs, {args.duration:g} s per measurement "
        f"after {args.warmup:g} s warm-up, {args.connections} connections at saturation, "
        f"{args.repeat} round(s)"
    )
    if pinned:
        _out(
            f"pinning: server under test on CPU {server_cpu}, upstream + trace sink + load "
            f"generator on CPU {other_cpu} (direct: load generator on {server_cpu}); "
            "proxy-w2 on all CPUs"
        )
    else:
        _out("pinning: none (every process may run on every CPU)")


def _cell(
    results: Sequence[_Measurement], server: str, body: str, conns: int
) -> list[_Measurement]:
    return [m for m in results if m.server == server and m.body == body and m.connections == conns]


def _value(m: _Measurement, key: str) -> float | None:
    if key == "cpu":
        return m.cpu_us_per_request
    if key == "busy":
        return m.cpu_busy
    value = m.result[key]
    return float(value) if value is not None else None


def _per_round(
    results: Sequence[_Measurement],
    server: str,
    body: str,
    conns: int,
    key: str,
    combine: Callable[[float, float], float] | None = None,
    base: str = BASELINE,
) -> list[float]:
    """The value per round, or combine(value, baseline value) per round."""
    values = []
    bases = {m.round: m for m in _cell(results, base, body, conns)}
    for m in _cell(results, server, body, conns):
        v = _value(m, key)
        if v is None:
            continue
        if combine is None:
            values.append(v)
            continue
        b = bases.get(m.round)
        bv = _value(b, key) if b else None
        if bv:
            values.append(combine(v, bv))
    return values


def _fmt(values: list[float], spec: str, width: int) -> str:
    text = format(statistics.median(values), spec) if values else "-"
    return text.rjust(width)


def _spread(values: list[float]) -> str:
    """min-max over rounds, when there was more than one."""
    if len(values) < 2:
        return ""
    return f"  [{min(values):.0f}-{max(values):.0f}]"


def _ratio(a: float, b: float) -> float:
    return a / b


def _diff(a: float, b: float) -> float:
    return a - b


def _row(results: Sequence[_Measurement], server: str, body: str, conns: int) -> str:
    def g(key: str, combine: Callable[[float, float], float] | None = None) -> list[float]:
        return _per_round(results, server, body, conns, key, combine)

    return (
        f"  {server:<13}{_fmt(g('rps'), '.0f', 10)}{_fmt(g('rps', _ratio), '.2f', 9)}"
        f"{_fmt(g('p50_us'), '.0f', 10)}{_fmt(g('p99_us'), '.0f', 10)}"
        f"{_fmt(g('p50_us', _diff), '+.0f', 9)}{_fmt(g('cpu'), '.0f', 12)}"
        f"{_fmt(g('cpu', _ratio), '.2f', 9)}{_fmt(g('busy'), '.0%', 10)}{_spread(g('rps'))}"
    )


def tables(results: Sequence[_Measurement], body_names: list[str], saturation: int) -> None:
    servers = list(dict.fromkeys(m.server for m in results))
    for body in body_names:
        for conns in (saturation, 1):
            _out()
            _out(f"{body}, {conns} connection{'s' if conns > 1 else ''}")
            _out(
                f"  {'server':<13}{'req/s':>10}{'xnaive':>9}{'p50 µs':>10}{'p99 µs':>10}"
                f"{'+p50 µs':>9}{'cpu µs/req':>12}{'xnaive':>9}{'cpu busy':>10}"
                "  [req/s min-max]"
            )
            for server in servers:
                if not _cell(results, server, body, conns):
                    continue
                _out(_row(results, server, body, conns))


def floors(results: Sequence[_Measurement], saturation: int, spans: dict[str, int] | None) -> bool:
    """Print each floor with its worst body; True when no request failed."""
    bodies = list(dict.fromkeys(m.body for m in results))
    servers = {m.server for m in results}
    _out()
    _out("floors (median over rounds of same-round ratios; worst body shown)")
    for server, base, floor in RPS_FLOORS:
        if server not in servers:
            continue
        ratios = {
            body: statistics.median(vals)
            for body in bodies
            if (vals := _per_round(results, server, body, saturation, "rps", _ratio, base))
        }
        if not ratios:
            continue
        worst = min(ratios, key=lambda b: ratios[b])
        verdict = "met" if ratios[worst] >= floor else "MISSED"
        _out(
            f"  {server} req/s ≥ {floor:.1f}x {base}: {verdict}; worst {ratios[worst]:.2f}x "
            f"({worst}), best {max(ratios.values()):.2f}x"
        )
    added = {
        body: statistics.median(vals)
        for body in bodies
        if (vals := _per_round(results, "proxy", body, 1, "p50_us", _diff))
    }
    if added:
        worst = max(added, key=lambda b: added[b])
        verdict = "met" if added[worst] <= ADDED_P50_US else "MISSED"
        small = [v for b, v in added.items() if "1KB" in b]
        _out(
            f"  proxy p50 at 1 connection ≤ naive + {ADDED_P50_US:.0f} µs: {verdict}; worst "
            f"{added[worst]:+.0f} µs ({worst}); ~1 KB bodies "
            f"{min(small, default=0):+.0f}..{max(small, default=0):+.0f} µs"
        )
    if spans:
        expected = 2 * spans["requests"]
        _out(
            f"  spans exported by proxy+trace: {spans['spans']} of {expected} "
            f"(server + client span for each of {spans['requests']} requests)"
        )
    failed = [m for m in results if m.result["errors"] or _non_2xx(m)]
    if failed:
        _out(f"  {len(failed)} measurement(s) saw errors or non-2xx answers: figures invalid")
    return not failed


def _non_2xx(m: _Measurement) -> bool:
    return any(not status.startswith("2") for status in m.result["statuses"])


def metric_sum(text: str, name: str) -> float:
    """Sum of all samples of one metric family in Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in "{ "):
            total += float(line.rsplit(" ", 1)[1])
    return total
