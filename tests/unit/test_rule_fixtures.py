"""`envelope-proxy test`: the repository's own rule fixtures pass, and the runner catches
a changed output, a changed refusal, broken rules and broken fixture files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.cli import main
from proxy.envelope import load_rules
from tests.samples import REPO_ROOT

FIXTURES = REPO_ROOT / "rules" / "tests"


def test_the_shipped_rules_pass_their_fixtures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", str(FIXTURES)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("18 passed, 0 failed")
    shapes = {case["expect"].get("shape") for case in _cases(FIXTURES / "shapes.yaml")}
    assert shapes == {"executor_event", "worker_event", "emit_request", "event_request", "batch"}


def test_the_rules_loader_still_reads_rules_strictly_beside_the_fixtures(tmp_path: Path) -> None:
    """rules/tests/ is not read as rules; a stray top-level YAML file still is an error."""
    assert load_rules(REPO_ROOT / "rules").digest == load_rules(_copy(tmp_path)).digest
    copy = tmp_path / "rules"
    (copy / "tests.yaml").write_text("tests: []\n", encoding="utf-8")
    with pytest.raises(Exception, match="unknown rules file"):
        load_rules(copy)


def test_a_changed_output_fails_and_shows_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    cases = _cases(FIXTURES / "shapes.yaml")[:1]
    cases[0]["expect"]["output"]["step"] = "not-what-it-becomes"
    (fixtures / "one.yaml").write_text(yaml.safe_dump({"tests": cases}), encoding="utf-8")
    assert main(["test", str(fixtures)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  one.yaml: a canonical executor_event" in out
    assert '"step":"greet"' in out
    assert '"step":"not-what-it-becomes"' in out


def test_rules_that_lost_a_shape_fail_the_fixtures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The regression the fixtures are for: a rules edit that drops a producer's shape."""
    rules = _copy(tmp_path)
    shapes = rules / "shapes.yaml"
    data = yaml.safe_load(shapes.read_text(encoding="utf-8"))
    data["order"].remove("emit_request")
    del data["shapes"]["emit_request"]
    shapes.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert main(["test", str(FIXTURES), "--rules", str(rules)]) == 1
    out = capsys.readouterr().out
    assert "refused with unknown_shape" in out
    assert out.splitlines()[-1].startswith("16 passed, 2 failed")


def test_unreadable_fixtures_and_rules_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "case.yaml").write_text(
        "tests:\n  - name: x\n    input: {}\n    expect: {shape: a}\n    extra: 1\n",
        encoding="utf-8",
    )
    assert main(["test", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "case.yaml: tests.0.extra" in err
    assert "expect needs either output" in err
    assert main(["test", str(FIXTURES), "--rules", str(tmp_path / "nowhere")]) == 2
    assert "invalid rules" in capsys.readouterr().err


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    if not target.exists():
        shutil.copytree(REPO_ROOT / "rules", target)
    return target


def _cases(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    cases: list[dict[str, Any]] = data["tests"]
    return cases


def test_the_documented_fixture_passes_against_the_documented_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/cutover-safety.md's example fixture, with docs/rules.md's gateway_v0 shape added
    to a copy of the rules, passes as written."""
    rules_page = (REPO_ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    block = rules_page.split("for example a producer that sends", 1)[1]
    shape = re.search(r"```yaml\n(.*?)```", block, flags=re.DOTALL)
    doc = (REPO_ROOT / "docs" / "cutover-safety.md").read_text(encoding="utf-8")
    fixture = re.search(r"```yaml\n(.*?)```", doc.split("## Rule fixtures", 1)[1], re.DOTALL)
    assert shape is not None
    assert fixture is not None
    rules = _copy(tmp_path)
    added = yaml.safe_load(shape.group(1))
    shapes = yaml.safe_load((rules / "shapes.yaml").read_text(encoding="utf-8"))
    shapes["order"] = added["order"]
    shapes["shapes"].update(added["shapes"])
    (rules / "shapes.yaml").write_text(yaml.safe_dump(shapes, sort_keys=False), encoding="utf-8")
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    (fixtures / "gateway.yaml").write_text(fixture.group(1), encoding="utf-8")
    assert main(["test", str(fixtures), "--rules", str(rules)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("2 passed, 0 failed")
