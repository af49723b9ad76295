"""The manual's examples are real: the rules it shows work, its error tables name every code,
and every example file it shows is the file in the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from proxy.envelope import ERROR_CODES, Engine, default_rules_dir, errors, load_rules
from proxy.server import problems
from tests.samples import REPO_ROOT

DOCS = REPO_ROOT / "docs"
RULES = (DOCS / "rules.md").read_text(encoding="utf-8")
SHAPES = (DOCS / "shapes-and-errors.md").read_text(encoding="utf-8")
INCLUDE = re.compile(r"^<!-- include: (\S+) -->\n```[a-z]*\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _section(text: str, heading: str) -> str:
    """The text under one `## ` heading, up to the next one."""
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _engine_statuses() -> dict[str, int]:
    """Each public engine code with the status it is answered with."""
    by_code = {
        cls.code: cls.http_status
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.EnvelopeError)
    }
    return {code: by_code[code] for code in ERROR_CODES}


def test_rules_check_error_is_what_check_prints(tmp_path: Path) -> None:
    """The `check` error line in docs/rules.md is exactly what the command prints."""
    [shown] = re.findall(r"^my-rules/shapes\.yaml:\d+: .*$", RULES, flags=re.MULTILINE)
    rules = tmp_path / "my-rules"
    shutil.copytree(default_rules_dir(), rules)
    shapes = rules / "shapes.yaml"
    shapes.write_text(shapes.read_text().replace("    forbidden: [name,", "    forbiden: [name,"))
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "check", "--rules", "my-rules"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == shown


def test_rules_fifth_shape_converts_its_example_body(tmp_path: Path) -> None:
    """The shape docs/rules.md adds, merged into a copy of the rules, converts its example."""
    block = RULES.split("for example a producer that sends", 1)[1]
    body = re.search(r"`(\{.*?\})`", block)
    snippet = re.search(r"```yaml\n(.*?)```", block, flags=re.DOTALL)
    assert body is not None
    assert snippet is not None
    added = yaml.safe_load(snippet.group(1))
    rules = tmp_path / "my-rules"
    shutil.copytree(default_rules_dir(), rules)
    shapes = yaml.safe_load((rules / "shapes.yaml").read_text())
    shapes["order"] = added["order"]
    shapes["shapes"].update(added["shapes"])
    (rules / "shapes.yaml").write_text(yaml.safe_dump(shapes, sort_keys=False))
    engine = Engine(load_rules(rules))
    conversion = engine.convert_event(body.group(1).encode(), "executor_event")
    assert conversion.shape == "gateway_v0"
    engine.validate_target("executor_event", conversion.body)


def test_engine_error_table_lists_every_engine_code_with_its_status() -> None:
    """The engine error-code table names exactly the engine's codes, with their statuses."""
    table = _section(SHAPES, "Engine error codes")
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", table, flags=re.MULTILINE))
    assert set(rows) == set(ERROR_CODES)
    assert {code: int(status) for code, status in rows.items()} == _engine_statuses()


def test_failure_table_lists_every_code_the_proxy_answers_with_its_status() -> None:
    """The failure table names exactly the proxy's own problems and the engine's codes, each
    with the status it is answered with."""
    table = _section(SHAPES, "Failure codes")
    shown: dict[str, int] = {}
    for status, cell in re.findall(r"^\| (\d{3}) \| ([^|]+) \|", table, flags=re.MULTILINE):
        for code in re.findall(r"`([a-z_]+)`", cell):
            assert code not in shown, f"{code} listed twice"
            shown[code] = int(status)
    proxy_codes = {
        value.code: value.status
        for value in vars(problems).values()
        if isinstance(value, problems.ProxyProblem)
    }
    assert proxy_codes
    assert shown == {**_engine_statuses(), **proxy_codes}


def test_every_example_file_shown_in_the_docs_is_the_file() -> None:
    """A block marked `<!-- include: PATH -->` is the whole file at PATH, byte for byte, so a
    changed example cannot leave a stale copy in the manual."""
    found = 0
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        markers = text.count("<!-- include:")
        blocks = INCLUDE.findall(text)
        assert len(blocks) == markers, f"{page.name}: an include marker without its block"
        for path, shown in blocks:
            target = (page.parent / path).resolve()
            assert target.is_file(), f"{page.name}: {path} does not exist"
            assert shown == target.read_text(encoding="utf-8"), f"{page.name}: {path} differs"
            found += 1
    assert found >= 5
