"""`envelope-proxy quarantine list | show | check | replay`: the quarantine on the command line.

The store is read from `--dir`, else from the configuration's `quarantine.dir` (`--config
FILE` and `ENVELOPE_PROXY_*`, as `serve` reads them). It may be read while a proxy writes
to it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from proxy.config import ConfigError, Settings, load_settings
from proxy.envelope import (
    CANONICAL_TARGET,
    LEGACY_TARGET,
    TARGETS,
    Engine,
    EnvelopeError,
    Rules,
    RulesError,
)
from proxy.quarantine import journal as j
from proxy.quarantine.records import Filter, body_of, parse_time
from proxy.quarantine.replay import (
    Progress,
    Replayer,
    ReplayOptions,
    Upstream,
    convert_record,
    probe_target,
)
from proxy.quarantine.store import find, iter_records, newest_first
from proxy.server.state import build_engine

PROG = "envelope-proxy quarantine"
PROBE_SECONDS = 5.0  # the version question before a replay


class _Usage(Exception):
    """A problem with what was asked: printed, exit status 2."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "quarantine",
        help="look at, check and replay the bodies the proxy refused",
        description="Read the quarantine store (quarantine.dir) of a proxy.",
    )
    commands = parser.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION")

    def common(sub: argparse.ArgumentParser, *, filters: bool = True) -> None:
        sub.add_argument("--dir", type=Path, metavar="DIR", help="quarantine directory")
        sub.add_argument(
            "--config", type=Path, metavar="FILE", help="proxy config (its quarantine.dir)"
        )
        if filters:
            sub.add_argument("--client", help="only records of this client label")
            sub.add_argument("--code", help="only records refused with this code")
            sub.add_argument("--since", metavar="TIME", help="received at or after (RFC 3339)")
            sub.add_argument("--until", metavar="TIME", help="received before (RFC 3339)")

    listing = commands.add_parser("list", help="list quarantined records, newest first")
    common(listing)
    listing.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (100)")
    listing.add_argument("--output", choices=("table", "json"), default="table")
    listing.set_defaults(func=run_list)

    show = commands.add_parser("show", help="one record as JSON (or its exact body: --body)")
    common(show, filters=False)
    show.add_argument("id", help="the record id")
    show.add_argument("--body", action="store_true", help="write the body bytes only")
    show.set_defaults(func=run_show)

    check = commands.add_parser(
        "check", help="dry run: which records the given rules accept now, and what they become"
    )
    common(check)
    check.add_argument("--rules", type=Path, metavar="DIR", help="rules to check against")
    check.add_argument("--to", choices=TARGETS, help="target (default: each record's)")
    check.add_argument("--output", choices=("table", "json"), default="table")
    check.set_defaults(func=run_check)

    replay = commands.add_parser(
        "replay", help="send the records the current rules accept to the upstream, once each"
    )
    common(replay)
    replay.add_argument("--upstream", required=True, metavar="URL", help="NoETL control plane")
    replay.add_argument("--rules", type=Path, metavar="DIR", help="rules (default: config's)")
    replay.add_argument(
        "--upstream-version",
        metavar="auto|v1|v2|X.Y.Z",
        help="as upstream.version: auto probes the upstream once",
    )
    replay.add_argument(
        "--rate", type=float, default=10.0, metavar="N", help="sends per second at most (10)"
    )
    replay.add_argument(
        "--journal", type=Path, metavar="FILE", help=f"replay journal (DIR/{j.JOURNAL_NAME})"
    )
    replay.add_argument(
        "--resend-uncertain",
        action="store_true",
        help="also send records whose earlier send may or may not have been stored",
    )
    replay.set_defaults(func=run_replay)


def _settings(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> Settings:
    try:
        return load_settings(args.config, overrides)
    except ConfigError as exc:
        raise _Usage("invalid configuration:\n  " + "\n  ".join(exc.problems)) from None


def _directory(args: argparse.Namespace) -> Path:
    if args.dir is not None:
        directory: Path = args.dir
    else:
        configured = _settings(args).quarantine.dir
        if configured is None:
            raise _Usage("no quarantine directory: give --dir or a config with quarantine.dir")
        directory = configured
    if not directory.is_dir():
        raise _Usage(f"{directory}: not a directory")
    return directory


def _filter(args: argparse.Namespace) -> Filter:
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        raise _Usage(f"--since/--until: {exc}") from None
    return Filter(client=args.client, code=args.code, since=since, until=until)


def _selected(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    flt = _filter(args)
    return (record for record in iter_records(_directory(args)) if flt.matches(record))


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in rows
    )


def _json_line(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data).decode() + "\n")


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except _Usage as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 2

    return wrapper


