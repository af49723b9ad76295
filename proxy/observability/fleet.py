"""The fleet-wide sunset verdict: the PromQL that asks Prometheus, and the reading of its answers.

Every proxy exposes its ledger as series (`metrics`): the last time each client sent each
shape, the ledger's event count per client and shape, and a heartbeat carrying the sunset
window. Prometheus keeps them per pod and across restarts, so the verdict over all replicas
and every pod a window has seen is a handful of queries. This module builds those queries
(`plan`), and turns the Prometheus HTTP API's JSON answers into a report shaped like admin
`/clients` plus the instances and the time range it covers (`build_report`). It does no I/O:
`proxy.ledger_commands` fetches, this module reads, and the chart's PrometheusRule and the
dashboard use the same expressions (`legacy_last_seen_expr`, `legacy_clients_expr`).

How partial data is read: legacy traffic seen anywhere in the window is "not ready" even if
part of the window is not covered; no legacy traffic with a window the series do not fully
cover (start missing, a gap with no proxy scraped, a failed scrape, a proxy down now, a
multi-worker proxy) is "could not tell" (`ready_to_sunset_v1: null`); no series at all too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from proxy.observability.ledger import CANONICAL_SHAPE, UNKNOWN_SHAPE, is_legacy, iso

LAST_SEEN = "envelope_proxy_client_last_seen_timestamp_seconds"
LEDGER_EVENTS = "envelope_proxy_ledger_events"
HEARTBEAT = "envelope_proxy_ledger_window_seconds"
TRACKING_SINCE = "envelope_proxy_ledger_tracking_since_timestamp_seconds"
PARTIAL = "envelope_proxy_ledger_partial"
SHADOW = "envelope_proxy_shadow_total"
LEGACY_MATCHER = f'shape!~"{CANONICAL_SHAPE}|{UNKNOWN_SHAPE}"'

# Prometheus's default lookback: a stretch this long with no proxy sample is a gap.
GAP_SECONDS = 300
# Points of the coverage range query (its step is window / this, at least 1 s).
COVERAGE_POINTS = 1000
MAX_WARNINGS = 20

_SELECTOR = re.compile(
    r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
    r'(,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*)*,?\s*'
)


class FleetError(ValueError):
    """An answer that is not what the Prometheus HTTP API returns, or a query it refused."""


def normalise_selector(text: str) -> str:
    """`job="x",namespace="y"` with or without braces, checked; "" for none."""
    inner = text.strip()
    if inner.startswith("{") and inner.endswith("}"):
        inner = inner[1:-1].strip()
    if not inner:
        return ""
    if not _SELECTOR.fullmatch(inner):
        raise FleetError(
            f"selector {text!r} is not a list of label matchers such as "
            'job="envelope-proxy",namespace="noetl"'
        )
    return inner.rstrip().rstrip(",").strip()


def _select(metric: str, selector: str, *matchers: str) -> str:
    parts = [m for m in (*matchers, selector) if m]
    return f"{metric}{{{','.join(parts)}}}" if parts else metric


def _range(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


def legacy_last_seen_expr(selector: str, window_seconds: float) -> str:
    """Fleet-wide last time each client sent each legacy shape within the window."""
    series = _select(LAST_SEEN, selector, LEGACY_MATCHER)
    return f"max by (client, shape) (max_over_time({series}[{_range(window_seconds)}]))"


def legacy_clients_expr(selector: str, window_seconds: float) -> str:
    """How many clients sent a legacy shape within the window, fleet-wide (0 = ready)."""
    window = f"{max(1, math.ceil(window_seconds))}"
    return (
        f"count(count by (client) ({legacy_last_seen_expr(selector, window_seconds)}"
        f" > time() - {window})) or vector(0)"
    )


def legacy_recent_expr(selector: str, seconds: float) -> str:
    """Clients and legacy shapes seen within the last `seconds` (the after-cutover alert)."""
    window = f"{max(1, math.ceil(seconds))}"
    return f"{legacy_last_seen_expr(selector, seconds)} > time() - {window}"


@dataclass(frozen=True, slots=True)
class Plan:
    """The queries for one verdict: instant queries by name, and one range query."""

    window_seconds: float
    selector: str
    instant: dict[str, str]
    coverage: str
    step_seconds: int


def plan(selector: str, window_seconds: float) -> Plan:
    """Every query the verdict needs, evaluated at one time `now` by the caller."""
    w = _range(window_seconds)
    s = selector
    heartbeat = _select(HEARTBEAT, s)
    events = _select(LEDGER_EVENTS, s)
    step = max(1, math.ceil(window_seconds / COVERAGE_POINTS))
    failed_shadow = _select(SHADOW, s, 'result!="ok"')
    proxy_jobs = f"count by (job) (last_over_time({heartbeat}[{w}]))"
    instant = {
        "last_seen": f"max by (client, shape) (max_over_time({_select(LAST_SEEN, s)}[{w}]))",
        # Ledger counts are gauges: the window's events are the last value less the value at
        # the window's start, or the whole value for a series born within the window.
        "events": (
            f"sum by (client, shape) (clamp_min(last_over_time({events}[{w}])"
            f" - {events} offset {w}, 0) or last_over_time({events}[{w}]))"
        ),
        "shadow": (f"sum by (client, result) (increase({failed_shadow}[{w}])) > 0"),
        "instances": f"last_over_time({heartbeat}[{w}])",
        # A subquery sees a sample only at its steps; the latest one comes from `latest`.
        "first_sample": f"min_over_time(timestamp({heartbeat})[{w}:{step}s])",
        "last_sample": f"max_over_time(timestamp({heartbeat})[{w}:{step}s])",
        "latest": f"timestamp({heartbeat})",
        "tracking_since": f"last_over_time({_select(TRACKING_SINCE, s)}[{w}])",
        "partial": f"max_over_time({_select(PARTIAL, s)}[{w}]) > 0",
        "failed_scrapes": (
            f"(count_over_time({_select('up', s)}[{w}]) - sum_over_time({_select('up', s)}[{w}])"
            f" > 0) and on (job) {proxy_jobs}"
        ),
        "down_now": f"({_select('up', s)} == 0) and on (job) {proxy_jobs}",
    }
    coverage = f"count(count_over_time({heartbeat}[{_range(max(GAP_SECONDS, step))}]))"
    return Plan(window_seconds, selector, instant, coverage, step)


def window_query(selector: str) -> str:
    """The sunset window the proxies are configured with (the default --window)."""
    return f"max(last_over_time({_select(HEARTBEAT, selector)}[1h]))"


# -- reading the Prometheus HTTP API ---------------------------------------------------


def result(answer: object, result_type: str) -> list[dict[str, Any]]:
    """The `data.result` list of one API answer; FleetError when it is not one."""
    if not isinstance(answer, dict) or "status" not in answer:
        raise FleetError("the answer is not from the Prometheus HTTP API (no status field)")
    if answer["status"] != "success":
        kind = answer.get("errorType", "error")
        raise FleetError(f"Prometheus refused the query: {kind}: {answer.get('error', '?')}")
    data = answer.get("data")
    if not isinstance(data, dict) or data.get("resultType") != result_type:
        got = data.get("resultType") if isinstance(data, dict) else None
        raise FleetError(f"expected a {result_type} result from Prometheus, got {got!r}")
    rows = data.get("result")
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and isinstance(r.get("metric"), dict) for r in rows
    ):
        raise FleetError("malformed result in the Prometheus answer")
    return rows


def _value(point: object) -> tuple[float, float]:
    if not isinstance(point, list) or len(point) != 2:
        raise FleetError(f"malformed sample in the Prometheus answer: {point!r}")
    try:
        return float(point[0]), float(point[1])
    except (TypeError, ValueError) as exc:
        raise FleetError(f"malformed sample in the Prometheus answer: {point!r}") from exc


def vector(answer: object) -> list[tuple[dict[str, str], float]]:
    """An instant vector as (labels, value) pairs; NaN and infinite values are dropped."""
    rows = []
    for row in result(answer, "vector"):
        _, value = _value(row.get("value"))
        if math.isfinite(value):
            rows.append(({str(k): str(v) for k, v in row["metric"].items()}, value))
    return rows


def matrix_points(answer: object) -> list[float]:
    """The timestamps of the single series of a `count(...)` range query (none: empty)."""
    rows = result(answer, "matrix")
    if len(rows) > 1:
        raise FleetError("expected at most one series from the coverage query")
    if not rows:
        return []
    values = rows[0].get("values")
    if not isinstance(values, list):
        raise FleetError("malformed range result in the Prometheus answer")
    return [_value(point)[0] for point in values]


# -- the report ------------------------------------------------------------------------


def _instance_name(labels: dict[str, str]) -> str:
    for key in ("pod", "instance"):
        if key in labels:
            return labels[key]
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "(no labels)"


def _instance_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))


def _gaps(points: list[float], start: float, end: float, step: float) -> list[tuple[float, float]]:
    """Runs of the coverage query's grid (start, start + step, ...) that had no point."""
    last = int((end - start) // step)
    present = {round((t - start) / step) for t in points}
    gaps: list[tuple[float, float]] = []
    run: int | None = None
    for k in range(last + 2):
        if k <= last and k not in present:
            run = k if run is None else run
        elif run is not None:
            gaps.append((start + run * step, start + (k - 1) * step))
            run = None
    return gaps


def build_report(
    answers: dict[str, object],
    coverage: object,
    the_plan: Plan,
    now: float,
) -> dict[str, Any]:
    """The fleet-wide report from the answers to `plan`'s queries, evaluated at `now`."""
    window = the_plan.window_seconds
    start = now - window
    warnings: list[str] = []

    instances: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}

    def instance(labels: dict[str, str]) -> dict[str, Any]:
        key = _instance_key(labels)
        if key not in instances:
            instances[key] = {"instance": _instance_name(labels), "labels": dict(key)}
        return instances[key]

    for labels, _ in vector(answers["instances"]):
        instance(labels)
    firsts: dict[tuple[tuple[str, str], ...], float] = {}
    lasts: dict[tuple[tuple[str, str], ...], float] = {}
    for labels, value in vector(answers["first_sample"]):
        firsts[_instance_key(labels)] = value
    for name in ("last_sample", "latest"):
        for labels, value in vector(answers[name]):
            key = _instance_key(labels)
            lasts[key] = max(value, lasts.get(key, value))
    for key, value in lasts.items():
        firsts.setdefault(key, value)  # a series younger than one subquery step
    for key, details in instances.items():
        if key in firsts:
            details["first_sample"] = iso(firsts[key])
            details["last_sample"] = iso(lasts.get(key, firsts[key]))
    for labels, value in vector(answers["tracking_since"]):
        if _instance_key(labels) in instances:
            instance(labels)["tracking_since"] = iso(value)
    for labels, _ in vector(answers["partial"]):
        warnings.append(
            f"{_instance_name(labels)} runs several workers: its series carry the first "
            "worker's traffic only"
        )
    for labels, value in vector(answers["failed_scrapes"]):
        warnings.append(
            f"{_instance_name(labels)}: {int(value)} failed scrape(s) in the window "
            "(a restart or an outage)"
        )
    for labels, _ in vector(answers["down_now"]):
        warnings.append(f"{_instance_name(labels)} is not scraped now (its last scrape failed)")

    covered_from = min(firsts.values(), default=None)
    covered_to = max(lasts.values(), default=None)
    points = matrix_points(coverage)
    if not instances or covered_from is None or not points:
        warnings.insert(0, "no envelope-proxy series in the window for this selector")
    else:
        # The subquery samples every step: a start later than one step is a late start.
        if covered_from > start + the_plan.step_seconds:
            warnings.append(
                f"the series begin at {iso(covered_from)}, after the window's start "
                f"{iso(start)} (Prometheus retention shorter than the window, or the proxies "
                "were deployed within it)"
            )
        for gap_start, gap_end in _gaps(points, start, now, the_plan.step_seconds):
            if gap_start <= start and covered_from > start:
                continue  # already said: the series begin late
            # A point covers the GAP_SECONDS before it: the gap began that much earlier.
            since = max(start, gap_start - GAP_SECONDS)
            warnings.append(
                f"no proxy was scraped between {iso(since)} and {iso(gap_end)}"
                if gap_end + the_plan.step_seconds <= now
                else f"no proxy has been scraped since {iso(since)}"
            )

    clients = _clients(answers, start)
    blocking = [
        c["client"]
        for c in sorted(
            (c for c in clients.values() if c["blocks_sunset"]),
            key=lambda c: (-c["_legacy_last"], c["client"]),
        )
    ]
    order = {name: i for i, name in enumerate(blocking)}
    ordered = sorted(
        clients.values(),
        key=lambda c: (not c["blocks_sunset"], order.get(c["client"], 0), -c["_last"], c["client"]),
    )
    for c in ordered:
        del c["_last"], c["_legacy_last"]
    ready: bool | None
    if blocking:
        ready = False
    elif warnings:
        ready = None
    else:
        ready = True
    shown = warnings[:MAX_WARNINGS]
    if len(warnings) > MAX_WARNINGS:
        shown.append(f"... and {len(warnings) - MAX_WARNINGS} more warnings")
    return {
        "source": "prometheus",
        "selector": the_plan.selector,
        "generated_at": iso(now),
        "sunset_window_seconds": window,
        "window_start": iso(start),
        "tracking_since": min(
            (i["tracking_since"] for i in instances.values() if "tracking_since" in i),
            default=None,
        ),
        "covered_range": {
            "from": iso(covered_from) if covered_from is not None else None,
            "to": iso(covered_to) if covered_to is not None else None,
            "complete": not warnings,
        },
        "window_observed": not warnings,
        "instances": len(instances),
        "instance_details": sorted(instances.values(), key=lambda i: str(i["instance"])),
        "warnings": shown,
        "ready_to_sunset_v1": ready,
        "blocking_clients": blocking,
        "clients": ordered,
    }


