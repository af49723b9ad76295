"""Rules are data: the loader validates them (file and line in errors); they drive the engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import get_args

import pytest

from proxy.envelope import (
    CANONICAL_TARGET,
    LEGACY_TARGET,
    TARGETS,
    Engine,
    RulesError,
    default_rules_dir,
    load_rules,
)
from proxy.envelope.rule_files import TargetName


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def problems_of(directory: Path) -> list[str]:
    with pytest.raises(RulesError) as caught:
        load_rules(directory)
    return caught.value.problems


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_default_rules_load_and_map_versions() -> None:
    """The built-in rules load; 2.19.1 and later get the canonical target, the rest legacy."""
    rules = load_rules()
    assert [shape.name for shape in rules.shapes] == [
        "executor_event",
        "worker_event",
        "emit_request",
        "event_request",
        "batch",
    ]
    assert rules.target_for_version("3.83.1") == "executor_event"
    assert rules.target_for_version("2.19.1") == "executor_event"
    assert rules.target_for_version("2.19.0") == "event_request"
    assert rules.target_for_version("1.0.3") == "event_request"
    assert rules.target_for_version(None) == "event_request"
    assert rules.target_for_version("not-a-version") == "event_request"
    assert len(rules.digest) == 16


@pytest.mark.parametrize(
    ("version", "target"),
    [
        ("2.19.1-rc.1", "event_request"),
        ("v2.19.1-beta", "event_request"),
        ("2.19.1-SNAPSHOT", "event_request"),
        ("2.19.1rc1", "event_request"),
        ("2.19.1+build.7", "executor_event"),
        ("2.19.2-rc.1", "executor_event"),
        ("2.19.1.post1", "executor_event"),
        ("2.19.1-dirty.local", "event_request"),
    ],
)
def test_releases_compare_as_versions_with_pre_releases_below(version: str, target: str) -> None:
    """A pre-release of the threshold release is below it; build metadata is not."""
    assert load_rules().target_for_version(version) == target


def test_unknown_key_names_file_and_line(rules_dir: Path) -> None:
    """A misspelt key is an error at its own line."""
    edit(
        rules_dir / "shapes.yaml",
        "    forbidden: [name, node_name,",
        "    forbiden: [name, node_name,",
    )
    [problem] = problems_of(rules_dir)
    line = line_of(rules_dir / "shapes.yaml", "forbiden")
    assert problem.startswith(f"{rules_dir / 'shapes.yaml'}:{line}: ")
    assert "unknown key" in problem


def test_unknown_shape_in_order_is_an_error(rules_dir: Path) -> None:
    """The detection order may only name defined shapes."""
    edit(
        rules_dir / "shapes.yaml",
        "order: [executor_event,",
        "order: [executr_event, executor_event,",
    )
    assert any("unknown shape 'executr_event'" in p for p in problems_of(rules_dir))


def test_unknown_target_name_is_an_error(rules_dir: Path) -> None:
    """A threshold naming a target that does not exist is refused with its line."""
    edit(rules_dir / "versions.yaml", "target: executor_event}", "target: executor_evnt}")
    [problem] = problems_of(rules_dir)
    assert f"versions.yaml:{line_of(rules_dir / 'versions.yaml', 'executor_evnt')}:" in problem
    assert "executor_evnt" in problem


def test_shadowed_threshold_can_never_apply(rules_dir: Path) -> None:
    """Thresholds out of order leave one that can never apply: an error."""
    (rules_dir / "versions.yaml").write_text(
        'thresholds:\n  - {min: "1.0.0", target: event_request}\n'
        '  - {min: "2.19.1", target: executor_event}\nfallback: event_request\n'
    )
    [problem] = problems_of(rules_dir)
    assert "versions.yaml:3:" in problem
    assert "can never apply" in problem


def test_shape_missing_from_order_can_never_be_detected(rules_dir: Path) -> None:
    """A defined shape left out of the order is a dead rule."""
    edit(
        rules_dir / "shapes.yaml",
        "order: [executor_event, worker_event,",
        "order: [executor_event,",
    )
    assert any("'worker_event' is not in `order`" in p for p in problems_of(rules_dir))


def test_shape_shadowed_by_an_earlier_general_shape_is_an_error(rules_dir: Path) -> None:
    """Listing event_request before executor_event would detect every canonical body as
    event_request: the canonical shape can never apply."""
    edit(
        rules_dir / "shapes.yaml",
        "order: [executor_event, worker_event, emit_request, event_request, batch]",
        "order: [event_request, executor_event, worker_event, emit_request, batch]",
    )
    [problem] = problems_of(rules_dir)
    assert "shape 'executor_event' can never be detected" in problem
    assert "as 'event_request'" in problem


def test_required_and_forbidden_key_can_never_match(rules_dir: Path) -> None:
    """A shape that requires a key it forbids is refused."""
    edit(
        rules_dir / "shapes.yaml",
        "forbidden: [step, node_name, name, event_type]",
        "forbidden: [events, step]",
    )
    assert any("both requires and forbids 'events'" in p for p in problems_of(rules_dir))


def test_dead_status_rules_are_errors(rules_dir: Path) -> None:
    """A derive rule always caught earlier, or a status mapped twice, can never apply."""
    edit(
        rules_dir / "status.yaml",
        "- {contains: [error, failed], status: FAILED}",
        "- {contains: [error, failed], status: FAILED}\n    - {contains: [call.done], status: X}",
    )
    edit(rules_dir / "status.yaml", "ERROR: [error, timeout]", "ERROR: [error, timeout, Success]")
    problems = problems_of(rules_dir)
    assert any("derive rule ['call.done'] can never apply" in p for p in problems)
    assert any("'Success' is already mapped" in p for p in problems)


def test_duplicate_yaml_key_is_an_error(rules_dir: Path) -> None:
    """YAML's silent last-wins on duplicate keys is caught."""
    edit(rules_dir / "defaults.yaml", "mint: auto", "mint: auto\nmint: never")
    [problem] = problems_of(rules_dir)
    assert (
        f"defaults.yaml:{line_of(rules_dir / 'defaults.yaml', 'mint: never')}: duplicate key 'mint'"
        in problem
    )


