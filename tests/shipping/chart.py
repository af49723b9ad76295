"""Render the envelope-proxy chart, and the example host chart that includes it, for tests.

Rendering goes through the real Helm engine (helm-python-sdk, Helm Go SDK via ctypes);
values are layered like `helm -f a.yaml -f b.yaml`. The host chart is assembled the way
`helm dependency update` would leave it: the example chart with this chart under charts/.
Rendered objects are checked against the Kubernetes OpenAPI schemas (kubernetes-validate).
"""

from __future__ import annotations

import shutil
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "envelope-proxy"
EXAMPLES = CHART_DIR / "examples"
HOST_EXAMPLE = EXAMPLES / "host-chart"
RELEASE = "noetl"
NAMESPACE = "noetl"
# Prometheus Operator CRDs: no schema in kubernetes-validate, checked by hand in the tests.
CRD_KINDS = frozenset({"ServiceMonitor", "PodMonitor", "PrometheusRule"})
# The chart's floor for native sidecars, and the newest schema the validator ships.
KUBE_VERSIONS = ("1.29.0", "latest")

Manifest = dict[str, Any]


def helm() -> ModuleType:
    """The Helm engine, or a skip where its wheel does not exist (it ships for x86_64 only)."""
    engine: ModuleType = pytest.importorskip(
        "helm_python", reason="helm-python-sdk (the Helm engine) is only built for x86_64 Linux"
    )
    return engine


@cache
def _load(chart_dir: Path) -> Any:
    return helm().Chart.load(chart_dir)


def render_files(
    values: dict[str, Any] | None = None, chart_dir: Path = CHART_DIR
) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would produce it."""
    chart = _load(chart_dir)
    rendered: dict[str, str] = chart.render(
        values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True
    )
    return rendered


def render(values: dict[str, Any] | None = None, chart_dir: Path = CHART_DIR) -> list[Manifest]:
    """Every object the chart renders with `values` (NOTES.txt left out)."""
    objects: list[Manifest] = []
    for path, text in sorted(render_files(values, chart_dir).items()):
        if not path.endswith(".yaml"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def build_host_chart(destination: Path) -> Path:
    """The example host chart with this chart packaged under charts/ (a fresh copy)."""
    host = destination / "noetl-server-example"
    shutil.copytree(HOST_EXAMPLE, host)
    shutil.copytree(CHART_DIR, host / "charts" / "envelope-proxy")
    return host


def merge_values(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers win; maps merge key by key, like repeated `helm -f`."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _merge(merged, layer)
    return merged


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a mapping"
    return data


def find(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one object of `kind` (and `name`, when given)."""
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def kinds(objects: list[Manifest]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def config_text(objects: list[Manifest]) -> str:
    """The proxy's config.yaml exactly as rendered into its ConfigMap."""
    maps = [o for o in objects if o["kind"] == "ConfigMap" and "config.yaml" in o.get("data", {})]
    assert len(maps) == 1, f"expected one ConfigMap with config.yaml, got {len(maps)}"
    text: str = maps[0]["data"]["config.yaml"]
    return text


def config_yaml(objects: list[Manifest]) -> dict[str, Any]:
    """The proxy's config.yaml as rendered into its ConfigMap, parsed."""
    data = yaml.safe_load(config_text(objects))
    assert isinstance(data, dict)
    return data


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def proxy_container(workload: Manifest) -> tuple[str, dict[str, Any]]:
    """("initContainers" | "containers", the envelope-proxy container) of a pod template."""
    spec = pod_spec(workload)
    for section in ("initContainers", "containers"):
        for container in spec.get(section, []):
            if container["name"] == "envelope-proxy":
                return section, container
    raise AssertionError("no envelope-proxy container in the pod")


def validate_objects(objects: list[Manifest], versions: tuple[str, ...] = KUBE_VERSIONS) -> int:
    """Check every non-CRD object against the strict Kubernetes schemas; returns how many."""
    checked = 0
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        for version in versions:
            wanted = kubernetes_validate.latest_version() if version == "latest" else version
            kubernetes_validate.validate(obj, wanted, strict=True)
        checked += 1
    return checked
