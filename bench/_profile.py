"""Sampling profile of a running proxy with py-spy, summarised as the top entries.

`bench.http --profile SERVER` records the named server process (e.g. `proxy`) with
`py-spy record --nonblocking` while the load generator saturates it, then prints where the
samples fall: by package (self time), the top functions by self time, and the proxy's own
functions by inclusive time. py-spy is a separate install (`pip install py-spy`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# Start-up frames under which everything runs: not informative as inclusive entries.
_OUTER = ("proxy/__main__.py", "proxy/cli.py", "proxy/server/commands.py", "proxy/server/runner.py")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^:]*):(?P<line>\d+)\)$")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return found


def record(pid: int, seconds: float, out: Path, rate: int = 1000) -> subprocess.Popen[bytes]:
    """Start recording `pid` for `seconds` into `out` (raw collapsed stacks)."""
    argv = [py_spy(), "record", "--pid", str(pid), "--duration", str(max(1, int(seconds)))]
    argv += ["--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _split(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    if match is None:
        return frame, "?"
    return match["func"], match["path"]


def _package(path: str) -> str:
    parts = path.split("/")
    return "/".join(parts[:2]) if parts[0] in ("proxy", "bench") else parts[0]


def summary(raw: Path, top: int = 25) -> str:
    """Top entries of a raw py-spy recording."""
    packages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        func, path = _split(frames[-1])
        packages[_package(path)] += count
        leaves[f"{func} ({path})"] += count
        inside = {(f, p) for f, p in map(_split, frames) if p.startswith("proxy/")}
        for name in {f"{f} ({p})" for f, p in inside if p not in _OUTER}:
            ours[name] += count
    if not total:
        return "no samples"

    def lines(counter: Counter[str], limit: int) -> list[str]:
        return [f"  {100 * n / total:5.1f}%  {name}" for name, n in counter.most_common(limit)]

    out = [f"{total} samples", "self time by package:", *lines(packages, 8)]
    out += [f"top {top} functions by self time:", *lines(leaves, top)]
    out += [f"top {top} proxy functions by inclusive time:", *lines(ours, top)]
    return "\n".join(out)
