"""The `envelope-proxy` command line: one subcommand per feature module.

Each module listed in `_COMMAND_MODULES` exposes `register(subparsers)`, which adds its
subcommands and sets `func` on them; `func(args)` returns the exit code. Feature modules
own their commands, so adding one touches only this list.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Callable, Sequence

_COMMAND_MODULES = (
    "proxy.engine_commands",  # detect, convert, check
    "proxy.server.commands",  # serve
    "proxy.emulator_commands",  # upstream (the emulator)
    "proxy.demo",  # demo
    "proxy.ledger_commands",  # clients
    "proxy.quarantine.commands",  # quarantine
    "proxy.rule_tests",  # test
)


def package_version() -> str:
    """The installed distribution's version (the package's own when run from a bare tree)."""
    try:
        return importlib.metadata.version("envelope-proxy")
    except importlib.metadata.PackageNotFoundError:
        from proxy import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="envelope-proxy",
        description="Accept every NoETL event envelope shape; forward what the upstream accepts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 1
