"""Load and validate a rules directory into the compiled `Rules` the engine runs on.

Rules are data (`rules/*.yaml`): shapes and detection order, targets and key orders,
version thresholds, the status table, defaults. Loading is strict: an unknown key, an
unknown shape or target name, a wrong type, or a rule that can never apply is an error
naming the file and line. YAML is read node by node so duplicate keys are caught too
(PyYAML would keep the last one silently).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

RULE_FILES = ("shapes.yaml", "targets.yaml", "versions.yaml", "status.yaml", "defaults.yaml")
TARGETS: tuple[str, ...] = ("executor_event", "event_request")

CanonicalField = Literal[
    "execution_id",
    "event_type",
    "step",
    "status",
    "created_at",
    "context",
    "event_id",
    "worker_id",
    "meta",
]
CANONICAL_FIELDS: tuple[str, ...] = CanonicalField.__args__  # type: ignore[attr-defined]
TargetName = Literal["executor_event", "event_request"]
JsonTypeName = Literal["any", "string", "integer", "number", "boolean", "null", "object", "array"]
TypeSpec = JsonTypeName | list[JsonTypeName]

_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_SOURCE = re.compile(r"(?P<key>[^.#]+)(?:\.(?P<member>[^.#]+)(?:#(?P<part>\d+)/(?P<parts>\d+))?)?")
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_Model = TypeVar("_Model", bound=BaseModel)


class RulesError(Exception):
    """A rules directory that cannot be used; `problems` are `file:line: message` lines."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# --- the file schemas (strict: unknown keys and wrong types are errors) -------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _ShapeModel(_Strict):
    summary: str
    kind: Literal["event", "batch"] = "event"
    required: dict[str, TypeSpec] = Field(default_factory=dict)
    optional: dict[str, TypeSpec] = Field(default_factory=dict)
    exactly_one: list[list[str]] = Field(default_factory=list)
    at_least_one: list[list[str]] = Field(default_factory=list)
    forbidden: list[str] = Field(default_factory=list)
    closed: bool = False
    fields: dict[CanonicalField, list[str]] = Field(default_factory=dict)


class _ShapesFile(_Strict):
    order: list[str]
    default_fields: dict[CanonicalField, list[str]]
    shapes: dict[str, _ShapeModel]


class _TargetKeyModel(_Strict):
    field: CanonicalField
    key: str
    id: Literal["integer", "string"] | None = None
    when_absent: Literal["omit", "null"] = "omit"
    when_null: Literal["keep", "omit"] = "keep"


class _BatchModel(_Strict):
    execution_id: Literal["integer", "string"]
    item_keys: dict[Literal["step", "event_type", "context"], str]


class _TargetModel(_Strict):
    summary: str
    mint_event_id: bool
    keys: list[_TargetKeyModel]
    batch: _BatchModel


class _TargetsFile(_Strict):
    targets: dict[TargetName, _TargetModel]


class _ThresholdModel(_Strict):
    min: str
    target: TargetName

    @field_validator("min")
    @classmethod
    def _release(cls, value: str) -> str:
        if not _VERSION.fullmatch(value):
            raise ValueError(f"a release must look like 2.19.1, got {value!r}")
        return value


class _VersionsFile(_Strict):
    thresholds: list[_ThresholdModel]
    fallback: TargetName


class _DeriveRuleModel(_Strict):
    contains: list[str] = Field(min_length=1)
    status: str


class _DeriveModel(_Strict):
    rules: list[_DeriveRuleModel]
    otherwise: str


class _StatusFile(_Strict):
    derive: _DeriveModel
    normalise: dict[str, list[str]]


class _DefaultsFile(_Strict):
    step: str = Field(min_length=1)
    meta_attempts: int | None = Field(ge=1)
    mint: Literal["auto", "always", "never"]
    normalise_status: bool


# --- the compiled rules the engine runs on ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Where a canonical field comes from: a key, a member of a key's object, or a default."""

    key: str  # "" for the default
    member: str | None = None
    part: int | None = None  # split the member's string on ':' into `parts` pieces
    parts: int | None = None

    @property
    def is_default(self) -> bool:
        return self.key == ""

    @property
    def is_top_level(self) -> bool:
        return bool(self.key) and self.member is None

    def describe(self) -> str:
        if self.is_default:
            return "the default"
        if self.member is None:
            return self.key
        split = f" (part {self.part} of {self.parts} split on ':')" if self.parts else ""
        return f"{self.key}.{self.member}{split}"


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """How one canonical field is found: top-level keys first, then nested sources."""

    field: str
    keys: tuple[str, ...]  # top-level keys; two of them present is a conflict
    nested: tuple[Source, ...]  # member, split and default sources, in order


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
    thresholds: tuple[tuple[tuple[int, int, int], str], ...]
    fallback: str
    derive: tuple[tuple[tuple[str, ...], str], ...]
    derive_otherwise: str
    normalise: Mapping[str, str]  # lower-cased alias -> canonical status
    defaults: Defaults

    def shape(self, name: str) -> Shape:
        for shape in self.shapes:
            if shape.name == name:
                return shape
        raise KeyError(name)

    def target_for_version(self, version: str | None) -> str:
        """The target for an upstream release; unversioned or unparsable gets the fallback."""
        release = _parse_release(version) if version else None
        if release is None:
            return self.fallback
        for minimum, target in self.thresholds:
            if release >= minimum:
                return target
        return self.fallback


def _parse_release(version: str) -> tuple[int, int, int] | None:
    match = _VERSION.match(version.strip().removeprefix("v"))
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3])


