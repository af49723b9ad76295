"""ConfigError and RulesError share one base, `ProblemsError`, and keep their own messages."""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import pytest

from proxy.config import ConfigError, load_settings
from proxy.envelope import RulesError, default_rules_dir, load_rules
from proxy.errors import ProblemsError
from tests.samples import REPO_ROOT


def test_a_config_error_is_a_problems_error_joined_by_semicolons() -> None:
    with pytest.raises(ProblemsError) as caught:
        load_settings(None, environ={"ENVELOPE_PROXY_WORKERS": "0", "ENVELOPE_PROXY_MODE": "x"})
    error = caught.value
    assert isinstance(error, ConfigError)
    assert isinstance(error.problems, tuple)
    assert len(error.problems) == 2
    assert error.problems[0].startswith("workers: ")
    assert str(error) == "; ".join(error.problems)
    assert error.args == (str(error),)


def test_a_rules_error_is_a_problems_error_joined_by_lines(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), rules)
    (rules / "status.yaml").unlink()
    (rules / "targets.yaml").unlink()
    with pytest.raises(ProblemsError) as caught:
        load_rules(rules)
    error = caught.value
    assert isinstance(error, RulesError)
    assert isinstance(error.problems, list)
    assert len(error.problems) >= 2
    assert all("missing rules file" in line for line in error.problems[:2])
    assert str(error) == "\n".join(error.problems)
    assert error.args == (str(error),)


def test_the_base_needs_nothing_beyond_the_standard_library() -> None:
    """The pure engine imports it, so it must not pull in I/O or server packages."""
    tree = ast.parse((REPO_ROOT / "proxy" / "errors.py").read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - {"__future__"} <= sys.stdlib_module_names
