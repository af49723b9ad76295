"""`python -m bench.clients` at test size: every installed client gets every answer."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from bench.clients import CLIENTS
from tests.samples import REPO_ROOT

# The event path's own client and aiohttp are core dependencies; the others come with the
# bench extra.
_MODULES = {"aiosonic": "aiosonic", "httpcore": "httpcore", "pyreqwest": "pyreqwest"}


def _installed() -> list[str]:
    return [c for c in CLIENTS if c not in _MODULES or importlib.util.find_spec(_MODULES[c])]


def test_one_round_checks_every_answer_of_every_installed_client(tmp_path: Path) -> None:
    """One short round against the Python stub upstream: each client measured every phase,
    and the number of answers checked (status and body) is the number of requests sent."""
    clients = _installed()
    raw = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.clients",
            "--stub=python",
            "--rounds=1",
            "--requests=100",
            "--seconds=0.2",
            f"--clients={','.join(clients)}",
            f"--json={raw}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (round_,) = json.loads(raw.read_text())
    assert sorted(round_) == sorted(clients)
    for client, result in round_.items():
        phases = result["phases"]
        assert sorted(phases, key=int) == ["1", "32", "64"], client
        assert phases["1"]["requests"] == 100, client
        assert all(p["requests"] > 0 and p["cpu_seconds"] > 0 for p in phases.values()), client
        assert result["tally"]["bad"] == 0, (client, result["tally"])
        assert result["tally"]["ok"] == sum(p["requests"] for p in phases.values()), client
    assert f"| {CLIENTS[0]} | " in done.stdout
