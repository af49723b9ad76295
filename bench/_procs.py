"""Child processes for the benchmarks: start pinned to CPUs, wait until they listen, read
their CPU time and memory from /proc, and always stop them.

Everything listens on 127.0.0.1 only. CPU time and RSS are read from `/proc/<pid>/stat`
and `/proc/<pid>/status` for a process and all its descendants (a proxy started with
`--workers 2` forks its workers), so no extra package is needed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
URL_LINE = re.compile(rb"http://127\.0\.0\.1:(\d+)")


def free_port() -> int:
    """A port nothing listens on right now (bound to 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def _pin(cpus: Sequence[int] | None) -> None:
    # Runs in the child before exec, so every thread it ever starts inherits the mask.
    if cpus:
        os.sched_setaffinity(0, set(cpus))


class Child:
    """One started process; its output goes to a log file so pipes never fill up."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        cpus: Sequence[int] | None = None,
        env: dict[str, str] | None = None,
        drop_env: Sequence[str] = ("OTEL_",),
    ) -> None:
        """`env` is added to this process's environment, minus variables starting with
        one of `drop_env` (by default OpenTelemetry's, so no child traces unless asked)."""
        self.name = name
        self.cpus = tuple(cpus) if cpus else None
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_env))}
        full_env = {**inherited, **(env or {})}
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            preexec_fn=lambda: _pin(self.cpus),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        """Return once `port` accepts connections; raise with the log if the child died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {port}:\n{self.log_text()[-2000:]}")

    def wait_for_url_port(self, timeout: float = 30.0) -> int:
        """The port of the first `http://127.0.0.1:PORT` the child prints."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = URL_LINE.search(self.log_path.read_bytes())
            if match:
                return int(match.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} printed no URL:\n{self.log_text()[-2000:]}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                for pid in descendants(self.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process and its live descendants."""
        return sum(cpu_seconds(pid) for pid in [self.pid, *descendants(self.pid)])

    def rss_bytes(self) -> int:
        """Resident memory of the process and its live descendants."""
        return sum(rss_bytes(pid) for pid in [self.pid, *descendants(self.pid)])


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; everything after its ')' is fixed.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # Fields 14 and 15 of stat (utime, stime); indices shift by 2 after the name.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Pids of all live descendants of `pid`, from each process's parent in /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    queue = [pid]
    while queue:
        children = parents.get(queue.pop(), [])
        found.extend(children)
        queue.extend(children)
    return found


@contextlib.contextmanager
def children(log_dir: Path) -> Iterator[list[Child]]:
    """A list to put started children in; all of them are stopped on the way out."""
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in reversed(started):
            with contextlib.suppress(Exception):
                child.stop()
