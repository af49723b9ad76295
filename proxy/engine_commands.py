"""CLI commands over the engine: `detect`, `convert` and `check`.

The engine itself does no I/O; this module reads files or stdin and writes the results,
as text for people or, with `-o json`, one JSON object per input document for machines.
Exit codes: 0 all done, 1 some input refused (or problems found), 2 the command could not
run at all (unreadable input, invalid rules or config, a bad flag value).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import orjson

from proxy.envelope import TARGETS, Engine, EngineOptions, EnvelopeError, RulesError, load_rules
from proxy.envelope.ids import MAX_MACHINE_ID, SNOWFLAKE_EPOCH_MS, SnowflakeMinter

OUTPUT_FORMATS = ("text", "json")


class CommandError(Exception):
    """The command cannot run: one line for people, a stable `code` for machines (exit 2)."""

    def __init__(self, code: str, message: str, problems: tuple[str, ...] = ()):
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems = problems


def _output_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUT_FORMATS,
        default="text",
        help="text (default) or json: one JSON object per input document, errors included",
    )


def register(subparsers: Any) -> None:
    detect = subparsers.add_parser(
        "detect", help="print the envelope shape of a JSON or JSON Lines body"
    )
    detect.add_argument("file", nargs="?", type=Path, help="input (stdin when omitted or -)")
    detect.add_argument("--explain", action="store_true", help="also list the traits that matched")
    detect.add_argument("--rules", type=Path, metavar="DIR", help="rules directory")
    _output_flag(detect)
    detect.set_defaults(func=run_detect)

    convert = subparsers.add_parser(
        "convert", help="convert JSON or JSON Lines bodies to a target, as JSON Lines"
    )
    convert.add_argument("--to", required=True, choices=TARGETS, help="target shape")
    convert.add_argument("file", nargs="?", type=Path, help="input (stdin when omitted or -)")
    convert.add_argument(
        "--rules", type=Path, metavar="DIR", help="rules directory (over the config's)"
    )
    convert.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="convert as `serve --config FILE` would (envelope.*, limits, rules_dir; env too)",
    )
    convert.add_argument(
        "--now",
        metavar="TIMESTAMP",
        help="pin the clock (ISO 8601 with a zone, e.g. 2026-01-01T00:00:00Z): minted"
        " created_at and event ids are then the same on every run",
    )
    convert.add_argument(
        "--machine-id",
        type=int,
        metavar="N",
        help=f"machine id of minted event ids, 0..{MAX_MACHINE_ID} (over the config's)",
    )
    _output_flag(convert)
    convert.set_defaults(func=run_convert)

    check = subparsers.add_parser("check", help="validate a rules directory and/or a config file")
    check.add_argument("--rules", type=Path, metavar="DIR", help="rules directory")
    check.add_argument("--config", type=Path, metavar="FILE", help="proxy config file")
    _output_flag(check)
    check.set_defaults(func=run_check)


def _read(path: Path | None) -> bytes:
    if path is None or str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(
            "unreadable_input", f"cannot read {path}: {exc.strerror or exc}"
        ) from None


def _rules_error(exc: RulesError) -> CommandError:
    return CommandError("invalid_rules", "invalid rules", tuple(exc.problems))


class _Writer:
    """Results and errors of one command, in the chosen format."""

    def __init__(self, output: str, out: BinaryIO | None = None):
        self.json = output == "json"
        self.out = out if out is not None else sys.stdout.buffer

    def record(self, fields: dict[str, Any], raw: tuple[str, bytes] | None = None) -> None:
        """One JSON object; `raw` appends a member whose value is already JSON bytes."""
        line = orjson.dumps(fields)
        if raw is not None:
            name, value = raw
            line = line[:-1] + b"," + orjson.dumps(name) + b":" + value + b"}"
        self.out.write(line + b"\n")

    def failure(self, exc: CommandError) -> int:
        if self.json:
            error: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if exc.problems:
                error["problems"] = list(exc.problems)
            self.record({"error": error})
            self.out.flush()
        else:
            print(f"envelope-proxy: {exc.message}", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
        return 2


def _guarded(run: Callable[[argparse.Namespace, _Writer], int]) -> Callable[..., int]:
    def command(args: argparse.Namespace) -> int:
        writer = _Writer(args.output)
        try:
            return run(args, writer)
        except CommandError as exc:
            return writer.failure(exc)

    return command


def _envelope_error(number: int, exc: EnvelopeError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.field is not None:
        error["field"] = exc.field
    if exc.index is not None:
        error["index"] = exc.index
    return {"line": number, "error": error}


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


def _detect(args: argparse.Namespace, writer: _Writer) -> int:
    try:
        engine = Engine(load_rules(args.rules))
    except RulesError as exc:
        raise _rules_error(exc) from None
    documents = split_documents(_read(args.file))
    failed = False
    for number, document in documents:
        try:
            detection = engine.detect(document)
        except EnvelopeError as exc:
            failed = True
            if writer.json:
                writer.record(_envelope_error(number, exc))
            else:
                prefix = f"line {number}: " if len(documents) > 1 else ""
                print(f"{prefix}{exc}", file=sys.stderr)
            continue
        if writer.json:
            fields: dict[str, Any] = {"line": number, "shape": detection.shape}
            if args.explain:
                fields["matched"] = list(detection.matched)
            writer.record(fields)
        else:
            writer.out.write(detection.shape.encode() + b"\n")
            if args.explain:
                writer.out.write(b"".join(f"  {t}\n".encode() for t in detection.matched))
    writer.out.flush()
    return 1 if failed else 0


def _pinned_clock(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise CommandError(
            "invalid_flag",
            f"--now must be an ISO 8601 time with a zone, such as 2026-01-01T00:00:00Z"
            f" (got {text!r})",
        )
    if moment.timestamp() * 1000 < SNOWFLAKE_EPOCH_MS:
        raise CommandError("invalid_flag", f"--now must be 2024-01-01 or later (got {text!r})")
    return moment.astimezone(UTC)


def convert_engine(args: argparse.Namespace) -> Engine:
    """The engine `convert` runs: the config's settings (as serve has them), then the flags."""
    options = EngineOptions()
    rules_dir: Path | None = None
    if args.config is not None:
        from proxy.config import ConfigError, engine_options, load_settings, resolve_machine_id

        try:
            settings = load_settings(args.config)
        except ConfigError as exc:
            raise CommandError("invalid_config", "invalid configuration", exc.problems) from None
        options = engine_options(settings, resolve_machine_id(settings.envelope.machine_id))
        rules_dir = settings.rules_dir
    if args.machine_id is not None:
        if not 0 <= args.machine_id <= MAX_MACHINE_ID:
            raise CommandError(
                "invalid_flag", f"--machine-id must be 0..{MAX_MACHINE_ID} (got {args.machine_id})"
            )
        options = _replace(options, machine_id=args.machine_id)
    clock_ms: Callable[[], int] | None = None
    if args.now is not None:
        moment = _pinned_clock(args.now)
        pinned_ms = int(moment.timestamp() * 1000)
        options = _replace(options, now=lambda: moment)
        clock_ms = lambda: pinned_ms  # noqa: E731 - the minter's clock, in milliseconds
    try:
        rules = load_rules(args.rules if args.rules is not None else rules_dir)
    except RulesError as exc:
        raise _rules_error(exc) from None
    return Engine(rules, options, minter=SnowflakeMinter(options.machine_id, clock_ms))


