"""The README's rules examples are real: the error it shows and the shape it adds both work."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from proxy.envelope import Engine, default_rules_dir, load_rules
from tests.samples import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_check_error_is_what_check_prints(tmp_path: Path) -> None:
    """The `check` error line in the README is exactly what the command prints."""
    [shown] = re.findall(r"^my-rules/shapes\.yaml:\d+: .*$", README, flags=re.MULTILINE)
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


def test_readme_fifth_shape_converts_its_example_body(tmp_path: Path) -> None:
    """The shape the README adds, merged into a copy of the rules, converts its example."""
    block = README.split("for example a producer that sends", 1)[1]
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


def test_readme_error_table_lists_every_engine_code_with_its_status() -> None:
    """The README's error-code table names exactly the engine's codes, with their statuses."""
    from proxy.envelope import ERROR_CODES, errors

    table = README.split("### Error codes", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", table, flags=re.MULTILINE))
    assert set(rows) == set(ERROR_CODES)
    by_code = {
        cls.code: cls.http_status
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.EnvelopeError)
    }
    assert {code: int(status) for code, status in rows.items()} == {
        code: by_code[code] for code in ERROR_CODES
    }
