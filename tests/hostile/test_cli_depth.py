"""`envelope-proxy detect` and `convert` on hostile input: bounded like `serve`, never a crash."""

from __future__ import annotations

import pytest

from tests.functional.test_cli_engine import run
from tests.samples import sample_bytes

DEEP = [
    pytest.param(b"[" * 5000 + b"]" * 5000, id="arrays"),
    pytest.param(b'{"a":' * 5000 + b"1" + b"}" * 5000, id="objects"),
    pytest.param(b'{"payload":' + b"[" * 100_000 + b"]" * 100_000 + b"}", id="deep-payload"),
    pytest.param(b"[" * 100_000, id="unclosed"),
]


@pytest.mark.parametrize("body", DEEP)
@pytest.mark.parametrize("command", [["detect"], ["convert", "--to", "executor_event"]])
def test_deeply_nested_input_is_too_deep_not_a_crash(command: list[str], body: bytes) -> None:
    result = run(*command, stdin=body)
    assert result.returncode == 1, result.stderr[-500:]
    assert b"Traceback" not in result.stderr
    assert b"too_deep" in result.stderr, result.stderr[-500:]


def test_json_lines_with_one_deep_line_convert_the_others() -> None:
    """In JSON Lines, the deep line is refused (too_deep, with its line number) and the
    others are still converted."""
    good = sample_bytes("worker_event__call_done").replace(b"\n", b"")
    deep = b"[" * 5000 + b"]" * 5000
    result = run("convert", "--to", "executor_event", stdin=deep + b"\n" + good + b"\n")
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr
    assert b"line 1: too_deep" in result.stderr, result.stderr[-300:]
    assert len(result.stdout.splitlines()) == 1
