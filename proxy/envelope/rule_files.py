"""The rule files as written: strict schemas of the YAML, read with line numbers.

`RuleFileReader` reads one rules directory file by file, remembering the line of every
key and list item, refusing duplicate keys (PyYAML would keep the last silently), and
validating each file against its strict schema, so every problem names a file and line.
What the rules mean, and whether each can ever apply, is `rules.py`'s business.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from proxy.errors import ProblemsError

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
RELEASE = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_Model = TypeVar("_Model", bound=BaseModel)


class RulesError(ProblemsError):
    """A rules directory that cannot be used; `problems` are `file:line: message` lines."""

    problems: list[str]

    def __init__(self, problems: list[str]):
        super().__init__(problems)


# --- the file schemas (strict: unknown keys and wrong types are errors) -------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ShapeModel(_Strict):
    summary: str
    kind: Literal["event", "batch"] = "event"
    required: dict[str, TypeSpec] = Field(default_factory=dict)
    optional: dict[str, TypeSpec] = Field(default_factory=dict)
    exactly_one: list[list[str]] = Field(default_factory=list)
    at_least_one: list[list[str]] = Field(default_factory=list)
    forbidden: list[str] = Field(default_factory=list)
    closed: bool = False
    fields: dict[CanonicalField, list[str]] = Field(default_factory=dict)


class ShapesFile(_Strict):
    order: list[str]
    default_fields: dict[CanonicalField, list[str]]
    shapes: dict[str, ShapeModel]


class TargetKeyModel(_Strict):
    field: CanonicalField
    key: str
    id: Literal["integer", "string"] | None = None
    when_absent: Literal["omit", "null"] = "omit"
    when_null: Literal["keep", "omit"] = "keep"


class BatchModel(_Strict):
    execution_id: Literal["integer", "string"]
    item_keys: dict[Literal["step", "event_type", "context"], str]


class TargetModel(_Strict):
    summary: str
    mint_event_id: bool
    keys: list[TargetKeyModel]
    batch: BatchModel


class TargetsFile(_Strict):
    targets: dict[TargetName, TargetModel]


class ThresholdModel(_Strict):
    min: str
    target: TargetName

    @field_validator("min")
    @classmethod
    def _release(cls, value: str) -> str:
        if not RELEASE.fullmatch(value):
            raise ValueError(f"a release must look like 2.19.1, got {value!r}")
        return value


class VersionsFile(_Strict):
    thresholds: list[ThresholdModel]
    fallback: TargetName


class DeriveRuleModel(_Strict):
    contains: list[str] = Field(min_length=1)
    status: str


class DeriveModel(_Strict):
    rules: list[DeriveRuleModel]
    otherwise: str


class StatusFile(_Strict):
    derive: DeriveModel
    normalise: dict[str, list[str]]


class DefaultsFile(_Strict):
    step: str = Field(min_length=1)
    meta_attempts: int | None = Field(ge=1)
    mint: Literal["auto", "always", "never"]
    normalise_status: bool


# --- reading YAML with line numbers -------------------------------------------------------


class RuleFileReader:
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
