"""The shape of a Rust request struct as data: fields in declaration order, kinds,
serde aliases and defaults. Both deserializers (`structs`, exact, and `fast`,
the shortcut for ordinary bodies) read these declarations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STRING = "string"
OPT_STRING = "opt_string"
BOOL = "bool"
VALUE = "value"
OPT_VALUE = "opt_value"
OPT_I64_VEC = "opt_i64_vec"
OPT_DATETIME = "opt_datetime"
ID_LAX = "id_lax"
OPT_ID_LAX = "opt_id_lax"
ITEMS = "items"

_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One struct field: its Rust name, serde aliases, kind, and `#[serde(default)]`."""

    name: str
    kind: str
    aliases: tuple[str, ...] = ()
    default: Any = _REQUIRED

    @property
    def has_default(self) -> bool:
        return self.default is not _REQUIRED

    @property
    def optional(self) -> bool:
        # serde fills a missing `Option<T>` with None unless `deserialize_with` is used.
        return self.kind in (OPT_STRING, OPT_VALUE, OPT_I64_VEC, OPT_DATETIME)


@dataclass(frozen=True)
class Struct:
    """A `#[derive(Deserialize)]` struct; `items` is the element struct of an ITEMS field."""

    name: str
    fields: tuple[Field, ...]
    items: Struct | None = None
    lookup: dict[str, Field] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        names: dict[str, Field] = {}
        for f in self.fields:
            for key in (f.name, *f.aliases):
                names[key] = f
        object.__setattr__(self, "lookup", names)


@dataclass(frozen=True)
class Rejection:
    """What axum's `Json` extractor answers: status and text/plain body."""

    status: int
    text: str
