"""CLI commands over the engine: `detect`, `convert` and `check`.

The engine itself does no I/O; this module reads files or stdin and writes the results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec

from proxy.envelope import TARGETS, Engine, EnvelopeError, RulesError, load_rules


def register(subparsers: Any) -> None:
    detect = subparsers.add_parser("detect", help="print the envelope shape of a body")
    detect.add_argument("file", nargs="?", type=Path, help="JSON body (stdin when omitted)")
    detect.add_argument("--explain", action="store_true", help="also list the traits that matched")
    detect.add_argument("--rules", type=Path, metavar="DIR", help="rules directory")
    detect.set_defaults(func=run_detect)

    convert = subparsers.add_parser(
        "convert", help="convert JSON or JSON Lines bodies to a target, as JSON Lines"
    )
    convert.add_argument("--to", required=True, choices=TARGETS, help="target shape")
    convert.add_argument("file", nargs="?", type=Path, help="input (stdin when omitted)")
    convert.add_argument("--rules", type=Path, metavar="DIR", help="rules directory")
    convert.set_defaults(func=run_convert)

    check = subparsers.add_parser("check", help="validate a rules directory and/or a config file")
    check.add_argument("--rules", type=Path, metavar="DIR", help="rules directory")
    check.add_argument("--config", type=Path, metavar="FILE", help="proxy config file")
    check.set_defaults(func=run_check)


def _read(path: Path | None) -> bytes:
    return path.read_bytes() if path is not None else sys.stdin.buffer.read()


def _engine(rules_dir: Path | None) -> Engine | None:
    try:
        return Engine(load_rules(rules_dir))
    except RulesError as exc:
        print(exc, file=sys.stderr)
        return None


def run_detect(args: argparse.Namespace) -> int:
    engine = _engine(args.rules)
    if engine is None:
        return 2
    try:
        detection = engine.detect(_read(args.file))
    except EnvelopeError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(detection.shape)
    if args.explain:
        for trait in detection.matched:
            print(f"  {trait}")
    return 0


def split_documents(data: bytes) -> list[tuple[int, bytes]]:
    """One JSON document, or JSON Lines: `(line number, bytes)` per document."""
    try:
        msgspec.json.decode(data)
        return [(1, data)]
    except msgspec.DecodeError as exc:
        if "trailing characters" not in str(exc) and data.strip().count(b"\n") == 0:
            return [(1, data)]
    except RecursionError:
        # Nested too deeply to read here: the engine refuses each document (too_deep)
        # within its own depth bound, as `serve` does.
        if data.strip().count(b"\n") == 0:
            return [(1, data)]
    return [
        (number, line) for number, line in enumerate(data.splitlines(), start=1) if line.strip()
    ]


def run_convert(args: argparse.Namespace) -> int:
    engine = _engine(args.rules)
    if engine is None:
        return 2
    failed = False
    out = sys.stdout.buffer
    for number, document in split_documents(_read(args.file)):
        try:
            conversion = engine.convert(document, args.to)
        except EnvelopeError as exc:
            failed = True
            print(f"line {number}: {exc}", file=sys.stderr)
            continue
        # Raw newlines in JSON are always insignificant whitespace (strings cannot hold
        # them), so removing them keeps every value and makes one line per document.
        out.write(conversion.body.replace(b"\r", b"").replace(b"\n", b"") + b"\n")
    out.flush()
    return 1 if failed else 0


def run_check(args: argparse.Namespace) -> int:
    problems: list[str] = []
    if args.config is not None:
        from proxy.config import check_config  # the server's settings loader

        problems += check_config(args.config)
    if args.rules is not None or args.config is None:
        try:
            rules = load_rules(args.rules)
        except RulesError as exc:
            problems += exc.problems
        else:
            print(f"rules ok: {rules.directory} (digest {rules.digest})")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0
