"""`envelope-proxy upstream`: the command line of the NoETL ingest emulator.

The emulator (`proxy.emulator`) is a tool for the demo, tests and benchmarks: the Python
package carries it, the production image does not. This module and `proxy.demo` are the
product's only entry points into it, and they import it only once their command runs, so
every other command works without it and these two say clearly when it is missing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

DEFAULT_LISTEN = "127.0.0.1:8082"
# The keys of `proxy.emulator.profiles.PROFILES`, in order, so that parsing the command
# line needs no emulator (tests/unit/test_emulator_apart.py keeps the two equal).
PROFILE_NAMES = ("rust-1.0.3", "rust-2.9.0", "rust-2.19.1", "python")
NOT_INSTALLED = (
    "the emulator is not installed in this image; "
    "install envelope-proxy from PyPI or from source to run it"
)
EXIT_NOT_INSTALLED = 2


def emulator_installed() -> bool:
    """Whether `proxy.emulator` imports: False when it is absent, an error when it is broken."""
    try:
        import proxy.emulator  # noqa: F401
    except ModuleNotFoundError as error:
        name = error.name or ""
        if name != "proxy.emulator" and not name.startswith("proxy.emulator."):
            raise
        return False
    return True


def report_not_installed(command: str) -> int:
    """Say that `command` needs the emulator; the exit code for it."""
    print(f"envelope-proxy {command}: {NOT_INSTALLED}", file=sys.stderr)
    return EXIT_NOT_INSTALLED


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 hosts in brackets); port 0 picks a free port."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "upstream",
        help="run the NoETL ingest emulator (a control plane on loopback)",
        description="Emulate the ingest API of one NoETL control plane release.",
    )
    parser.add_argument(
        "--emulate",
        required=True,
        choices=list(PROFILE_NAMES),
        help="which server release to emulate",
    )
    parser.add_argument(
        "--version",
        dest="report_version",
        metavar="X.Y.Z",
        help="version reported by /api/health (default: the profile's own)",
    )
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=parse_listen(DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"address to listen on (default {DEFAULT_LISTEN}; port 0 picks a free one)",
    )
    parser.add_argument("--db", metavar="FILE", help="SQLite file for the event store")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="benchmark mode: in-memory store, no per-request logging",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not emulator_installed():
        return report_not_installed("upstream")
    from proxy.emulator.commands import run_upstream

    return run_upstream(args)
