"""The chart's rendered objects: the standalone workload, the sidecar in a host pod, rules.

Every render goes through the real Helm engine and every object is checked against the
strict Kubernetes schemas for 1.29 and the newest version the validator knows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.shipping.chart import (
    CHART_DIR,
    HOST_EXAMPLE,
    config_yaml,
    find,
    kinds,
    load_yaml,
    merge_values,
    pod_spec,
    proxy_container,
    render,
    validate_objects,
)

STANDALONE: dict[str, Any] = {
    "mode": "standalone",
    "upstream": {"url": "http://noetl-server.noetl.svc:8082"},
}
ADMIN_PATHS = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}


def host_values(*overlays: dict[str, Any]) -> dict[str, Any]:
    return merge_values(load_yaml(HOST_EXAMPLE / "values.yaml"), *overlays)


def assert_secure_proxy(container: dict[str, Any]) -> None:
    """Non-root, read-only, no privileges, probes on the admin port, mounts without subPath."""
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"proxy": 8080, "proxy-admin": 9090}
    for probe, path in ADMIN_PATHS.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "proxy-admin"}, probe
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert {"/etc/envelope-proxy", "/tmp", "/var/lib/envelope-proxy"} <= set(mounts)
    assert all("subPath" not in m and "subPathExpr" not in m for m in mounts.values())
    assert mounts["/etc/envelope-proxy"]["readOnly"] is True
    assert container["args"] == ["--config", "/etc/envelope-proxy/config.yaml"]


def assert_volumes_back_mounts(workload: dict[str, Any], config_map: str) -> None:
    """Every proxy mount has a volume; config comes from the ConfigMap, scratch from emptyDir."""
    volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
    _, container = proxy_container(workload)
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes, mount
    assert volumes["envelope-proxy-config"]["configMap"]["name"] == config_map
    assert "emptyDir" in volumes["envelope-proxy-tmp"]
    assert "emptyDir" in volumes["envelope-proxy-state"]


def grace_floor(config: dict[str, Any]) -> int:
    """drain_seconds + shutdown_timeout_seconds of a rendered config (proxy defaults if unset)."""
    lifecycle = config.get("lifecycle", {})
    return int(lifecycle.get("drain_seconds", 5) + lifecycle.get("shutdown_timeout_seconds", 20))


def test_defaults_render_only_the_config_map() -> None:
    """With default values (sidecar mode) the chart renders just the proxy's ConfigMap."""
    objects = render()
    assert kinds(objects) == ["ConfigMap"]
    assert objects[0]["metadata"]["name"] == "noetl-envelope-proxy-config"
    config = config_yaml(objects)
    assert config["upstream"] == {"url": "http://127.0.0.1:8082", "version": "auto"}
    assert config["listen"] == "0.0.0.0:8080"
    assert config["admin_listen"] == "0.0.0.0:9090"
    assert validate_objects(objects) == 1