def _clients(answers: dict[str, object], start: float) -> dict[str, dict[str, Any]]:
    counts = {
        (labels.get("client", ""), labels.get("shape", "")): value
        for labels, value in vector(answers["events"])
    }
    clients: dict[str, dict[str, Any]] = {}
    for labels, last in sorted(vector(answers["last_seen"]), key=lambda r: sorted(r[0].items())):
        name, shape = labels.get("client"), labels.get("shape")
        if name is None or shape is None:
            continue
        entry = clients.setdefault(
            name,
            {"client": name, "shapes": {}, "shadow_failures": {}, "_last": 0.0},
        )
        entry["shapes"][shape] = {
            "count": round(counts.get((name, shape), 0.0)),
            "last_seen": iso(last),
        }
        entry["_last"] = max(entry["_last"], last)
        if is_legacy(shape):
            previous = entry.get("_legacy_last")
            entry["_legacy_last"] = last if previous is None else max(previous, last)
    for labels, value in vector(answers["shadow"]):
        failing = clients.get(labels.get("client", ""))
        if failing is not None and "result" in labels:
            failing["shadow_failures"][labels["result"]] = {"count": max(1, round(value))}
    for entry in clients.values():
        legacy_last = entry.get("_legacy_last")
        recognised = [s for s in entry["shapes"] if s != UNKNOWN_SHAPE]
        entry["shapes"] = dict(sorted(entry["shapes"].items()))
        entry["canonical_only"] = bool(recognised) and all(s == CANONICAL_SHAPE for s in recognised)
        entry["blocks_sunset"] = legacy_last is not None and legacy_last >= start
        entry["last_seen"] = iso(entry["_last"]) if entry["shapes"] else None
        entry["last_legacy_seen"] = iso(legacy_last) if legacy_last is not None else None
        entry["_legacy_last"] = legacy_last if legacy_last is not None else 0.0
    return clients


def exit_code(report: dict[str, Any]) -> int:
    """0 ready, 1 not ready, 2 could not tell: for a fleet report and a `/clients` alike."""
    ready = report.get("ready_to_sunset_v1")
    if ready is False:
        return 1
    if ready is True and report.get("window_observed", True):
        return 0
    return 2
