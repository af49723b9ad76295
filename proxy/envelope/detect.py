"""Body members to a shape name, following the rules' detection order; first match wins.

A body no shape accepts is refused with the closest shape and what it lacks ("looks like
event_request: missing field step"), never a bare "unknown".
"""

from __future__ import annotations

from collections.abc import KeysView
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from proxy.envelope.errors import UnknownShape
from proxy.envelope.jsonbody import QUOTE as _QUOTE
from proxy.envelope.jsonbody import RawObject, json_type
from proxy.envelope.rules import Rules, Shape


@dataclass(frozen=True, slots=True)
class Detection:
    """The detected shape and the traits that matched (for `detect --explain`)."""

    shape: str
    matched: tuple[str, ...]


def detect(members: RawObject, rules: Rules) -> Shape:
    """The first shape in detection order whose traits all hold."""
    keys = members.keys()
    for shape in rules.shapes:
        if _matches(shape, members, keys):
            return shape
    raise _closest(members, rules)


def explain(members: RawObject, rules: Rules) -> Detection:
    """Like `detect`, also listing the traits that matched."""
    shape = detect(members, rules)
    return Detection(shape=shape.name, matched=tuple(_traits(shape)))


def keys_admit(shape: Shape, keys: AbstractSet[str]) -> bool:
    """The traits on keys alone hold (required, forbidden, closed, the groups)."""
    if not shape.required_keys <= keys or not keys.isdisjoint(shape.forbidden):
        return False
    if shape.closed and not keys <= shape.allowed_keys:
        return False
    for group in shape.exactly_one:
        if len(keys & group) != 1:
            return False
    return all(not keys.isdisjoint(group) for group in shape.at_least_one)


def _matches(shape: Shape, members: RawObject, keys: KeysView[str]) -> bool:
    """All traits hold: set operations on the keys, then first-byte type checks."""
    if not keys_admit(shape, keys):
        return False
    for check in shape.typed:
        raw = members.get(check.key)
        if raw is None:
            continue
        data = bytes(raw)
        if data[0] not in check.first_bytes:
            return False
        if check.integral and data[0] != _QUOTE and (b"." in data or b"e" in data or b"E" in data):
            return False
    return True


def _failures(shape: Shape, members: RawObject) -> list[str]:
    """What keeps a body from being `shape`, in words (only for refusals)."""
    failures: list[str] = []
    for key, types in (*shape.required, *shape.optional):
        raw = members.get(key)
        if raw is None:
            if (key, types) in shape.required:
                failures.append(f"missing field {key}")
        elif "any" not in types and json_type(raw) not in types:
            failures.append(f"{key} is {_a(json_type(raw))}, expected {_either(types)}")
    for group in shape.exactly_one:
        present = sorted(key for key in group if key in members)
        if not present:
            failures.append(f"needs one of {', '.join(sorted(group))}")
        elif len(present) > 1:
            failures.append(f"has both {' and '.join(present)}")
    for group in shape.at_least_one:
        if not any(key in members for key in group):
            failures.append(f"needs one of {', '.join(sorted(group))}")
    failures.extend(
        f"has {key}, which {shape.name} does not allow"
        for key in members
        if key in shape.forbidden or (shape.closed and key not in shape.allowed_keys)
    )
    return failures


def _closest(members: RawObject, rules: Rules) -> UnknownShape:
    """The shape needing the fewest changes; ties go to the more general (later) shape."""
    best: tuple[Shape, list[str]] | None = None
    for shape in rules.shapes:
        failures = _failures(shape, members)
        if best is None or len(failures) <= len(best[1]):
            best = (shape, failures)
    assert best is not None
    shape, failures = best
    return UnknownShape(f"looks like {shape.name}: {'; '.join(failures)}")


def _traits(shape: Shape) -> list[str]:
    traits = [f"required {key}: {_either(types)}" for key, types in shape.required]
    traits += [f"optional {key}: {_either(types)}" for key, types in shape.optional]
    traits += [f"exactly one of {', '.join(sorted(group))}" for group in shape.exactly_one]
    traits += [f"at least one of {', '.join(sorted(group))}" for group in shape.at_least_one]
    if shape.forbidden:
        traits.append(f"none of {', '.join(sorted(shape.forbidden))}")
    if shape.closed:
        traits.append("no other keys")
    return traits


def _either(types: frozenset[str]) -> str:
    return " or ".join(sorted(types))


def _a(json_kind: str) -> str:
    return f"an {json_kind}" if json_kind[0] in "aeiou" else f"a {json_kind}"
