"""`envelope-proxy demo` runs end to end from the command line, with nothing else running."""

from __future__ import annotations

import subprocess

from tests.functional.server_support import cli, cli_env
from tests.samples import REPO_ROOT

SHAPES = ("executor_event", "event_request", "emit_request", "worker_event", "batch")


def test_demo_converts_every_shape_before_and_after_the_upgrade() -> None:
    """The demo exits 0 and prints both tables: legacy target first, canonical after."""
    result = subprocess.run(
        cli("demo"),
        cwd=REPO_ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    first, _, second = result.stdout.partition("proxy switched to target executor_event")
    assert second, result.stdout
    for table, target in ((first, "event_request"), (second, "executor_event")):
        rows = [line.split() for line in table.splitlines() if line.strip().split(" ")[0] in SHAPES]
        assert [row[0] for row in rows] == list(SHAPES)
        for row in rows:
            assert row[1] == target
            assert row[2] == "200"
            assert int(row[3].rstrip(",")) > 2**53
    assert "every body was accepted" in result.stdout
