"""Chart additions for who can reach what: NetworkPolicy, a separate admin Service, the
`helm test` pod, and the example host chart's hardened server container.

Rendered by the real Helm engine and validated against the Kubernetes 1.29 and latest
schemas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.shipping.chart import (
    HOST_EXAMPLE,
    find,
    kinds,
    load_yaml,
    merge_values,
    pod_spec,
    render,
    validate_objects,
)

STANDALONE: dict[str, Any] = {
    "mode": "standalone",
    "upstream": {"url": "http://noetl-server.noetl.svc:8082"},
}
SELECTOR = {"app.kubernetes.io/name": "envelope-proxy", "app.kubernetes.io/instance": "noetl"}


def service_ports(service: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["port"] for p in service["spec"]["ports"]}


def test_network_policy_opens_the_proxy_port_to_producers_and_admin_to_monitoring() -> None:
    """Two ingress rules: producers on port proxy only; monitoring and the test pod on admin."""
    producers = [{"namespaceSelector": {"matchLabels": {"team": "noetl-workers"}}}]
    values = merge_values(STANDALONE, {"networkPolicy": {"enabled": True, "producers": producers}})
    objects = render(values)
    policy = find(objects, "NetworkPolicy")
    assert validate_objects([policy]) == 1
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == SELECTOR
    assert spec["policyTypes"] == ["Ingress"]
    proxy_rule, admin_rule = spec["ingress"]
    assert proxy_rule["ports"] == [{"port": "proxy", "protocol": "TCP"}]
    assert proxy_rule["from"] == producers
    assert admin_rule["ports"] == [{"port": "proxy-admin", "protocol": "TCP"}]
    monitoring, test_pod = admin_rule["from"]
    assert monitoring == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    test = find(objects, "Pod")
    assert test_pod["podSelector"]["matchLabels"].items() <= test["metadata"]["labels"].items()
    deployment = find(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_network_policy_is_off_by_default_and_never_in_sidecar_mode() -> None:
    """Off unless enabled; in sidecar mode the host chart owns its pod's policy."""
    assert "NetworkPolicy" not in kinds(render(STANDALONE))
    assert "NetworkPolicy" not in kinds(render({"networkPolicy": {"enabled": True}}))


def test_separate_admin_service_takes_the_admin_port_off_the_producers_service() -> None:
    """With service.separateAdmin the producers' Service has the proxy port only."""
    values = merge_values(
        STANDALONE,
        {"service": {"separateAdmin": True}, "metrics": {"serviceMonitor": {"enabled": True}}},
    )
    objects = render(values)
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    assert set(services) == {"noetl-envelope-proxy", "noetl-envelope-proxy-admin"}
    assert service_ports(services["noetl-envelope-proxy"]) == {"proxy": 8080}
    admin = services["noetl-envelope-proxy-admin"]
    assert service_ports(admin) == {"proxy-admin": 9090}
    assert admin["spec"]["selector"] == SELECTOR
    assert admin["spec"]["type"] == "ClusterIP"
    assert validate_objects(list(services.values())) == 2
    monitor = find(objects, "ServiceMonitor")
    # The monitor selects by the common labels and scrapes the port only the admin one has.
    assert monitor["spec"]["selector"]["matchLabels"].items() <= admin["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "proxy-admin"
    test = find(objects, "Pod")
    assert (
        "http://noetl-envelope-proxy-admin.noetl.svc:9090/readyz"
        in test["spec"]["containers"][0]["command"][2]
    )


def test_helm_test_pod_calls_readyz_and_is_hardened() -> None:
    """A `helm test` hook pod in the proxy's image, calling the admin /readyz; no Service
    selects it."""
    objects = render(STANDALONE)
    test = find(objects, "Pod")
    assert validate_objects([test]) == 1
    annotations = test["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "test"
    assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
    spec = test["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    [container] = spec["containers"]
    deployment = find(objects, "Deployment")
    [proxy] = pod_spec(deployment)["containers"]
    assert container["image"] == proxy["image"]
    command = container["command"]
    assert command[:2] == ["python", "-c"]
    assert "http://noetl-envelope-proxy.noetl.svc:9090/readyz" in command[2]
    compile(command[2], "readyz", "exec")  # the script the pod runs is valid Python
    sc = container["securityContext"]
    assert (sc["runAsNonRoot"], sc["readOnlyRootFilesystem"]) == (True, True)
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"]["memory"]
    service = find(objects, "Service")
    assert not service["spec"]["selector"].items() <= test["metadata"]["labels"].items()
    assert "Pod" not in kinds(render(merge_values(STANDALONE, {"tests": {"enabled": False}})))


def test_host_chart_server_container_is_hardened(host_chart: Path) -> None:
    """The example host chart's own server container: non-root, read-only, no privileges,
    with requests and a memory limit (it is copy-paste material)."""
    values = load_yaml(HOST_EXAMPLE / "values.yaml")
    deployment = find(render(values, host_chart), "Deployment")
    assert validate_objects([deployment]) == 1
    spec = pod_spec(deployment)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    [server] = [c for c in spec["containers"] if c["name"] == "noetl-server"]
    sc = server["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert set(server["resources"]["requests"]) == {"cpu", "memory"}
    assert server["resources"]["limits"]["memory"]
