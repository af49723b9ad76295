"""The code base stays ruff-clean, formatted and mypy-strict clean (run as part of the suite)."""

from __future__ import annotations

import subprocess
import sys

from tests.samples import REPO_ROOT

PATHS = ["proxy", "tests", "bench"]


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_ruff_lint_is_clean() -> None:
    """ruff finds nothing in the package, the tests or the benchmarks."""
    result = tool("ruff", "check", *PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    """Every file is formatted as ruff formats it."""
    result = tool("ruff", "format", "--check", *PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    """mypy in strict mode accepts the package."""
    result = tool("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
