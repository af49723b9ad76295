"""Chart hygiene: helm lint, metadata kept in step, and every example file renders.

The examples under helm/envelope-proxy/examples/ are what the cutover runbook shows; each
values file is rendered here (host-chart overlays through the example host chart), so the
runbook cannot show a snippet that does not work.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.envelope import load_rules
from tests.shipping.chart import (
    CHART_DIR,
    EXAMPLES,
    HOST_EXAMPLE,
    config_yaml,
    find,
    helm,
    kinds,
    load_yaml,
    merge_values,
    proxy_container,
    render,
    validate_objects,
)

EXAMPLE_VALUES = sorted(EXAMPLES.glob("*.yaml"))


def lint_errors(path: Path, values: dict[str, Any] | None, kube_version: str) -> list[Any]:
    report = helm().lint(path, values, strict=True, kube_version=kube_version)
    assert report["total_charts_linted"] >= 1
    problems: list[Any] = [m for m in report["messages"] if m["severity"] >= 2]
    return problems + list(report["errors"])


@pytest.mark.parametrize("kube_version", ["v1.25.0", "v1.29.0", "v1.36.0"])
@pytest.mark.parametrize(
    "values",
    [None, {"mode": "standalone", "upstream": {"url": "http://noetl:8082"}}],
    ids=["sidecar", "standalone"],
)
def test_chart_lints_clean(values: dict[str, Any] | None, kube_version: str) -> None:
    """helm lint --strict finds no warning or error in either mode."""
    assert lint_errors(CHART_DIR, values, kube_version) == []


def test_host_chart_lints_clean(host_chart: Path) -> None:
    """The example host chart with the proxy as a dependency lints clean."""
    assert lint_errors(host_chart, None, "v1.29.0") == []
    assert [d["status"] for d in helm().dependency_list(host_chart)] == ["unpacked"]


def test_native_sidecar_is_refused_below_1_29(
    host_chart: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Rendered for a 1.28 cluster, the native sidecar stops with an explanation.

    helm lint reports template `fail` calls as log lines on stderr rather than findings."""
    helm().lint(host_chart, None, strict=True, kube_version="v1.28.0")
    refused = capfd.readouterr().err
    assert "sidecar.native=true needs Kubernetes >= 1.29" in refused
    classic = {"envelope-proxy": {"sidecar": {"native": False}}}
    helm().lint(host_chart, classic, strict=True, kube_version="v1.28.0")
    helm().lint(host_chart, None, strict=True, kube_version="v1.29.0")
    assert "needs Kubernetes" not in capfd.readouterr().err


def test_versions_in_helpers_match_chart_yaml() -> None:
    """The chart and app versions repeated for host-chart rendering equal Chart.yaml's."""
    chart = load_yaml(CHART_DIR / "Chart.yaml")
    helpers = (CHART_DIR / "templates" / "_helpers.tpl").read_text(encoding="utf-8")

    def defined(name: str) -> str:
        found = re.search(r'define "envelope-proxy\.' + name + r'" -}}([^{]*){{', helpers)
        assert found, name
        return found.group(1)

    assert defined("chartName") == chart["name"]
    assert defined("chartVersion") == chart["version"]
    assert defined("appVersion") == chart["appVersion"]
    host = load_yaml(HOST_EXAMPLE / "Chart.yaml")
    assert host["dependencies"][0]["version"] == chart["version"]


def test_image_tag_defaults_to_app_version_inside_a_host_chart(host_chart: Path) -> None:
    """In a host pod the image tag comes from this chart's appVersion, not the host's."""
    objects = render(load_yaml(HOST_EXAMPLE / "values.yaml"), host_chart)
    _, container = proxy_container(find(objects, "Deployment"))
    app_version = load_yaml(CHART_DIR / "Chart.yaml")["appVersion"]
    assert container["image"] == f"envelope-proxy:{app_version}"


def test_values_yaml_keys_are_all_in_the_schema() -> None:
    """Every leaf key of values.yaml is covered by values.schema.json."""
    schema = helm().Chart.load(CHART_DIR).schema
    values = load_yaml(CHART_DIR / "values.yaml")

    def walk(node: dict[str, Any], props: dict[str, Any], path: str) -> None:
        for key, value in node.items():
            assert key in props.get("properties", {}), f"{path}{key} is not in the schema"
            sub = props["properties"][key]
            if isinstance(value, dict) and "properties" in sub:
                walk(value, sub, f"{path}{key}.")

    walk(values, schema, "")


