"""Bad values are refused at render time with a message that names the problem.

Shape errors come from values.schema.json (Helm validates it on install, upgrade, lint and
template); cross-field rules come from `fail` in the templates.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.shipping.chart import helm, render

STANDALONE: dict[str, Any] = {"mode": "standalone", "upstream": {"url": "http://noetl:8082"}}

SCHEMA_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"upstream": {"url": "ftp://noetl:8082"}}, "at '/upstream/url': 'ftp://noetl:8082' does not"),
    ({"upstream": {"url": "noetl:8082"}}, "at '/upstream/url'"),
    ({"upstream": {"version": "2.19"}}, "at '/upstream/version': '2.19' does not match pattern"),
    ({"upstream": {"version": "latest"}}, "at '/upstream/version'"),
    ({"upstream": {"version": 2}}, "at '/upstream/version'"),
    ({"mode": "sidecars"}, "at '/mode': value must be one of 'sidecar', 'standalone'"),
    ({"ports": {"proxy": 70000}}, "at '/ports/proxy': maximum"),
    ({"ports": {"admin": 0}}, "at '/ports/admin': minimum"),
    ({"service": {"port": 65536}}, "at '/service/port'"),
    ({"upsteam": {"url": "http://x:1"}}, "additional properties 'upsteam' not allowed"),
    ({"config": {"file": {"listen": "0.0.0.0:1"}}}, "at '/config/file': additional properties"),
    ({"config": {"file": {"upstream": {"url": "http://x:1"}}}}, "at '/config/file/upstream'"),
    ({"config": {"file": {"envelope": {"mint": "sometimes"}}}}, "at '/config/file/envelope/mint'"),
    ({"config": {"file": {"envelope": {"machine_id": 1024}}}}, "machine_id"),
    ({"config": {"file": {"envelope": {"machine_id": "pod"}}}}, "machine_id"),
    ({"upstream": {"url": "http://ops:secret@noetl:8082"}}, "at '/upstream/url'"),
    ({"config": {"file": {"limits": {"keepalive_timeout_seconds": 0}}}}, "keepalive_timeout"),
    ({"shadow": "yes"}, "at '/shadow'"),
    ({"image": {"tag": "0.1.0@sha256:" + "ab" * 32}}, "at '/image/tag'"),
    ({"image": {"digest": "sha256:abc"}}, "at '/image/digest'"),
    ({"rules": {"files": {"rules.txt": "x: 1"}}}, "'rules.txt' does not match pattern"),
    ({"replicaCount": 0}, "at '/replicaCount'"),
    ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
    ({"probes": {"startup": {"periodSeconds": 0}}}, "at '/probes/startup/periodSeconds'"),
]

TEMPLATE_ERRORS: list[tuple[dict[str, Any], str]] = [
    (
        {"mode": "standalone"},
        "mode=standalone forwards to upstream.url, but http://127.0.0.1:8082 is the proxy pod",
    ),
    (
        {"mode": "standalone", "upstream": {"url": "http://localhost:8082"}},
        "is the proxy pod itself",
    ),
    (
        {**STANDALONE, "terminationGracePeriodSeconds": 20},
        "terminationGracePeriodSeconds=20 is below drain_seconds \\+ shutdown_timeout_seconds "
        "\\+ 10 = 35",
    ),
    (
        {"rules": {"files": {"a.yaml": "x: 1"}, "existingConfigMap": "mine"}},
        "set either rules.files .* or rules.existingConfigMap",
    ),
    (
        {"metrics": {"podMonitor": {"enabled": True}}},
        "metrics.podMonitor.enabled needs metrics.podMonitor.selector",
    ),
]


@pytest.mark.parametrize(("values", "message"), SCHEMA_ERRORS)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    """values.schema.json refuses the value and the message points at its path."""
    engine = helm()
    with pytest.raises(engine.HelmValuesError) as caught:
        render(values)
    assert message in str(caught.value), str(caught.value)


@pytest.mark.parametrize(("values", "message"), TEMPLATE_ERRORS)
def test_templates_refuse_inconsistent_values(values: dict[str, Any], message: str) -> None:
    """Cross-field mistakes stop the render with an explanation of the fix."""
    engine = helm()
    with pytest.raises(engine.HelmRenderError, match=message):
        render(values)


@pytest.mark.parametrize("version", ["auto", "v1", "v2", "2.19.1", "3.83.1"])
def test_schema_accepts_every_documented_version(version: str) -> None:
    """The version toggle accepts auto, v1, v2 and X.Y.Z releases."""
    objects = render({"upstream": {"version": version}})
    assert objects[0]["kind"] == "ConfigMap"