def _replace(options: EngineOptions, **changes: Any) -> EngineOptions:
    return dataclasses.replace(options, **changes)


def _convert(args: argparse.Namespace, writer: _Writer) -> int:
    engine = convert_engine(args)
    failed = False
    for number, document in split_documents(_read(args.file)):
        try:
            conversion = engine.convert(document, args.to)
        except EnvelopeError as exc:
            failed = True
            if writer.json:
                writer.record(_envelope_error(number, exc))
            else:
                print(f"line {number}: {exc}", file=sys.stderr)
            continue
        # Raw newlines in JSON are always insignificant whitespace (strings cannot hold
        # them), so removing them keeps every value and makes one line per document.
        body = conversion.body.replace(b"\r", b"").replace(b"\n", b"")
        if writer.json:
            fields: dict[str, Any] = {
                "line": number,
                "shape": conversion.shape,
                "target": conversion.target,
                "event_id": conversion.event_id,
                "event_id_minted": conversion.event_id_minted,
            }
            if conversion.batch_size is not None:
                fields["batch_size"] = conversion.batch_size
            writer.record(fields, raw=("body", body))
        else:
            writer.out.write(body + b"\n")
    writer.out.flush()
    return 1 if failed else 0


def _check(args: argparse.Namespace, writer: _Writer) -> int:
    problems: list[str] = []
    report: dict[str, Any] = {}
    if args.config is not None:
        from proxy.config import check_config  # the server's settings loader

        config_problems = check_config(args.config)
        problems += config_problems
        if not config_problems:
            report["config"] = str(args.config)
            if not writer.json:
                print(f"config ok: {args.config}")
    if args.rules is not None or args.config is None:
        try:
            rules = load_rules(args.rules)
        except RulesError as exc:
            problems += exc.problems
        else:
            report["rules"] = {"directory": str(rules.directory), "digest": rules.digest}
            if not writer.json:
                print(f"rules ok: {rules.directory} (digest {rules.digest})")
    if writer.json:
        writer.record({"ok": not problems, **report, "problems": problems})
    else:
        for problem in problems:
            print(problem, file=sys.stderr)
    return 1 if problems else 0


run_detect = _guarded(_detect)
run_convert = _guarded(_convert)
run_check = _guarded(_check)
