"""Load and validate a rules directory into the compiled `Rules` the engine runs on.

Rules are data (`rules/*.yaml`; `rules/tests/` holds their fixtures, not rules): shapes
and detection order, targets and key orders, version thresholds, the status table,
defaults. Loading is strict: an unknown key, an unknown shape or target name, a wrong type,
or a rule that can never apply is an error naming the file and line (`rule_files.py` reads
and checks each file's form; this module checks what the rules mean and compiles them).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

from packaging.version import InvalidVersion, Version

from proxy.envelope.rule_files import (
    CANONICAL_FIELDS,
    RELEASE,
    CanonicalField,
    DefaultsFile,
    RuleFileReader,
    RulesError,
    ShapeModel,
    ShapesFile,
    StatusFile,
    TargetsFile,
    TypeSpec,
    VersionsFile,
)

RULE_FILES = ("shapes.yaml", "targets.yaml", "versions.yaml", "status.yaml", "defaults.yaml")
# The two bodies the proxy sends upstream (rules/targets.yaml must define both).
CANONICAL_TARGET: Final = "executor_event"  # canonical ExecutorEvent, Rust servers >= 2.19.1
LEGACY_TARGET: Final = "event_request"  # legacy EventRequest, accepted by every legacy server
TARGETS: tuple[str, ...] = (CANONICAL_TARGET, LEGACY_TARGET)

_SOURCE = re.compile(r"(?P<key>[^.#]+)(?:\.(?P<member>[^.#]+)(?:#(?P<part>\d+)/(?P<parts>\d+))?)?")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


# --- the compiled rules the engine runs on ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Where a canonical field comes from: a key, a member of a key's object, or a default."""

    text: str  # as written in the rules, for messages
    key: str  # "" for the default
    member: str | None = None
    part: int | None = None  # split the member's string on ':' into `parts` pieces
    parts: int | None = None

    # Plain attributes rather than properties: they are read on every event.
    is_default: bool = dataclasses.field(init=False)
    is_top_level: bool = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_default", self.key == "")
        object.__setattr__(self, "is_top_level", bool(self.key) and self.member is None)


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """Where a field no top-level key gave comes from: member, split and default sources."""

    field: str
    nested: tuple[Source, ...]  # in order; the first that yields a value wins


_FIRST_BYTES = {
    "string": b'"',
    "object": b"{",
    "array": b"[",
    "boolean": b"tf",
    "null": b"n",
    "integer": b"-0123456789",
    "number": b"-0123456789",
}


@dataclass(frozen=True, slots=True)
class TypeCheck:
    """A key's allowed JSON types, as the first bytes a raw value may start with."""

    key: str
    first_bytes: frozenset[int]
    integral: bool  # numbers must be integers (no fraction, no exponent)

    @classmethod
    def of(cls, key: str, types: frozenset[str]) -> TypeCheck:
        first = frozenset(b for kind in types for b in _FIRST_BYTES[kind])
        return cls(key, first, "integer" in types and "number" not in types)


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    summary: str
    kind: Literal["event", "batch"]
    required: tuple[tuple[str, frozenset[str]], ...]
    optional: tuple[tuple[str, frozenset[str]], ...]
    exactly_one: tuple[frozenset[str], ...]
    at_least_one: tuple[frozenset[str], ...]
    forbidden: frozenset[str]
    closed: bool
    allowed_keys: frozenset[str]
    required_keys: frozenset[str]
    typed: tuple[TypeCheck, ...]  # keys whose JSON type is checked
    key_fields: Mapping[str, str]  # top-level key -> the field it feeds (never passed through)
    nested_plan: tuple[FieldPlan, ...]  # fields that have nested or default sources


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    summary: str
    mint_event_id: bool
    id_type: Literal["integer", "string"]  # how both ids are written
    prefixes: tuple[tuple[str, bytes], ...]  # (field, b',"key":') in output order
    null_when_absent: frozenset[str]  # fields written as null when they have no value
    omit_null: frozenset[str]  # fields left out when their value is null
    written_keys: frozenset[str]
    batch_id: Literal["integer", "string"]
    item_keys: Mapping[str, str]  # canonical item field -> output key


@dataclass(frozen=True, slots=True)
class Defaults:
    step: str
    meta_attempts: int | None
    mint: Literal["auto", "always", "never"]
    normalise_status: bool


