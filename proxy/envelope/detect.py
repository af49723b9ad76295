"""Body members to a shape name, following the rules' detection order; first match wins.

A body no shape accepts is refused with the closest shape and what it lacks ("looks like
event_request: missing field step"), never a bare "unknown".
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.envelope.errors import UnknownShape
from proxy.envelope.jsonbody import RawObject, json_type
from proxy.envelope.rules import Rules, Shape


@dataclass(frozen=True, slots=True)
class Detection:
    """The detected shape and the traits that matched (for `detect --explain`)."""

    shape: str
    matched: tuple[str, ...]


def detect(members: RawObject, rules: Rules) -> Shape:
    """The first shape in detection order whose traits all hold."""
    for shape in rules.shapes:
        if not _failures(shape, members, stop_early=True):
            return shape
    raise _closest(members, rules)


def explain(members: RawObject, rules: Rules) -> Detection:
    """Like `detect`, also listing the traits that matched."""
    shape = detect(members, rules)
    return Detection(shape=shape.name, matched=tuple(_traits(shape)))


def _failures(shape: Shape, members: RawObject, *, stop_early: bool = False) -> list[str]:
    failures: list[str] = []
    for key, types in shape.required:
        raw = members.get(key)
        if raw is None:
            failures.append(f"missing field {key}")
        elif "any" not in types and json_type(raw) not in types:
            failures.append(f"{key} is {_a(json_type(raw))}, expected {_either(types)}")
        if failures and stop_early:
            return failures
    for key, types in shape.optional:
        raw = members.get(key)
        if raw is not None and "any" not in types and json_type(raw) not in types:
            failures.append(f"{key} is {_a(json_type(raw))}, expected {_either(types)}")
    for group in shape.exactly_one:
        present = [key for key in group if key in members]
        if not present:
            failures.append(f"needs one of {', '.join(group)}")
        elif len(present) > 1:
            failures.append(f"has both {' and '.join(present)}")
    for group in shape.at_least_one:
        if not any(key in members for key in group):
            failures.append(f"needs one of {', '.join(group)}")
    for key in shape.forbidden:
        if key in members:
            failures.append(f"has {key}, which {shape.name} does not allow")
    if shape.closed:
        failures.extend(
            f"has {key}, which {shape.name} does not allow"
            for key in members
            if key not in shape.allowed_keys
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
    traits += [f"exactly one of {', '.join(group)}" for group in shape.exactly_one]
    traits += [f"at least one of {', '.join(group)}" for group in shape.at_least_one]
    if shape.forbidden:
        traits.append(f"none of {', '.join(shape.forbidden)}")
    if shape.closed:
        traits.append("no other keys")
    return traits


def _either(types: frozenset[str]) -> str:
    return " or ".join(sorted(types))


def _a(json_kind: str) -> str:
    return f"an {json_kind}" if json_kind[0] in "aeiou" else f"a {json_kind}"
