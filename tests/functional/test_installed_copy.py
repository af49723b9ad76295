"""An installed copy (a wheel, no checkout around it) carries and finds the default rules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.samples import REPO_ROOT


def test_wheel_finds_its_packaged_rules(tmp_path: Path) -> None:
    """The wheel holds the rules inside the package and loads them from there."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(wheels),
            str(REPO_ROOT),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    [wheel] = wheels.glob("envelope_proxy-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    code = (
        "import proxy\n"
        "from proxy.envelope import load_rules, default_rules_dir\n"
        "rules = load_rules()\n"
        "print(proxy.__file__)\n"
        "print(default_rules_dir())\n"
        "print(rules.target_for_version('3.83.1'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    package_file, rules_dir, target = result.stdout.splitlines()
    assert Path(package_file).is_relative_to(site), "the code must come from the wheel"
    assert Path(rules_dir) == site / "proxy" / "_rules"
    assert target == "executor_event"
    assert sorted(p.name for p in Path(rules_dir).glob("*.yaml")) == sorted(
        p.name for p in (REPO_ROOT / "rules").glob("*.yaml")
    )
