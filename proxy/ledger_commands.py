"""The `envelope-proxy clients` command: the sunset ledger as a table, per proxy or fleet-wide.

It fetches admin `/clients` of one proxy, or with `--prometheus` asks Prometheus for the
whole fleet (`proxy.observability.fleet`), and prints one line per client, those still
sending legacy shapes first, then a one-line verdict on whether the legacy (v1) envelopes
can be retired. The exit status is the verdict: 0 ready, 1 not ready, 2 could not tell.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from proxy.observability.fleet import FleetError, exit_code, normalise_selector
from proxy.observability.prometheus import (
    PrometheusClient,
    PrometheusUnavailable,
    fleet_report,
    parse_duration,
)

DEFAULT_ADMIN = "http://127.0.0.1:9090"
TOKEN_ENV = "ENVELOPE_PROXY_PROMETHEUS_TOKEN"
COULD_NOT_TELL = 2
_FLEET_ONLY = (
    ("--window", "window"),
    ("--selector", "selector"),
    ("--token-file", "token_file"),
    ("--ca-file", "ca_file"),
    ("--insecure", "insecure"),
)
PARTIAL_WARNING = (
    "warning: this proxy runs several worker processes and this is the ledger of the "
    "first one only; run one worker per process (scale with replicas) for a verdict"
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "clients",
        help="show which clients still send legacy envelope shapes (the sunset ledger)",
        description="Print the per-client shape ledger with the ready_to_sunset_v1 verdict: of "
        "one running proxy (its admin /clients), or with --prometheus of the whole fleet, "
        "every replica and restart, from the series Prometheus scraped. Exit status: 0 ready, "
        "1 not ready, 2 could not tell (unreachable, an error, or data that does not cover "
        "the window).",
    )
    parser.add_argument(
        "--admin",
        default=DEFAULT_ADMIN,
        metavar="URL",
        help=f"admin base URL of the proxy (default {DEFAULT_ADMIN})",
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON document")
    parser.add_argument(
        "--output",
        choices=("table", "json"),
        default=None,
        help="table (default) or json (the same as --json)",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS", help="request timeout (default 5)"
    )
    fleet = parser.add_argument_group("fleet-wide verdict through Prometheus")
    fleet.add_argument(
        "--prometheus",
        metavar="URL",
        help="base URL of the Prometheus HTTP API that scrapes the proxies; ask it instead of "
        "one proxy's admin listener",
    )
    fleet.add_argument(
        "--window",
        type=parse_duration,
        metavar="DURATION",
        help="sunset window, e.g. 24h, 7d, 3600 (default: the proxies' "
        "clients.sunset_window_seconds as scraped, else 1d)",
    )
    fleet.add_argument(
        "--selector",
        default="",
        metavar="MATCHERS",
        help="label matchers for the proxies' series, e.g. 'namespace=\"noetl\"' or "
        "'job=\"envelope-proxy\"' (default: every series)",
    )
    fleet.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"file holding a bearer token for Prometheus (or set {TOKEN_ENV}); never printed",
    )
    fleet.add_argument(
        "--ca-file", metavar="FILE", help="CA bundle to verify Prometheus's TLS certificate"
    )
    fleet.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify Prometheus's TLS certificate",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    as_json = args.json or args.output == "json"
    if args.prometheus is not None:
        return _run_fleet(args, as_json)
    given = [flag for flag, value in _FLEET_ONLY if getattr(args, value)]
    if given:
        print(f"envelope-proxy clients: {', '.join(given)} need --prometheus", file=sys.stderr)
        return COULD_NOT_TELL
    url = args.admin.rstrip("/") + "/clients"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            raw = response.read()
        report = orjson.loads(raw)
        if not isinstance(report, dict) or "ready_to_sunset_v1" not in report:
            raise ValueError("not a /clients document")
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError, ValueError) as exc:
        print(f"envelope-proxy clients: cannot read {url}: {exc}", file=sys.stderr)
        return COULD_NOT_TELL
    if as_json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render(report))
    return exit_code(report)


def _run_fleet(args: argparse.Namespace, as_json: bool) -> int:
    try:
        token = _token(args.token_file)
        client = PrometheusClient(
            args.prometheus,
            token=token,
            timeout=args.timeout,
            ca_file=args.ca_file,
            insecure=args.insecure,
        )
        report = fleet_report(client, normalise_selector(args.selector), args.window, time.time())
    except (FleetError, PrometheusUnavailable, OSError) as exc:
        print(f"envelope-proxy clients: {exc}", file=sys.stderr)
        print("verdict: could not tell", file=sys.stderr)
        return COULD_NOT_TELL
    report["prometheus"] = client.display_url
    if as_json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render(report))
    return exit_code(report)


def _token(path: str | None) -> str | None:
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise FleetError(f"cannot read the token file {path}: {exc}") from exc
        if not text:
            raise FleetError(f"the token file {path} is empty")
        return text
    return os.environ.get(TOKEN_ENV) or None


def render(report: dict[str, Any]) -> str:
    """The table and the verdict line for a `/clients` document or a fleet report."""
    header = ("CLIENT", "STATUS", "SHAPES", "LAST SEEN", "SHADOW FAILURES")
    rows = [header]
    for client in report["clients"]:
        rows.append(
            (
                client["client"],
                _status(client),
                _counts(client["shapes"]),
                client["last_seen"] or "-",
                _counts(client["shadow_failures"]) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    if len(rows) == 1:
        lines.append("(no event requests recorded yet)")
    lines.append("")
    if report.get("source") == "prometheus":
        covered = report["covered_range"]
        lines.append(
            f"instances: {report['instances']}; series from {covered['from'] or '-'} to "
            f"{covered['to'] or '-'}; window from {report['window_start']}"
        )
        lines.extend(f"warning: {text}" for text in report["warnings"])
    if report.get("partial"):
        lines.append(PARTIAL_WARNING)
    lines.append(verdict(report))
    return "\n".join(lines) + "\n"


def verdict(report: dict[str, Any]) -> str:
    """One line: can v1 go, and if not, who is holding it."""
    window = _duration(float(report["sunset_window_seconds"]))
    fleet = report.get("source") == "prometheus"
    if report["ready_to_sunset_v1"] is None:
        if not fleet:
            return "verdict: unknown: the ledger covers one worker's traffic only"
        if not report["instances"]:
            return "verdict: could not tell: no envelope-proxy series found in the window"
        return (
            f"verdict: could not tell: no legacy shape seen in the last {window}, but the "
            "series do not cover the whole window (see the warnings)"
        )
    if fleet and report["ready_to_sunset_v1"]:
        noun = "instance" if report["instances"] == 1 else "instances"
        return (
            f"verdict: ready to sunset v1: no legacy shape in the last {window}"
            f" on {report['instances']} {noun}"
        )
    caveat = ""
    if not report.get("window_observed", True):
        caveat = f" (observed since {report['tracking_since']}, less than {window})"
    if report["ready_to_sunset_v1"]:
        return f"verdict: ready to sunset v1: no legacy shape in the last {window}{caveat}"
    blocking = report["blocking_clients"]
    names = ", ".join(blocking[:10]) + (
        f", ... ({len(blocking) - 10} more)" if len(blocking) > 10 else ""
    )
    noun = "client" if len(blocking) == 1 else "clients"
    return (
        f"verdict: NOT ready to sunset v1: {len(blocking)} {noun} sent legacy shapes"
        f" in the last {window}: {names}"
    )


def _status(client: dict[str, Any]) -> str:
    if client["blocks_sunset"]:
        return "legacy"
    if client["canonical_only"]:
        return "canonical"
    if client["last_legacy_seen"] is not None:
        return "migrated"
    return "unrecognised"


def _counts(seen: dict[str, Any]) -> str:
    return ", ".join(f"{name}={item['count']}" for name, item in seen.items())


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
