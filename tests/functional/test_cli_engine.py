"""The installed `envelope-proxy` console script: detect, convert and check, as a user runs them."""

from __future__ import annotations

import importlib.metadata
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


def test_version_prints_the_package_version() -> None:
    """`--version` prints the program name and the installed version."""
    result = run("--version")
    assert result.returncode == 0
    assert (
        result.stdout.decode() == f"envelope-proxy {importlib.metadata.version('envelope-proxy')}\n"
    )


@pytest.mark.parametrize("command", [["detect"], ["convert", "--to", "event_request"]])
def test_unreadable_input_is_one_line_and_exit_2(tmp_path: Path, command: list[str]) -> None:
    """A missing file or a directory gives one line on stderr, exit 2, no traceback."""
    for path in (tmp_path / "missing.json", tmp_path):
        result = run(*command, str(path))
        assert result.returncode == 2
        [line] = result.stderr.decode().splitlines()
        assert line.startswith(f"envelope-proxy: cannot read {path}: ")
        assert result.stdout == b""


def test_json_output_reports_unreadable_input_as_an_error_object(tmp_path: Path) -> None:
    """With `-o json` the failure is a JSON object on stdout with a stable code."""
    result = run("detect", "-o", "json", str(tmp_path / "missing.json"))
    assert result.returncode == 2
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["error"]["code"] == "unreadable_input"
    assert "missing.json" in record["error"]["message"]


def test_convert_json_output_has_one_record_per_input_line() -> None:
    """`-o json`: every input line gives one record, in order; a refused one is an error record."""
    lines = [
        sample_bytes("worker_event__call_done").replace(b"\n", b""),
        b'{"execution_id": 1.5, "step": "s", "name": "x"}',
        b"",
        b'{"execution_id": 9223372036854775807, "step": "s", "name": "a.done",'
        b' "payload": {"n": 1e2}}',
    ]
    result = run("convert", "--to", "executor_event", "-o", "json", stdin=b"\n".join(lines))
    assert result.returncode == 1
    assert result.stderr == b""
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 4]
    assert records[0]["shape"] == "worker_event"
    assert records[0]["body"]["step"] == "fetch"
    assert records[1]["error"] == {
        "code": "invalid_id",
        "message": records[1]["error"]["message"],
        "field": "execution_id",
    }
    assert records[2]["body"]["execution_id"] == 9223372036854775807
    assert b'"context":{"n": 1e2}' in result.stdout.splitlines()[2]


def test_detect_json_output_lists_shapes_and_refusals_per_line() -> None:
    """`detect -o json` reads JSON Lines: a shape or an error object per document."""
    lines = [sample_bytes("worker_event__call_done").replace(b"\n", b""), b"[1]"]
    result = run("detect", "-o", "json", "--explain", stdin=b"\n".join(lines))
    assert result.returncode == 1
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert (first["line"], first["shape"]) == (1, "worker_event")
    assert first["matched"]
    assert (second["line"], second["error"]["code"]) == (2, "not_an_object")


def test_convert_now_pins_minted_values_across_runs() -> None:
    """`--now` makes created_at and minted event ids the same on every run."""
    body = sample_bytes("worker_event__call_done")
    args = ("convert", "--to", "executor_event", "--now", "2026-01-01T00:00:00Z")
    first, second = run(*args, stdin=body), run(*args, stdin=body)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    out = json.loads(first.stdout)
    assert out["created_at"] == "2026-01-01T00:00:00.000000Z"
    assert out["event_id"] >> 22 == 1_767_225_600_000 - 1_704_067_200_000
    assert run("convert", "--to", "executor_event", "--now", "soon", stdin=body).returncode == 2


def test_convert_config_applies_the_envelope_settings_serve_would(tmp_path: Path) -> None:
    """`--config` takes envelope.* (machine id, status normalising) as serve does."""
    config = tmp_path / "config.yaml"
    config.write_text("envelope:\n  machine_id: 7\n  normalise_status: false\n", encoding="utf-8")
    body = b'{"execution_id": "1", "step": "s", "name": "a.done", "status": "success"}'
    plain = json.loads(run("convert", "--to", "executor_event", stdin=body).stdout)
    result = run("convert", "--to", "executor_event", "--config", str(config), stdin=body)
    assert result.returncode == 0, result.stderr
    configured = json.loads(result.stdout)
    assert (plain["event_id"] >> 12) & 1023 == 0
    assert (configured["event_id"] >> 12) & 1023 == 7
    assert plain["status"] != "success"
    assert configured["status"] == "success"
    pinned = run(
        "convert",
        "--to",
        "executor_event",
        "--config",
        str(config),
        "--machine-id",
        "9",
        stdin=body,
    )
    assert (json.loads(pinned.stdout)["event_id"] >> 12) & 1023 == 9


def test_convert_config_that_is_invalid_stops_with_exit_2(tmp_path: Path) -> None:
    """An invalid config is listed, as `serve` lists it, and nothing is converted."""
    config = tmp_path / "config.yaml"
    config.write_text("envelope:\n  mint: sometimes\n", encoding="utf-8")
    body = sample_bytes("worker_event__call_done")
    result = run("convert", "--to", "event_request", "--config", str(config), stdin=body)
    assert (result.returncode, result.stdout) == (2, b"")
    assert b"envelope.mint" in result.stderr


def test_check_config_says_ok_and_json_reports_problems(tmp_path: Path) -> None:
    """`check --config` prints `config ok`; `-o json` gives one object with ok and problems."""
    good = tmp_path / "good.yaml"
    good.write_text("upstream:\n  url: http://127.0.0.1:8082\n", encoding="utf-8")
    result = run("check", "--config", str(good))
    assert (result.returncode, result.stdout.decode()) == (0, f"config ok: {good}\n")
    clash = tmp_path / "clash.yaml"
    clash.write_text("listen: 0.0.0.0:8080\nadmin_listen: 0.0.0.0:8080\n", encoding="utf-8")
    result = run("check", "-o", "json", "--config", str(clash))
    assert result.returncode == 1
    [report] = [json.loads(line) for line in result.stdout.splitlines()]
    assert report["ok"] is False
    assert report["problems"][0].startswith("admin_listen: must not be the proxy's own address")