@pytest.mark.parametrize("example", EXAMPLE_VALUES, ids=lambda p: p.name)
def test_example_values_render_valid_objects(example: Path, host_chart: Path) -> None:
    """Each example values file renders valid objects and a config the chart intends."""
    values = load_yaml(example)
    if "envelope-proxy" in values:  # an overlay for the host chart's values
        values = merge_values(load_yaml(HOST_EXAMPLE / "values.yaml"), values)
        objects = render(values, host_chart)
        assert "Deployment" in kinds(objects)
        expected = values["envelope-proxy"]
    else:
        objects = render(values)
        expected = values
    assert validate_objects(objects) >= 1
    config = config_yaml(objects)
    upstream = merge_values({"version": "auto"}, expected.get("upstream", {}))
    assert config["upstream"]["version"] == upstream["version"]
    assert config["shadow"] is bool(expected.get("shadow", False))


def test_examples_are_all_exercised() -> None:
    """The examples directory holds only files the tests render or run."""
    names = {p.name for p in EXAMPLES.iterdir()}
    scripts = {"check-proxy.sh", "rules-configmap.sh"}  # run in test_image_install.py / here
    assert names == {p.name for p in EXAMPLE_VALUES} | {"host-chart"} | scripts
    for path in EXAMPLE_VALUES:
        assert yaml.safe_load(path.read_text(encoding="utf-8")), path


def test_rules_configmap_script_builds_the_mounted_configmap(tmp_path: Path) -> None:
    """rules-configmap.sh prints a valid ConfigMap with the name host-values-rules.yaml
    mounts, carrying rule files the proxy loads with the same digest as the originals."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed on this machine")
    rules_dir = CHART_DIR.parents[1] / "rules"
    result = subprocess.run(
        ["sh", str(EXAMPLES / "rules-configmap.sh"), str(rules_dir), "noetl"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config_map = yaml.safe_load(result.stdout)
    wanted = load_yaml(EXAMPLES / "host-values-rules.yaml")["envelope-proxy"]["rules"]
    assert config_map["metadata"]["name"] == wanted["existingConfigMap"]
    assert validate_objects([config_map]) == 1
    mounted = tmp_path / "rules"
    mounted.mkdir()
    for name, text in config_map["data"].items():
        (mounted / name).write_text(text, encoding="utf-8")
    assert load_rules(mounted).digest == load_rules(rules_dir).digest


YAMLLINT_CONFIG = """
extends: default
rules:
  document-start: disable
  line-length: {max: 100}
  comments: {min-spaces-from-content: 1}
"""


def test_plain_yaml_files_pass_yamllint() -> None:
    """values.yaml, Chart.yaml and the example values files are clean YAML (no templates)."""
    from yamllint import linter  # type: ignore[import-untyped]
    from yamllint.config import YamlLintConfig  # type: ignore[import-untyped]

    config = YamlLintConfig(YAMLLINT_CONFIG)
    files = [CHART_DIR / "values.yaml", CHART_DIR / "Chart.yaml", *EXAMPLE_VALUES]
    files += [HOST_EXAMPLE / "values.yaml", HOST_EXAMPLE / "Chart.yaml"]
    problems = [
        f"{path.relative_to(CHART_DIR)}:{p.line}: {p.message}"
        for path in files
        for p in linter.run(path.read_text(encoding="utf-8"), config)
    ]
    assert problems == []


def test_an_image_digest_pins_the_image_and_labels_stay_valid() -> None:
    """`image.digest` pulls by digest; the version label keeps the plain tag."""
    digest = "sha256:" + "ab" * 32
    values = {"mode": "standalone", "upstream": {"url": "http://noetl:8082"}}
    objects = render(merge_values(values, {"image": {"tag": "0.1.0", "digest": digest}}))
    _, container = proxy_container(find(objects, "Deployment"))
    assert container["image"] == f"envelope-proxy:0.1.0@{digest}"
    versions = {o["metadata"]["labels"]["app.kubernetes.io/version"] for o in objects}
    assert versions == {"0.1.0"}
