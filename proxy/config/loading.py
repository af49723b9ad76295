"""Loading: defaults < YAML file < `ENVELOPE_PROXY_*` env < flags, as one `Settings`.

The file is read with a loader that refuses duplicate keys; env variables nest with `__`
(`ENVELOPE_PROXY_UPSTREAM__URL`). Validation is collected whole into a `ConfigError`
whose problems each name the setting, what is wrong, and which layer supplied the value.
`check_config()` is what `envelope-proxy check --config` runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from proxy.config.models import Settings
from proxy.errors import ProblemsError

ENV_PREFIX = "ENVELOPE_PROXY_"
ENV_NESTED_DELIMITER = "__"


class ConfigError(ProblemsError):
    """Invalid configuration; `problems` holds one line per problem, each naming the setting."""

    problems: tuple[str, ...]
    separator = "; "

    def __init__(self, problems: Iterable[str]):
        super().__init__(tuple(problems))


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' env parsing (prefix, `__` nesting, JSON lists) over any mapping."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(
            Settings,  # type: ignore[arg-type]  # only its fields are read
            case_sensitive=False,
            env_prefix=ENV_PREFIX,
            env_nested_delimiter=ENV_NESTED_DELIMITER,
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, False, False, None)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"config file {path}: cannot read it ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"config file {path}: not UTF-8 text"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([f"config file {path}: invalid YAML: {exc}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config file {path}: the top level must be a mapping of settings"])
    return data


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Flags as a nested dict; keys may be dotted (`upstream.url`) or already nested."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(value, Mapping):
            node.setdefault(leaf, {}).update(_nest(value))
        else:
            node[leaf] = value
    return nested


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _has(data: Mapping[str, Any], loc: tuple[str | int, ...]) -> bool:
    node: Any = data
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _origin(loc: tuple[str | int, ...], layers: list[tuple[str, Mapping[str, Any]]]) -> str | None:
    """Which layer supplied the value at `loc` (the highest one wins, as in the merge)."""
    names = tuple(part for part in loc if isinstance(part, str))
    for where, data in reversed(layers):
        if _has(data, names):
            if where.startswith("environment"):
                return "environment " + ENV_PREFIX + ENV_NESTED_DELIMITER.join(names).upper()
            return str(where)
    return None


def _describe(
    exc: ValidationError,
    layers: list[tuple[str, Mapping[str, Any]]],
) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        name = ".".join(str(part) for part in loc) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        elif error["type"] not in ("value_error", "assertion_error") and "input" in error:
            message = f"{message} (got {error['input']!r})"
        origin = _origin(loc, layers)
        suffix = f" [from {origin}]" if origin else ""
        problems.append(f"{name}: {message}{suffix}")
    return problems


def load_settings(
    config_file: Path | None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults < `config_file` < `ENVELOPE_PROXY_*` in `environ` (os.environ) < overrides."""
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if config_file is not None:
        layers.append((f"config file {config_file}", _read_file(config_file)))
    env = os.environ if environ is None else environ
    try:
        env_data = _EnvSource(env)()
    except Exception as exc:  # pydantic-settings raises SettingsError on malformed JSON values
        raise ConfigError([_env_problem(exc, env)]) from None
    layers.append((f"environment {ENV_PREFIX}*", env_data))
    if overrides:
        layers.append(("command line", _nest(overrides)))
    merged: dict[str, Any] = {}
    for _, data in layers:
        merged = _merge(merged, data)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, layers)) from None


def _env_problem(exc: Exception, env: Mapping[str, str]) -> str:
    """Name the variables behind an env parsing failure (pydantic-settings names the field)."""
    match = re.search(r'field "(\w+)"', str(exc))
    if match is None:
        return f"environment {ENV_PREFIX}*: {exc}"
    prefix = f"{ENV_PREFIX}{match[1]}".upper()
    names = [
        name
        for name in sorted(env)
        if name.upper() == prefix or name.upper().startswith(prefix + ENV_NESTED_DELIMITER)
    ]
    not_json = [name for name in names if not _is_json(env[name])]
    shown = ", ".join(f"{name}={env[name]!r}" for name in (not_json or names))
    return (
        f"environment {shown or prefix}: not valid JSON; a list or a section is given as JSON,"
        f' e.g. {ENV_PREFIX}CLIENTS__SOURCES=\'["header:X-Team","peer"]\''
    )


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def check_config(path: Path) -> list[str]:
    """Every problem with a config file and the rules directory it names (empty when valid)."""
    from proxy.envelope import RulesError, load_rules

    try:
        settings = load_settings(path)
    except ConfigError as exc:
        return list(exc.problems)
    try:
        load_rules(settings.rules_dir) if settings.rules_dir else load_rules()
    except RulesError as exc:
        return [f"rules_dir {settings.rules_dir}: {line}" for line in str(exc).splitlines()]
    return []
