"""`envelope-proxy upstream` as a real process: prints its URL, serves, stops on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def _command() -> list[str]:
    script = Path(sys.executable).parent / "envelope-proxy"
    if script.exists():
        return [str(script)]
    found = shutil.which("envelope-proxy")
    return [found] if found else [sys.executable, "-m", "proxy"]


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.loads(response.read())


@pytest.mark.parametrize("fast", [False, True])
def test_upstream_command_serves_and_stops(tmp_path: Path, fast: bool) -> None:
    """The command announces its URL, answers health with the chosen version, stores
    events in the given database, and exits 0 on SIGTERM."""
    db = tmp_path / "emulator.db"
    args = [
        *_command(),
        "upstream",
        "--emulate",
        "rust-2.19.1",
        "--version",
        "3.83.1",
        "--listen",
        "127.0.0.1:0",
    ]
    args += ["--fast"] if fast else ["--db", str(db)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "stderr.log").open("w")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "emulating rust-2.19.1 version 3.83.1" in line, line
        url = line.rsplit(" on ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:")
        status, health = _get(url + "/api/health")
        assert status == 200
        assert health["version"] == "3.83.1"
        status, answer = _post(
            url + "/api/events", b'{"execution_id":1,"step":"s","event_type":"e"}'
        )
        assert status == 200
        assert isinstance(answer["event_id"], int)
        _, events = _get(url + "/_emulator/stats")
        assert events["events"] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        log.close()
    if not fast:
        assert db.exists()


def test_upstream_command_refuses_unknown_profiles() -> None:
    """An unknown profile is a usage error, listed choices included."""
    result = subprocess.run(
        [*_command(), "upstream", "--emulate", "rust-9.9.9"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "rust-2.19.1" in result.stderr


# The CLI as an image without proxy/emulator runs it: the import is blocked before main().
_WITHOUT_EMULATOR = (
    "import sys\n"
    "sys.modules['proxy.emulator'] = None\n"
    "from proxy.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _without_emulator(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_EMULATOR, *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    "argv", [("upstream", "--emulate", "rust-2.19.1", "--listen", "127.0.0.1:0"), ("demo",)]
)
def test_commands_say_when_the_emulator_is_not_installed(argv: tuple[str, ...]) -> None:
    """Without the emulator, `upstream` and `demo` exit 2 with one clear line, no traceback."""
    result = _without_emulator(*argv)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        f"envelope-proxy {argv[0]}: the emulator is not installed in this image; "
        "install envelope-proxy from PyPI or from source to run it\n"
    )
    assert result.stdout == ""


def test_other_commands_and_the_parsers_work_without_the_emulator() -> None:
    """Every other command, and the `upstream`/`demo` help, need no emulator."""
    help_text = _without_emulator("upstream", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "{rust-1.0.3,rust-2.9.0,rust-2.19.1,python}" in help_text.stdout
    assert _without_emulator("demo", "--help").returncode == 0
    detected = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EMULATOR, "detect", "-"],
        input='{"execution_id":"1","name":"call.done","step":"s","payload":{}}',
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert detected.returncode == 0, detected.stderr
    assert "event_request" in detected.stdout
