"""`envelope-proxy test DIR [--rules RULES]`: input -> expected-output fixtures for a rules set.

Every `*.yaml` file under DIR (subfolders included) holds a list of cases:

    tests:
      - name: emit_request takes node_name as its step
        endpoint: event            # event (POST /api/events, default) or batch
        target: executor_event     # or event_request (default executor_event)
        input: {execution_id: "1", event_type: call.done, node_name: fetch}
        # or input_json: '{"execution_id":"1", ...}'  (the exact bytes, e.g. a repeated key)
        expect:
          shape: emit_request      # the detected shape
          output: {...}            # the converted body, compared as JSON values
      - name: a body of no known shape is refused
        input: {hello: world}
        expect:
          error: unknown_shape     # the refusal code
          field: null              # optional: the field the refusal names

Each case runs on a fresh engine with a fixed clock (`now`, default 2026-01-01T00:00:00Z)
and machine id 0, so stamped times and minted event ids are the same on every run. The
engine is the one `serve` builds (`mint: auto`, status normalisation as the rules say).
Exit status: 0 when every case passes, 1 when one fails, 2 when a fixture or the rules
cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from proxy.envelope import (
    CANONICAL_TARGET,
    Engine,
    EngineOptions,
    EnvelopeError,
    Rules,
    RulesError,
)
from proxy.envelope import load_rules as load_rules_dir
from proxy.envelope.ids import SnowflakeMinter
from proxy.envelope.rule_files import TargetName

DEFAULT_NOW = datetime(2026, 1, 1, tzinfo=UTC)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Expect(_Strict):
    shape: str | None = None
    output: Any = None
    error: str | None = None
    field: str | None = None

    @model_validator(mode="after")
    def _one_outcome(self) -> Expect:
        if (self.error is None) == (self.output is None):
            raise ValueError("expect needs either output (with shape) or error")
        if self.error is None and self.shape is None:
            raise ValueError("expect.output needs expect.shape")
        return self


class Case(_Strict):
    name: str = Field(min_length=1)
    endpoint: Literal["event", "batch"] = "event"
    target: TargetName = CANONICAL_TARGET
    input: Any = None
    input_json: str | None = None
    now: datetime = DEFAULT_NOW
    expect: Expect

    @model_validator(mode="after")
    def _one_input(self) -> Case:
        if (self.input is None) == (self.input_json is None):
            raise ValueError("give either input or input_json")
        return self

    def body(self) -> bytes:
        if self.input_json is not None:
            return self.input_json.encode("utf-8")
        return orjson.dumps(self.input)


class FixtureFile(_Strict):
    tests: list[Case] = Field(min_length=1)


class FixtureError(Exception):
    """Fixtures that cannot be read; one line per problem."""


@dataclass(frozen=True, slots=True)
class Result:
    file: Path
    case: Case
    problem: str | None  # None: passed


def load_fixtures(directory: Path) -> list[tuple[Path, Case]]:
    """Every case under `directory`, file by file in name order."""
    if not directory.is_dir():
        raise FixtureError(f"{directory}: not a directory")
    files = sorted(directory.rglob("*.yaml")) + sorted(directory.rglob("*.yml"))
    if not files:
        raise FixtureError(f"{directory}: no *.yaml fixture files")
    cases: list[tuple[Path, Case]] = []
    problems: list[str] = []
    for path in files:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            parsed = FixtureFile.model_validate(data)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                where = ".".join(str(part) for part in error["loc"])
                problems.append(f"{path}: {where}: {error['msg']}")
            continue
        cases += [(path, case) for case in parsed.tests]
    if problems:
        raise FixtureError("\n".join(problems))
    return cases


def run_case(rules: Rules, case: Case) -> str | None:
    """None when the case passes, else what differs."""
    moment_ms = int(case.now.timestamp() * 1000)
    minter = SnowflakeMinter(0, clock_ms=lambda: moment_ms)
    engine = Engine(rules, EngineOptions(now=lambda: case.now), minter=minter)
    convert = engine.convert_batch if case.endpoint == "batch" else engine.convert_event
    expect = case.expect
    try:
        conv = convert(case.body(), case.target)
    except EnvelopeError as err:
        if expect.error is None:
            return f"refused with {err.code} ({err.message}); expected shape {expect.shape}"
        if err.code != expect.error:
            return f"refused with {err.code} ({err.message}); expected {expect.error}"
        if "field" in expect.model_fields_set and err.field != expect.field:
            return f"refused naming field {err.field!r}; expected {expect.field!r}"
        return None
    if expect.error is not None:
        return f"accepted as {conv.shape}; expected refusal {expect.error}"
    if conv.shape != expect.shape:
        return f"detected {conv.shape}; expected {expect.shape}"
    output = orjson.loads(conv.body)
    if output != expect.output:
        return (
            "output differs:\n      got:      "
            + orjson.dumps(output).decode()
            + "\n      expected: "
            + orjson.dumps(expect.output).decode()
        )
    return None


def run_fixtures(rules: Rules, cases: list[tuple[Path, Case]]) -> list[Result]:
    return [Result(path, case, run_case(rules, case)) for path, case in cases]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "test",
        help="run input -> expected-output fixtures against a rules directory",
        description="Run every fixture under DIR against the rules (built-in by default).",
    )
    parser.add_argument("dir", type=Path, metavar="DIR", help="folder of *.yaml fixtures")
    parser.add_argument("--rules", type=Path, metavar="RULES", help="rules directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        rules = load_rules_dir(args.rules)
    except RulesError as exc:
        print(f"envelope-proxy test: invalid rules:\n{exc}", file=sys.stderr)
        return 2
    try:
        cases = load_fixtures(args.dir)
    except FixtureError as exc:
        print(f"envelope-proxy test: invalid fixtures:\n{exc}", file=sys.stderr)
        return 2
    results = run_fixtures(rules, cases)
    failed = 0
    for result in results:
        where = f"{result.file.relative_to(args.dir)}: {result.case.name}"
        if result.problem is None:
            print(f"ok    {where}")
        else:
            failed += 1
            print(f"FAIL  {where}\n      {result.problem}")
    print(
        f"{len(results) - failed} passed, {failed} failed "
        f"(rules {rules.directory}, digest {rules.digest})"
    )
    return 1 if failed else 0