@_guarded
def run_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise _Usage("--limit must be at least 1")
    page = newest_first(_directory(args), _filter(args), limit=args.limit)
    shown, more = page.records, page.next is not None
    if args.output == "json":
        _json_line({"records": shown, "more": more})
        return 0
    rows = [("ID", "RECEIVED", "CLIENT", "PATH", "SHAPE", "CODE", "FIELD", "BYTES")]
    for r in shown:
        rows.append(
            (
                str(r["id"]),
                str(r.get("received_at")),
                str(r.get("client")),
                str(r.get("path")),
                str(r.get("shape") or "-"),
                str(r.get("code")),
                str(r.get("field") or "-"),
                str(r.get("size")),
            )
        )
    sys.stdout.write(_table(rows))
    if not shown:
        print("(no quarantined records)")
    elif more:
        print("(older records not shown; raise --limit)")
    return 0


@_guarded
def run_show(args: argparse.Namespace) -> int:
    record = find(_directory(args), args.id)
    if record is None:
        print(f"{PROG}: no record {args.id}", file=sys.stderr)
        return 1
    if args.body:
        sys.stdout.buffer.write(body_of(record))
        sys.stdout.buffer.flush()
        return 0
    sys.stdout.write(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def _engine(args: argparse.Namespace, overrides: dict[str, Any]) -> tuple[Settings, Rules, Engine]:
    if args.rules is not None:
        overrides["rules_dir"] = args.rules
    settings = _settings(args, overrides)
    try:
        rules, engine = build_engine(settings)
    except RulesError as exc:
        raise _Usage(f"invalid rules:\n{exc}") from None
    return settings, rules, engine


@_guarded
def run_check(args: argparse.Namespace) -> int:
    _, _, engine = _engine(args, {})
    accepted = refused = 0
    rows = [("ID", "CODE THEN", "NOW", "SHAPE", "TARGET")]
    for record in _selected(args):
        target = args.to or str(record.get("target") or CANONICAL_TARGET)
        try:
            conv = convert_record(engine, record, target)
        except EnvelopeError as err:
            refused += 1
            outcome: dict[str, Any] = {"accepted": False, "code": err.code, "field": err.field}
            rows.append((record["id"], str(record.get("code")), err.code, "-", target))
        else:
            accepted += 1
            outcome = {
                "accepted": True,
                "shape": conv.shape,
                "converted": orjson.loads(conv.body),
            }
            rows.append((record["id"], str(record.get("code")), "accepted", conv.shape, target))
        if args.output == "json":
            _json_line({"id": record["id"], "was": record.get("code"), "target": target, **outcome})
    if args.output == "table":
        sys.stdout.write(_table(rows))
        print(f"{accepted} would now be accepted, {refused} still refused (nothing was sent)")
    return 0


@_guarded
def run_replay(args: argparse.Namespace) -> int:
    if not args.rate > 0:
        raise _Usage("--rate must be above 0")
    directory = _directory(args)
    overrides: dict[str, Any] = {"upstream.url": args.upstream}
    if args.upstream_version is not None:
        overrides["upstream.version"] = args.upstream_version
    settings, rules, engine = _engine(args, overrides)
    records = list(_selected(args))
    journal = j.ReplayJournal(args.journal or directory / j.JOURNAL_NAME)
    try:
        journal.open()
    except (j.JournalBusy, OSError) as exc:
        raise _Usage(str(exc)) from None
    replayer = Replayer(
        engine=engine,
        target=LEGACY_TARGET,  # until the upstream is asked (below)
        upstream=settings.upstream.url,
        journal=journal,
        options=ReplayOptions(
            rate=args.rate,
            resend_uncertain=args.resend_uncertain,
            timeout_seconds=settings.upstream.timeout_seconds,
            connect_timeout_seconds=settings.upstream.connect_timeout_seconds,
        ),
    )
    progress = Progress(len(records))
    interrupted = False
    try:
        asyncio.run(_replay(replayer, settings, rules, records, progress))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.end()
        journal.close()
    summary = replayer.summary
    where = f"replay to {settings.upstream.url} as {replayer.target}"
    print(f"{where}{' (interrupted)' if interrupted else ''}: {summary.line()}")
    if interrupted:
        return 130
    return 1 if summary.upstream_failed else 0


async def _replay(
    replayer: Replayer,
    settings: Settings,
    rules: Rules,
    records: list[dict[str, Any]],
    progress: Progress,
) -> None:
    upstream = Upstream.open(
        settings.upstream.url,
        connect_timeout=settings.upstream.connect_timeout_seconds,
        timeout=min(settings.upstream.timeout_seconds, PROBE_SECONDS),
    )
    try:
        replayer.target, _ = await probe_target(upstream, settings, rules)
    finally:
        upstream.pool.close()
    await replayer.run(records, progress)
