"""What a live reload may change: the start-only settings and the diff against them.

The start-only settings are the fields the models mark `START_ONLY`, a whole section or a
single field of one; `RESTART_ONLY` lists them, dotted, in field order. A reload reports
which of them changed (`restart_needed`) and applies the rest (`keep_start_only`).
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import Any, TypeVar

from pydantic import BaseModel

from proxy.config.models import START_ONLY, Settings

_Model = TypeVar("_Model", bound=BaseModel)


def start_only_fields(model: type[BaseModel], prefix: str = "") -> tuple[str, ...]:
    """Dotted names of the fields of `model` (and of its sections) marked `START_ONLY`."""
    names: list[str] = []
    for name, info in model.model_fields.items():
        if START_ONLY in info.metadata:
            names.append(prefix + name)
        elif isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            names.extend(start_only_fields(info.annotation, f"{prefix}{name}."))
    return tuple(names)


# Settings read once at start: changing them in a live reload is reported, not applied.
RESTART_ONLY: tuple[str, ...] = start_only_fields(Settings)


def restart_needed(old: Settings, new: Settings) -> list[str]:
    """Names of start-only settings that differ between two configurations."""
    return [name for name in RESTART_ONLY if attrgetter(name)(old) != attrgetter(name)(new)]


def keep_start_only(old: Settings, new: Settings) -> Settings:
    """`new` with every start-only setting taken from `old` (what a live reload applies)."""
    return _keep(old, new, RESTART_ONLY)


def _keep(old: BaseModel, new: _Model, names: Iterable[str]) -> _Model:
    update: dict[str, Any] = {}
    inner: dict[str, list[str]] = {}
    for name in names:
        head, _, rest = name.partition(".")
        if rest:
            inner.setdefault(head, []).append(rest)
        else:
            update[head] = getattr(old, head)
    for head, rests in inner.items():
        update[head] = _keep(getattr(old, head), getattr(new, head), rests)
    return new.model_copy(update=update)