def test_wrong_types_and_missing_files_are_errors(rules_dir: Path) -> None:
    """YAML type traps (yes -> bool) and missing files are reported, never coerced."""
    edit(rules_dir / "defaults.yaml", "normalise_status: true", "normalise_status: 'yes'")
    (rules_dir / "status.yaml").unlink()
    problems = problems_of(rules_dir)
    assert any("defaults.yaml" in p and "normalise_status" in p for p in problems)
    assert any("status.yaml:1: missing rules file" in p for p in problems)


FIFTH_SHAPE = """
  gateway_v0:
    summary: a made-up producer with its own field names
    kind: event
    required:
      exec: integer
      kind: string
      stage: string
    optional:
      data: any
    closed: true
    fields:
      execution_id: [exec]
      event_type: [kind]
      step: [stage]
      context: [data]
"""


def test_a_fifth_shape_can_be_added_without_code(rules_dir: Path) -> None:
    """An operator adds a shape in a rules directory; the engine detects and converts it."""
    edit(
        rules_dir / "shapes.yaml", "order: [executor_event,", "order: [gateway_v0, executor_event,"
    )
    (rules_dir / "shapes.yaml").write_text((rules_dir / "shapes.yaml").read_text() + FIFTH_SHAPE)
    engine = Engine(load_rules(rules_dir))
    body = b'{"exec": 478775660589088776, "kind": "step.exit", "stage": "s1", "data": {"k": [1]}}'
    assert engine.detect(body).shape == "gateway_v0"
    conversion = engine.convert_event(body, "event_request")
    out = json.loads(conversion.body)
    assert conversion.shape == "gateway_v0"
    assert out["execution_id"] == "478775660589088776"
    assert (out["name"], out["step"], out["payload"], out["status"]) == (
        "step.exit",
        "s1",
        {"k": [1]},
        "COMPLETED",
    )
    assert not {"exec", "kind", "stage", "data"} & set(out)
    engine.validate_target("event_request", conversion.body)


def test_the_target_names_are_defined_once() -> None:
    """The type of a target name, the engine's tuple and the default rules agree."""
    assert get_args(TargetName) == TARGETS == (CANONICAL_TARGET, LEGACY_TARGET)
    assert set(load_rules(None).targets) == set(TARGETS)
