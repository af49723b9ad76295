"""The `envelope-proxy clients` command: the sunset ledger of a running proxy, as a table.

It fetches admin `/clients` and prints one line per client, those still sending legacy
shapes first, then a one-line verdict on whether the legacy (v1) envelopes can be retired.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from typing import Any

import orjson

DEFAULT_ADMIN = "http://127.0.0.1:9090"
PARTIAL_WARNING = (
    "warning: this proxy runs several worker processes and this is the ledger of the "
    "first one only; run one worker per process (scale with replicas) for a verdict"
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "clients",
        help="show which clients still send legacy envelope shapes (the sunset ledger)",
        description="Fetch /clients from a running proxy's admin listener and print the "
        "per-client shape ledger with the ready_to_sunset_v1 verdict.",
    )
    parser.add_argument(
        "--admin",
        default=DEFAULT_ADMIN,
        metavar="URL",
        help=f"admin base URL of the proxy (default {DEFAULT_ADMIN})",
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON document")
    parser.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS", help="request timeout (default 5)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    url = args.admin.rstrip("/") + "/clients"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            raw = response.read()
        report = orjson.loads(raw)
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError, ValueError) as exc:
        print(f"envelope-proxy clients: cannot read {url}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    sys.stdout.write(render(report))
    return 0


def render(report: dict[str, Any]) -> str:
    """The table and the verdict line for a `/clients` document."""
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
    if report.get("partial"):
        lines.append(PARTIAL_WARNING)
    lines.append(verdict(report))
    return "\n".join(lines) + "\n"


def verdict(report: dict[str, Any]) -> str:
    """One line: can v1 go, and if not, who is holding it."""
    window = _duration(float(report["sunset_window_seconds"]))
    if report["ready_to_sunset_v1"] is None:
        return "verdict: unknown: the ledger covers one worker's traffic only"
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