def default_rules_dir() -> Path:
    """The built-in rules: packaged inside an installed copy, or `rules/` in a checkout."""
    packaged = Path(str(resources.files("proxy"))) / "_rules"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "rules"


def load_rules(directory: Path | str | None = None) -> Rules:
    """Load, validate and compile a rules directory (the built-in one when None)."""
    root = Path(directory) if directory is not None else default_rules_dir()
    if not root.is_dir():
        raise RulesError([f"{root}: not a directory"])
    loader = _Loader(root)
    shapes = loader.model("shapes.yaml", _ShapesFile)
    targets = loader.model("targets.yaml", _TargetsFile)
    versions = loader.model("versions.yaml", _VersionsFile)
    status = loader.model("status.yaml", _StatusFile)
    defaults = loader.model("defaults.yaml", _DefaultsFile)
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


# --- reading YAML with line numbers -------------------------------------------------------


class _Loader:
    """Reads rule files, remembering the line of every mapping key and list item."""

    def __init__(self, root: Path):
        self.root = root
        self.problems: list[str] = []
        self._lines: dict[str, dict[tuple[Any, ...], int]] = {}
        self._texts: list[bytes] = []

    def model(self, name: str, model: type[_Model]) -> _Model | None:
        path = self.root / name
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            self.problem(name, (), "missing rules file")
            return None
        self._texts.append(name.encode() + b"\0" + text)
        lines: dict[tuple[Any, ...], int] = {}
        self._lines[name] = lines
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            self.problems.append(f"{self.root / name}:{line}: invalid YAML: {exc}")
            return None
        if node is None:
            self.problem(name, (), "the file is empty")
            return None
        data = self._plain(name, node, (), lines)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors():
                location = tuple(error["loc"])
                where = ".".join(str(part) for part in location) or "(top)"
                message = error["msg"]
                if error["type"] == "extra_forbidden":
                    message = "unknown key"
                elif error["type"] == "literal_error":
                    message = f"unknown name {error['input']!r}: {error['msg']}"
                self.problem(name, location, f"{where}: {message}")
            return None

    def _plain(
        self, name: str, node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]
    ) -> Any:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = yaml.SafeLoader(b"").construct_object(key_node)  # scalar keys only
                if key in result:
                    line = key_node.start_mark.line + 1
                    self.problems.append(f"{self.root / name}:{line}: duplicate key {key!r}")
                    continue
                lines[(*path, key)] = key_node.start_mark.line + 1
                result[key] = self._plain(name, value_node, (*path, key), lines)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [
                self._plain(name, item, (*path, index), lines)
                for index, item in enumerate(node.value)
            ]
        return yaml.SafeLoader(b"").construct_object(node)

    def problem(self, name: str, location: tuple[Any, ...], message: str) -> None:
        lines = self._lines.get(name, {})
        line = 1
        for cut in range(len(location), -1, -1):
            if location[:cut] in lines:
                line = lines[location[:cut]]
                break
        self.problems.append(f"{self.root / name}:{line}: {message}")

    def raise_problems(self) -> None:
        if self.problems:
            raise RulesError(self.problems)

    def digest(self) -> str:
        return hashlib.sha256(b"\0\0".join(self._texts)).hexdigest()[:16]


# --- semantic checks: names resolve, and every rule can apply -----------------------------


class _Checker:
    def __init__(self, loader: _Loader):
        self.loader = loader

    def shapes(self, file: _ShapesFile) -> tuple[Shape, ...]:
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
        compiled = []
        for shape_name in file.order:
            model = file.shapes.get(shape_name)
            if model is not None:
                compiled.append(self._shape(shape_name, model, defaults))
        return tuple(compiled)

    def _shape(
        self, shape_name: str, model: _ShapeModel, defaults: Mapping[str, tuple[Source, ...]]
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
                FieldPlan(
                    field=field, keys=(), nested=tuple(s for s in sources if not s.is_top_level)
                )
                for field, sources in fields.items()
                if any(not s.is_top_level for s in sources)
            ),
        )

    def _never_matches(self, shape_name: str, model: _ShapeModel) -> None:
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
            return Source(key="")
        match = _SOURCE.fullmatch(text)
        if match is None:
            return None
        if match["parts"] is None:
            return Source(key=match["key"], member=match["member"])
        part, parts = int(match["part"]), int(match["parts"])
        if not 0 <= part < parts:
            return None
        return Source(key=match["key"], member=match["member"], part=part, parts=parts)

    def targets(self, file: _TargetsFile) -> dict[str, Target]:
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

    def thresholds(self, file: _VersionsFile) -> tuple[tuple[tuple[int, int, int], str], ...]:
        compiled: list[tuple[tuple[int, int, int], str]] = []
        for index, threshold in enumerate(file.thresholds):
            release = _parse_release(threshold.min)
            assert release is not None
            if compiled and release >= compiled[-1][0]:
                self.loader.problem(
                    "versions.yaml",
                    ("thresholds", index),
                    f"threshold {threshold.min} can never apply: an earlier threshold"
                    f" ({'.'.join(map(str, compiled[-1][0]))}) already covers it;"
                    " list thresholds from the highest down",
                )
            compiled.append((release, threshold.target))
        return tuple(compiled)

    def derive(self, file: _StatusFile) -> tuple[tuple[tuple[str, ...], str], ...]:
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

    def normalise(self, file: _StatusFile) -> dict[str, str]:
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


def _types(spec: TypeSpec) -> frozenset[str]:
    return frozenset([spec] if isinstance(spec, str) else spec)