@dataclass(frozen=True, slots=True)
class Rules:
    """A validated, compiled rules directory."""

    directory: Path
    digest: str
    shapes: tuple[Shape, ...]  # in detection order
    default_fields: Mapping[str, tuple[Source, ...]]
    targets: Mapping[str, Target]
    thresholds: tuple[tuple[Version, str], ...]
    fallback: str
    derive: tuple[tuple[tuple[str, ...], str], ...]
    derive_otherwise: str
    normalise: Mapping[str, str]  # lower-cased alias -> canonical status
    defaults: Defaults

    def target_for_version(self, version: str | None) -> str:
        """The target for an upstream release; unversioned or unparsable gets the fallback."""
        release = _parse_release(version) if version else None
        if release is None:
            return self.fallback
        for minimum, target in self.thresholds:
            if release >= minimum:
                return target
        return self.fallback


def _parse_release(version: str) -> Version | None:
    """A release as `packaging.version` orders it: `2.19.1-rc.1` sorts below `2.19.1`.

    A semver pre-release PEP 440 cannot spell (`2.19.1-SNAPSHOT`) still sorts below its
    release, as semver says; anything not starting with X.Y.Z is unparsable.
    """
    text = version.strip().removeprefix("v")
    match = RELEASE.match(text)
    if match is None:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        release = f"{match[1]}.{match[2]}.{match[3]}"
        rest = text[match.end() :]
        return Version(release + ".dev0" if rest.startswith("-") else release)


def default_rules_dir() -> Path:
    """The built-in rules: packaged inside an installed copy, or `rules/` in a checkout."""
    packaged = Path(str(resources.files("proxy"))) / "_rules"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "rules"


def load_rules(directory: Path | str | None = None) -> Rules:
    """Load, validate and compile a rules directory (the built-in one when None).

    Only the top-level `*.yaml`/`*.yml` files are rules, and each must be a known one.
    Subdirectories are deliberately not read: `tests/` holds the rules' fixtures for
    `envelope-proxy test`, and a Kubernetes ConfigMap mount adds `..data` directories.
    """
    root = Path(directory) if directory is not None else default_rules_dir()
    if not root.is_dir():
        raise RulesError([f"{root}: not a directory"])
    loader = RuleFileReader(root)
    shapes = loader.model("shapes.yaml", ShapesFile)
    targets = loader.model("targets.yaml", TargetsFile)
    versions = loader.model("versions.yaml", VersionsFile)
    status = loader.model("status.yaml", StatusFile)
    defaults = loader.model("defaults.yaml", DefaultsFile)
    for extra in sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml")):
        if extra.name not in RULE_FILES:
            loader.problem(extra.name, (), f"unknown rules file (expected {', '.join(RULE_FILES)})")
    loader.raise_problems()
    assert shapes
    assert targets
    assert versions
    assert status
    assert defaults
    checker = _Checker(loader)
    compiled = Rules(
        directory=root,
        digest=loader.digest(),
        shapes=checker.shapes(shapes),
        default_fields=checker.fields("shapes.yaml", ("default_fields",), shapes.default_fields),
        targets=checker.targets(targets),
        thresholds=checker.thresholds(versions),
        fallback=versions.fallback,
        derive=checker.derive(status),
        derive_otherwise=status.derive.otherwise,
        normalise=checker.normalise(status),
        defaults=Defaults(
            step=defaults.step,
            meta_attempts=defaults.meta_attempts,
            mint=defaults.mint,
            normalise_status=defaults.normalise_status,
        ),
    )
    loader.raise_problems()
    return compiled


# --- semantic checks: names resolve, and every rule can apply -----------------------------