def test_standalone_renders_a_hardened_deployment_service_pdb_and_monitor() -> None:
    """Standalone mode: Deployment + Service + PDB + ServiceMonitor, secure and probed."""
    values = merge_values(
        STANDALONE,
        {"replicaCount": 3, "metrics": {"serviceMonitor": {"enabled": True}}},
    )
    objects = render(values)
    assert kinds(objects) == [
        "ConfigMap",
        "Deployment",
        "Pod",
        "PodDisruptionBudget",
        "Service",
        "ServiceMonitor",
    ]
    assert validate_objects(objects) == 5
    deployment = find(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    spec = pod_spec(deployment)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["automountServiceAccountToken"] is False
    section, container = proxy_container(deployment)
    assert section == "containers"
    assert "restartPolicy" not in container
    assert_secure_proxy(container)
    assert_volumes_back_mounts(deployment, "noetl-envelope-proxy-config")
    assert spec["terminationGracePeriodSeconds"] >= grace_floor(config_yaml(objects)) + 10
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert [c["topologyKey"] for c in spec["topologySpreadConstraints"]] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    service = find(objects, "Service")
    assert service["spec"]["selector"] == selector
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        "proxy": "proxy",
        "proxy-admin": "proxy-admin",
    }
    pdb = find(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    monitor = find(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"] == selector
    assert monitor["spec"]["endpoints"][0]["port"] == "proxy-admin"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert config_yaml(objects)["upstream"]["url"] == "http://noetl-server.noetl.svc:8082"


@pytest.mark.parametrize(
    ("overrides", "expect_pdb"),
    [
        ({"replicaCount": 1}, False),
        ({"replicaCount": 2, "podDisruptionBudget": {"enabled": False}}, False),
        ({"replicaCount": 2}, True),
    ],
)
def test_pdb_only_when_enabled_with_two_or_more_replicas(
    overrides: dict[str, Any], expect_pdb: bool
) -> None:
    """A PDB on a single replica would block node drains, so it needs replicas >= 2."""
    objects = render(merge_values(STANDALONE, overrides))
    assert ("PodDisruptionBudget" in kinds(objects)) is expect_pdb


def test_native_sidecar_in_host_chart(host_chart: Path) -> None:
    """Native mode: the proxy is an init container with restartPolicy Always and a startup
    probe, the host Service targets the proxy port, the proxy targets the server on loopback."""
    objects = render(host_values(), host_chart)
    assert kinds(objects) == ["ConfigMap", "Deployment", "Service"]
    assert validate_objects(objects) == 3
    deployment = find(objects, "Deployment")
    section, container = proxy_container(deployment)
    assert section == "initContainers"
    assert container["restartPolicy"] == "Always"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert "lifecycle" not in container
    assert_secure_proxy(container)
    assert_volumes_back_mounts(deployment, "noetl-envelope-proxy-config")
    spec = pod_spec(deployment)
    assert [c["name"] for c in spec["containers"]] == ["noetl-server"]
    assert spec["containers"][0]["ports"][0]["containerPort"] == 8082
    service = find(objects, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "proxy"
    config = config_yaml(objects)
    assert config["upstream"]["url"] == "http://127.0.0.1:8082"
    assert spec["terminationGracePeriodSeconds"] >= grace_floor(config) + 10
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert set(annotations) == {"checksum/envelope-proxy-restart"}


def test_classic_sidecar_in_host_chart(host_chart: Path) -> None:
    """Classic mode: a second regular container with a preStop sleep, valid on old clusters."""
    values = host_values(load_yaml(CHART_DIR / "examples" / "host-values-classic.yaml"))
    objects = render(values, host_chart)
    assert validate_objects(objects, ("1.25.0", "1.29.0", "latest")) == 3
    deployment = find(objects, "Deployment")
    section, container = proxy_container(deployment)
    assert section == "containers"
    assert "initContainers" not in pod_spec(deployment)
    assert "restartPolicy" not in container
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert_secure_proxy(container)
    config = config_yaml(objects)
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= grace_floor(config) + 5 + 10


def test_native_sidecar_is_rejected_by_the_1_27_schema(host_chart: Path) -> None:
    """The reason the chart refuses native mode below 1.29: older API schemas reject it."""
    deployment = find(render(host_values(), host_chart), "Deployment")
    with pytest.raises(kubernetes_validate.ValidationError, match="restartPolicy"):
        kubernetes_validate.validate(deployment, "1.27.0", strict=True)


def test_inline_rules_are_a_configmap_mounted_as_a_directory() -> None:
    """rules.files becomes a ConfigMap mounted at /etc/envelope-proxy/rules; rules_dir follows."""
    rules = {"shapes.yaml": "order: []\n", "versions.yaml": "x: 1\n"}
    objects = render(merge_values(STANDALONE, {"rules": {"files": rules}}))
    assert validate_objects(objects) == 6  # two ConfigMaps, Deployment, Service, PDB, test Pod
    rules_map = find(objects, "ConfigMap", "noetl-envelope-proxy-rules")
    assert rules_map["data"] == rules
    deployment = find(objects, "Deployment")
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert volumes["envelope-proxy-rules"]["configMap"]["name"] == "noetl-envelope-proxy-rules"
    _, container = proxy_container(deployment)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "envelope-proxy-rules")
    assert mount == {
        "name": "envelope-proxy-rules",
        "mountPath": "/etc/envelope-proxy/rules",
        "readOnly": True,
    }
    assert config_yaml(objects)["rules_dir"] == "/etc/envelope-proxy/rules"


def test_existing_rules_configmap_is_mounted_not_rendered(host_chart: Path) -> None:
    """rules.existingConfigMap mounts the named ConfigMap and renders none of its own."""
    values = host_values(load_yaml(CHART_DIR / "examples" / "host-values-rules.yaml"))
    objects = render(values, host_chart)
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"] == [
        "noetl-envelope-proxy-config"
    ]
    deployment = find(objects, "Deployment")
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert volumes["envelope-proxy-rules"]["configMap"]["name"] == "noetl-envelope-rules"
    _, container = proxy_container(deployment)
    assert "/etc/envelope-proxy/rules" in {m["mountPath"] for m in container["volumeMounts"]}
    assert config_yaml(objects)["rules_dir"] == "/etc/envelope-proxy/rules"
    assert validate_objects(objects) == 3


def test_pod_monitor_selects_host_pods() -> None:
    """Sidecar mode can render a PodMonitor scraping the proxy-admin port of the host pods."""
    selector = {"app.kubernetes.io/name": "noetl-server"}
    objects = render({"metrics": {"podMonitor": {"enabled": True, "selector": selector}}})
    monitor = find(objects, "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == selector
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "proxy-admin"


def test_extra_env_and_otlp_endpoint_reach_the_container_and_config() -> None:
    """OTLP can be set as the config's tracing.otlp_endpoint or as OTEL_* variables."""
    env = [{"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector:4318"}]
    values = merge_values(
        STANDALONE,
        {"extraEnv": env, "tracing": {"otlpEndpoint": "http://otel-collector:4318"}},
    )
    objects = render(values)
    _, container = proxy_container(find(objects, "Deployment"))
    assert container["env"] == env
    assert config_yaml(objects)["tracing"]["otlp_endpoint"] == "http://otel-collector:4318"
    assert validate_objects(objects) == 5  # ConfigMap, Deployment, Service, PDB, test Pod


def test_explicit_grace_period_is_kept_when_long_enough() -> None:
    """A terminationGracePeriodSeconds at or above the floor is used as given."""
    objects = render(merge_values(STANDALONE, {"terminationGracePeriodSeconds": 90}))
    assert pod_spec(find(objects, "Deployment"))["terminationGracePeriodSeconds"] == 90
