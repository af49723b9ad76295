"""The installed `envelope-proxy` console script: detect, convert and check, as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.envelope import default_rules_dir
from tests.samples import sample_bytes, sample_path

SCRIPT = shutil.which("envelope-proxy", path=str(Path(sys.executable).parent))


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    assert SCRIPT is not None, "the envelope-proxy console script is not installed"
    return subprocess.run(
        [SCRIPT, *args], input=stdin, capture_output=True, timeout=60, check=False
    )


def test_detect_prints_the_shape_of_a_file() -> None:
    """`detect FILE` prints the shape name and exits 0."""
    result = run("detect", str(sample_path("worker_event__call_done")))
    assert (result.returncode, result.stdout) == (0, b"worker_event\n")


def test_detect_explain_lists_matched_traits_from_stdin() -> None:
    """`detect --explain` reads stdin and lists the traits that matched."""
    result = run("detect", "--explain", stdin=sample_bytes("executor_event__payload_alias"))
    lines = result.stdout.decode().splitlines()
    assert result.returncode == 0
    assert lines[0] == "executor_event"
    assert "  exactly one of context, payload" in lines


def test_detect_refusal_prints_code_and_message() -> None:
    """A body that is no envelope prints `code: message` on stderr and exits 1."""
    result = run("detect", str(sample_path("python_event_emit_request__minimal")))
    assert result.returncode == 1
    assert result.stderr == b"unknown_shape: looks like event_request: missing field step\n"


def test_convert_json_lines_keeps_going_past_bad_lines() -> None:
    """JSON Lines in, one line out per good input, `line N: code: message` for bad ones, exit 1."""
    lines = [
        b'{"execution_id": 9223372036854775807, "step": "s", "name": "a.done",'
        b' "payload": {"n": 1e2}}',
        b'{"execution_id": 1.5, "step": "s", "name": "x"}',
        sample_bytes("worker_event__call_done").replace(b"\n", b""),
    ]
    result = run("convert", "--to", "event_request", stdin=b"\n".join(lines) + b"\n")
    assert result.returncode == 1
    assert result.stderr.decode().startswith("line 2: invalid_id: execution_id")
    out = result.stdout.splitlines()
    assert len(out) == 2
    first = json.loads(out[0])
    assert first["execution_id"] == "9223372036854775807"
    assert b'"payload":{"n": 1e2}' in out[0]
    assert json.loads(out[1])["step"] == "fetch"


def test_convert_one_pretty_document_gives_one_line() -> None:
    """A single multi-line JSON document converts to exactly one output line, ids exact."""
    result = run(
        "convert", "--to", "executor_event", str(sample_path("rust_event_request__v1_legacy_full"))
    )
    assert result.returncode == 0
    [line] = result.stdout.splitlines()
    out = json.loads(line)
    assert out["execution_id"] == 478775660589088776
    assert out["event_type"] == "call.done"
    assert "name" not in out


def test_check_validates_the_default_and_a_broken_rules_dir(tmp_path: Path) -> None:
    """`check` passes the built-in rules and lists file:line problems of a broken directory."""
    assert run("check").returncode == 0
    broken = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), broken)
    (broken / "defaults.yaml").write_text((broken / "defaults.yaml").read_text() + "bogus: 1\n")
    result = run("check", "--rules", str(broken))
    assert result.returncode == 1
    assert b"defaults.yaml:" in result.stderr
    assert b"bogus: unknown key" in result.stderr


@pytest.mark.parametrize("module_form", [False, True])
def test_python_dash_m_is_the_same_program(module_form: bool) -> None:
    """`python -m proxy` and the console script run the same CLI."""
    args = [sys.executable, "-m", "proxy"] if module_form else [str(SCRIPT)]
    result = subprocess.run(
        [*args, "detect"],
        input=sample_bytes("worker_event__call_error"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.stdout == b"worker_event\n"