class _Checker:
    def __init__(self, loader: RuleFileReader):
        self.loader = loader

    def shapes(self, file: ShapesFile) -> tuple[Shape, ...]:
        name = "shapes.yaml"
        seen: set[str] = set()
        for index, shape_name in enumerate(file.order):
            if shape_name not in file.shapes:
                self.loader.problem(name, ("order", index), f"order: unknown shape {shape_name!r}")
            if shape_name in seen:
                self.loader.problem(name, ("order", index), f"order: {shape_name!r} listed twice")
            seen.add(shape_name)
        for shape_name in file.shapes:
            if shape_name not in seen:
                self.loader.problem(
                    name,
                    ("shapes", shape_name),
                    f"shape {shape_name!r} is not in `order`, so it can never be detected",
                )
        defaults = self.fields(name, ("default_fields",), file.default_fields)
        missing = [f for f in CANONICAL_FIELDS if f not in defaults]
        if missing:
            self.loader.problem(
                name, ("default_fields",), f"default_fields lacks {', '.join(missing)}"
            )
        compiled: list[Shape] = []
        for shape_name in file.order:
            model = file.shapes.get(shape_name)
            if model is None:
                continue
            shape = self._shape(shape_name, model, defaults)
            for earlier in compiled:
                if _always_caught(shape, earlier):
                    self.loader.problem(
                        name,
                        ("order", file.order.index(shape_name)),
                        f"shape {shape_name!r} can never be detected: every body it accepts"
                        f" is detected first as {earlier.name!r}; move it earlier in `order`",
                    )
            compiled.append(shape)
        return tuple(compiled)

    def _shape(
        self, shape_name: str, model: ShapeModel, defaults: Mapping[str, tuple[Source, ...]]
    ) -> Shape:
        where = ("shapes", shape_name)
        if not _NAME.fullmatch(shape_name):
            self.loader.problem(
                "shapes.yaml", where, f"shape name {shape_name!r} must be lower_snake_case"
            )
        self._never_matches(shape_name, model)
        fields = dict(defaults)
        fields.update(self.fields("shapes.yaml", (*where, "fields"), model.fields))
        feeds: dict[str, str] = {}
        for field, sources in fields.items():
            for source in sources:
                if source.is_top_level and feeds.setdefault(source.key, field) != field:
                    self.loader.problem(
                        "shapes.yaml",
                        (*where, "fields", field),
                        f"shape {shape_name!r}: key {source.key!r} feeds both"
                        f" {feeds[source.key]} and {field}",
                    )
        required = tuple((key, _types(spec)) for key, spec in model.required.items())
        optional = tuple((key, _types(spec)) for key, spec in model.optional.items())
        allowed = {*model.required, *model.optional}
        for group in (*model.exactly_one, *model.at_least_one):
            allowed.update(group)
        return Shape(
            name=shape_name,
            summary=model.summary,
            kind=model.kind,
            required=required,
            optional=optional,
            exactly_one=tuple(frozenset(group) for group in model.exactly_one),
            at_least_one=tuple(frozenset(group) for group in model.at_least_one),
            forbidden=frozenset(model.forbidden),
            closed=model.closed,
            allowed_keys=frozenset(allowed),
            required_keys=frozenset(model.required),
            typed=tuple(
                TypeCheck.of(key, types)
                for key, types in (*required, *optional)
                if "any" not in types
            ),
            key_fields={
                source.key: field
                for field, sources in fields.items()
                for source in sources
                if source.is_top_level
            },
            nested_plan=tuple(
                FieldPlan(field=field, nested=tuple(s for s in sources if not s.is_top_level))
                for field, sources in fields.items()
                if any(not s.is_top_level for s in sources)
            ),
        )

    def _never_matches(self, shape_name: str, model: ShapeModel) -> None:
        where = ("shapes", shape_name)
        forbidden = set(model.forbidden)
        for key in model.required:
            if key in forbidden:
                self.loader.problem(
                    "shapes.yaml",
                    (*where, "forbidden"),
                    f"shape {shape_name!r} both requires and forbids {key!r}; it can never match",
                )
        for kind, groups in (
            ("exactly_one", model.exactly_one),
            ("at_least_one", model.at_least_one),
        ):
            for index, group in enumerate(groups):
                if not group or all(key in forbidden for key in group):
                    self.loader.problem(
                        "shapes.yaml",
                        (*where, kind, index),
                        f"shape {shape_name!r}: {kind} group {group} can never be satisfied",
                    )
                if kind == "exactly_one" and sum(key in model.required for key in group) > 1:
                    self.loader.problem(
                        "shapes.yaml",
                        (*where, kind, index),
                        f"shape {shape_name!r} requires several keys of exactly_one group {group}",
                    )

    def fields(
        self, file: str, where: tuple[Any, ...], fields: Mapping[CanonicalField, list[str]]
    ) -> dict[str, tuple[Source, ...]]:
        compiled: dict[str, tuple[Source, ...]] = {}
        for field, texts in fields.items():
            sources: list[Source] = []
            for index, text in enumerate(texts):
                location = (*where, field, index)
                source = self._source(text)
                if source is None:
                    self.loader.problem(file, location, f"{field}: bad source {text!r}")
                    continue
                if source.is_default and field != "step":
                    self.loader.problem(file, location, f"{field}: only step has a default")
                if source.is_default and index != len(texts) - 1:
                    self.loader.problem(
                        file, location, f"{field}: sources after `default` can never apply"
                    )
                if source in sources:
                    self.loader.problem(file, location, f"{field}: source {text!r} listed twice")
                if source.is_top_level and any(not s.is_top_level for s in sources):
                    self.loader.problem(
                        file, location, f"{field}: top-level keys must come before nested sources"
                    )
                sources.append(source)
            if not texts:
                self.loader.problem(file, (*where, field), f"{field}: no sources")
            compiled[field] = tuple(sources)
        return compiled

    @staticmethod
    def _source(text: str) -> Source | None:
        if text == "default":
            return Source(text, key="")
        match = _SOURCE.fullmatch(text)
        if match is None:
            return None
        if match["parts"] is None:
            return Source(text, key=match["key"], member=match["member"])
        part, parts = int(match["part"]), int(match["parts"])
        if not 0 <= part < parts:
            return None
        return Source(text, key=match["key"], member=match["member"], part=part, parts=parts)

    def targets(self, file: TargetsFile) -> dict[str, Target]:
        compiled: dict[str, Target] = {}
        for name in TARGETS:
            if name not in file.targets:
                self.loader.problem("targets.yaml", ("targets",), f"target {name!r} is missing")
        for name, model in file.targets.items():
            where = ("targets", name, "keys")
            fields: list[str] = [key.field for key in model.keys]
            keys = [key.key for key in model.keys]
            for field in CANONICAL_FIELDS:
                if fields.count(field) != 1:
                    self.loader.problem(
                        "targets.yaml",
                        where,
                        f"target {name!r} must write field {field!r} exactly once",
                    )
            for index, key in enumerate(model.keys):
                if keys.count(key.key) > 1:
                    self.loader.problem(
                        "targets.yaml", (*where, index), f"output key {key.key!r} written twice"
                    )
                if (key.id is not None) != (key.field in ("execution_id", "event_id")):
                    self.loader.problem(
                        "targets.yaml",
                        (*where, index),
                        f"{key.field}: `id` is required for id fields and only for them",
                    )
            id_types = {key.id for key in model.keys if key.id is not None}
            if len(id_types) > 1:
                self.loader.problem(
                    "targets.yaml", where, f"target {name!r} must write both ids the same way"
                )
            compiled[name] = Target(
                name=name,
                summary=model.summary,
                mint_event_id=model.mint_event_id,
                id_type=min(id_types) if id_types else "integer",
                prefixes=tuple(
                    (key.field, b"," + json.dumps(key.key).encode() + b":") for key in model.keys
                ),
                null_when_absent=frozenset(k.field for k in model.keys if k.when_absent == "null"),
                omit_null=frozenset(k.field for k in model.keys if k.when_null == "omit"),
                written_keys=frozenset(keys),
                batch_id=model.batch.execution_id,
                item_keys={str(field): key for field, key in model.batch.item_keys.items()},
            )
        return compiled

    def thresholds(self, file: VersionsFile) -> tuple[tuple[Version, str], ...]:
        compiled: list[tuple[Version, str]] = []
        for index, threshold in enumerate(file.thresholds):
            release = _parse_release(threshold.min)
            assert release is not None
            if compiled and release >= compiled[-1][0]:
                self.loader.problem(
                    "versions.yaml",
                    ("thresholds", index),
                    f"threshold {threshold.min} can never apply: an earlier threshold"
                    f" ({compiled[-1][0]}) already covers it;"
                    " list thresholds from the highest down",
                )
            compiled.append((release, threshold.target))
        return tuple(compiled)

    def derive(self, file: StatusFile) -> tuple[tuple[tuple[str, ...], str], ...]:
        earlier: list[str] = []
        compiled: list[tuple[tuple[str, ...], str]] = []
        for index, rule in enumerate(file.derive.rules):
            live = [text for text in rule.contains if not any(old in text for old in earlier)]
            if not live:
                self.loader.problem(
                    "status.yaml",
                    ("derive", "rules", index),
                    f"derive rule {rule.contains} can never apply: earlier rules match first",
                )
            earlier.extend(rule.contains)
            compiled.append((tuple(rule.contains), rule.status))
        return tuple(compiled)

    def normalise(self, file: StatusFile) -> dict[str, str]:
        table: dict[str, str] = {}
        for canonical, aliases in file.normalise.items():
            for index, alias in enumerate(aliases):
                lowered = alias.lower()
                if lowered in table:
                    self.loader.problem(
                        "status.yaml",
                        ("normalise", canonical, index),
                        f"status {alias!r} is already mapped to {table[lowered]!r};"
                        " this entry can never apply",
                    )
                    continue
                table[lowered] = canonical
        return table


def _always_caught(later: Shape, earlier: Shape) -> bool:
    """Whether every body `later` accepts also satisfies `earlier` (checked first).

    Conservative: true only when it is certain from the traits alone.
    """
    if earlier.closed or earlier.exactly_one or not earlier.forbidden <= later.forbidden:
        return False
    if not earlier.required_keys <= later.required_keys:
        return False
    if any(group.isdisjoint(later.required_keys) for group in earlier.at_least_one):
        return False
    later_checks = {check.key: check for check in later.typed}
    for check in earlier.typed:
        narrower = later_checks.get(check.key)
        if narrower is None or not narrower.first_bytes <= check.first_bytes:
            return False
        if check.integral and not narrower.integral:
            return False
    return True


def _types(spec: TypeSpec) -> frozenset[str]:
    return frozenset([spec] if isinstance(spec, str) else spec)
