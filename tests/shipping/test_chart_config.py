"""The config.yaml the chart renders, and how config changes reach running pods.

Every rendered config.yaml is loaded with the proxy's own settings loader, so the chart can
never ship a file the proxy refuses. The version toggle must reach the file without
touching the pod template (the in-process reload applies it); settings the proxy reads only
at start must change the pod template (a rollout applies them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import proxy.config
from proxy.envelope import load_rules
from tests.shipping.chart import (
    HOST_EXAMPLE,
    REPO,
    config_yaml,
    find,
    load_yaml,
    merge_values,
    render,
    render_files,
)

STANDALONE: dict[str, Any] = {"mode": "standalone", "upstream": {"url": "http://noetl:8082"}}
RESTART_KEY = "checksum/envelope-proxy-restart"
CONFIG_KEY = "checksum/envelope-proxy-config"

# One values change per setting the proxy reads only at start (proxy.config.RESTART_ONLY).
RESTART_ONLY_VALUES: dict[str, dict[str, Any]] = {
    "listen": {"ports": {"proxy": 8081}},
    "admin_listen": {"ports": {"admin": 9091}},
    "workers": {"config": {"file": {"workers": 2}}},
    "upstream.pool_size": {"config": {"file": {"upstream": {"pool_size": 50}}}},
    "limits.keepalive_timeout_seconds": {
        "config": {"file": {"limits": {"keepalive_timeout_seconds": 5}}}
    },
    "lifecycle.shutdown_timeout_seconds": {
        "config": {"file": {"lifecycle": {"shutdown_timeout_seconds": 15}}}
    },
    "envelope.machine_id": {"config": {"file": {"envelope": {"machine_id": 7}}}},
    "clients": {"config": {"file": {"clients": {"max_clients": 100}}}},
    "tracing": {"tracing": {"serviceName": "noetl-proxy"}},
    "shadow": {"shadow": True},
    "log": {"log": {"format": "json"}},
    "quarantine": {"quarantine": {"enabled": True}},
}
# Settings the live reload applies: changing them must not roll the pods by itself.
RELOADABLE_VALUES: dict[str, dict[str, Any]] = {
    "upstream.version": {"upstream": {"version": "v2"}},
    "upstream.url": {"upstream": {"url": "http://noetl-v2:8082"}},
    "upstream.timeout_seconds": {"config": {"file": {"upstream": {"timeout_seconds": 10}}}},
    "limits": {"config": {"file": {"limits": {"max_inflight": 64}}}},
    "limits.max_inflight_bytes": {"config": {"file": {"limits": {"max_inflight_bytes": 1 << 27}}}},
    "limits.per_peer": {
        "config": {
            "file": {
                "limits": {"max_inflight_per_peer": 64, "max_inflight_bytes_per_peer": 1 << 24}
            }
        }
    },
    "limits.max_passthrough_body_bytes": {
        "config": {"file": {"limits": {"max_passthrough_body_bytes": 1 << 20}}}
    },
    "envelope.mint": {"config": {"file": {"envelope": {"mint": "never"}}}},
    "lifecycle.drain_seconds": {"config": {"file": {"lifecycle": {"drain_seconds": 3}}}},
    "rules": {"rules": {"existingConfigMap": "noetl-envelope-rules"}},
    "mode": {"proxyMode": "observe"},
}


def load_settings_from(config: dict[str, Any], directory: Path) -> Any:
    """The proxy's Settings for a rendered config.yaml (no ENVELOPE_PROXY_* from this shell)."""
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return proxy.config.load_settings(path, environ={})


def pod_annotations(values: dict[str, Any]) -> dict[str, str]:
    deployment = find(render(values), "Deployment")
    annotations: dict[str, str] = deployment["spec"]["template"]["metadata"].get("annotations", {})
    return annotations


def pod_template(values: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = find(render(values), "Deployment")["spec"]["template"]
    return template


@pytest.mark.parametrize("version", ["auto", "v1", "v2", "2.19.1", "2.9.0"])
def test_version_toggle_reaches_config_and_the_proxy_accepts_it(
    version: str, tmp_path: Path, host_chart: Path
) -> None:
    """upstream.version in the host chart's values is the version in the rendered config."""
    values = merge_values(
        load_yaml(HOST_EXAMPLE / "values.yaml"),
        {"envelope-proxy": {"upstream": {"version": version}}},
    )
    config = config_yaml(render(values, host_chart))
    assert config["upstream"]["version"] == version
    assert isinstance(config["upstream"]["version"], str)
    settings = load_settings_from(config, tmp_path)
    assert settings.upstream.version == version
    assert str(settings.upstream.url).rstrip("/") == "http://127.0.0.1:8082"


def test_version_flip_changes_only_the_configmap() -> None:
    """With rollOnChange off, flipping the version leaves the pod template untouched."""
    before = render(STANDALONE)
    after = render(merge_values(STANDALONE, {"upstream": {"version": "v2"}}))
    assert find(before, "Deployment") == find(after, "Deployment")
    assert config_yaml(before)["upstream"]["version"] == "auto"
    assert config_yaml(after)["upstream"]["version"] == "v2"


def test_roll_on_change_checksum_follows_the_config() -> None:
    """With rollOnChange on, the config checksum changes with the config and rules."""
    rolling = merge_values(STANDALONE, {"config": {"rollOnChange": True}})
    base = pod_annotations(rolling)[CONFIG_KEY]
    assert len(base) == 64
    assert pod_annotations(rolling)[CONFIG_KEY] == base  # stable across renders
    flipped = pod_annotations(merge_values(rolling, {"upstream": {"version": "v2"}}))
    assert flipped[CONFIG_KEY] != base
    ruled = pod_annotations(merge_values(rolling, {"rules": {"files": {"status.yaml": "a: 1"}}}))
    assert ruled[CONFIG_KEY] != base


def test_config_checksum_absent_when_roll_on_change_is_off() -> None:
    """Without rollOnChange only the start-only checksum is on the pod template."""
    assert set(pod_annotations(STANDALONE)) == {RESTART_KEY}


def test_restart_checksum_covers_exactly_the_start_only_settings() -> None:
    """Each start-only setting rolls the pods; reloadable ones do not. The list matches the
    proxy's own RESTART_ONLY, so a new start-only setting cannot be forgotten here."""
    assert set(RESTART_ONLY_VALUES) == set(proxy.config.RESTART_ONLY)
    base = pod_annotations(STANDALONE)[RESTART_KEY]
    for setting, change in RESTART_ONLY_VALUES.items():
        changed = pod_annotations(merge_values(STANDALONE, change))[RESTART_KEY]
        assert changed != base, f"changing {setting} does not roll the pods"
    for setting, change in RELOADABLE_VALUES.items():
        same = pod_annotations(merge_values(STANDALONE, change))[RESTART_KEY]
        assert same == base, f"changing {setting} rolls the pods although it reloads live"


def test_user_pod_annotations_are_kept_next_to_checksums() -> None:
    """podAnnotations from values are merged with the chart's checksum annotations."""
    annotations = pod_annotations(merge_values(STANDALONE, {"podAnnotations": {"team": "noetl"}}))
    assert annotations["team"] == "noetl"
    assert RESTART_KEY in annotations


@pytest.mark.parametrize(
    "values",
    [
        {},
        STANDALONE,
        {"shadow": True, "upstream": {"version": "v1"}},
        {
            "rules": {"existingConfigMap": "custom"},
            "tracing": {"otlpEndpoint": "http://otel:4318", "serviceName": "p"},
            "config": {
                "file": {
                    "workers": 2,
                    "upstream": {"timeout_seconds": 20, "pool_size": 10},
                    "limits": {
                        "max_body_bytes": 1048576,
                        "max_inflight": 64,
                        "max_inflight_bytes": 8388608,
                        "keepalive_timeout_seconds": 5,
                    },
                    "envelope": {"mint": "never", "machine_id": 7},
                    "lifecycle": {"drain_seconds": 3, "shutdown_timeout_seconds": 10},
                    "clients": {"sources": ["peer"], "sunset_window_seconds": 3600},
                }
            },
        },
    ],
    ids=["defaults", "standalone", "shadow-v1", "everything"],
)
def test_rendered_config_loads_in_the_proxy(values: dict[str, Any], tmp_path: Path) -> None:
    """The proxy's settings loader accepts what the chart renders, value for value."""
    config = config_yaml(render(values))
    settings = load_settings_from(config, tmp_path)
    assert settings.listen == config["listen"]
    assert settings.shadow is config["shadow"]
    assert settings.upstream.version == config["upstream"]["version"]
    assert settings.lifecycle.drain_seconds == config["lifecycle"]["drain_seconds"]
    assert str(settings.clients.state_file) == "/var/lib/envelope-proxy/clients.json"
    if "rules_dir" in config:
        assert str(settings.rules_dir) == "/etc/envelope-proxy/rules"


def test_inline_rules_carry_the_rule_files_byte_for_byte(tmp_path: Path) -> None:
    """The default rules shipped inline load from the mounted directory with the same digest."""
    files = {p.name: p.read_text(encoding="utf-8") for p in sorted((REPO / "rules").glob("*.yaml"))}
    assert files, "no rule files in rules/"
    objects = render(merge_values(STANDALONE, {"rules": {"files": files}}))
    data = find(objects, "ConfigMap", "noetl-envelope-proxy-rules")["data"]
    mounted = tmp_path / "rules"
    mounted.mkdir()
    for name, text in data.items():
        (mounted / name).write_text(text, encoding="utf-8")
    assert data == files
    assert load_rules(mounted).digest == load_rules(REPO / "rules").digest


@pytest.mark.parametrize("values", [{}, STANDALONE], ids=["sidecar", "standalone"])
def test_machine_id_is_auto_by_default_so_each_pod_mints_its_own(
    values: dict[str, Any], tmp_path: Path
) -> None:
    """The rendered config asks for `machine_id: auto` unless the values set an id, and the
    proxy accepts both."""
    config = config_yaml(render(values))
    assert config["envelope"]["machine_id"] == "auto"
    assert load_settings_from(config, tmp_path).envelope.machine_id == "auto"
    pinned = merge_values(values, {"config": {"file": {"envelope": {"machine_id": 12}}}})
    config = config_yaml(render(pinned))
    assert config["envelope"] == {"machine_id": 12}
    assert load_settings_from(config, tmp_path).envelope.machine_id == 12


@pytest.mark.parametrize("values", [{}, STANDALONE], ids=["sidecar", "standalone"])
def test_log_values_reach_the_proxy_config(values: dict[str, Any], tmp_path: Path) -> None:
    """`log.format`, `.level`, `.access` and `.levels` become the config's log section."""
    assert (
        load_settings_from(config_yaml(render(values)), tmp_path).log == proxy.config.LogSettings()
    )
    levels = {"proxy.server.reload": "debug", "aiohttp": "error"}
    chosen = merge_values(
        values, {"log": {"format": "json", "level": "warning", "access": True, "levels": levels}}
    )
    settings = load_settings_from(config_yaml(render(chosen)), tmp_path)
    assert (settings.log.format, settings.log.level, settings.log.access) == (
        "json",
        "warning",
        True,
    )
    assert settings.log.levels == levels


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity in MiB (the binary suffixes the chart uses)."""
    for suffix, factor in (("Gi", 1024.0), ("Mi", 1.0), ("Ki", 1 / 1024)):
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * factor
    raise AssertionError(f"unexpected memory quantity {quantity!r}")


def test_default_memory_limit_holds_the_inflight_bytes_twice_over() -> None:
    """The default memory limit leaves room for max_inflight_bytes of bodies plus their
    converted copies (twice the bound) and the process's own ~100 MiB."""
    values = load_yaml(REPO / "helm" / "envelope-proxy" / "values.yaml")
    inflight = proxy.config.LimitSettings().max_inflight_bytes / (1 << 20)
    limit = mebibytes(values["resources"]["limits"]["memory"])
    assert limit >= 2 * inflight + 100
    assert mebibytes(values["resources"]["requests"]["memory"]) < limit


def test_mode_and_quarantine_values_reach_the_proxy_config(tmp_path: Path) -> None:
    """proxyMode and quarantine.* become the proxy's mode and quarantine settings, and the
    quarantine directory lies on the writable state volume."""
    values = merge_values(
        STANDALONE,
        {"proxyMode": "observe", "quarantine": {"enabled": True, "maxBytes": 1 << 20}},
    )
    objects = render(values)
    settings = load_settings_from(config_yaml(objects), tmp_path)
    assert settings.mode == "observe"
    assert settings.quarantine.enabled is True
    assert settings.quarantine.max_bytes == 1 << 20
    container = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    state = mounts["/var/lib/envelope-proxy"]
    assert not state.get("readOnly", False)
    assert Path(str(settings.quarantine.dir)).is_relative_to(state["mountPath"])
    defaults = load_settings_from(config_yaml(render(STANDALONE)), tmp_path)
    assert (defaults.mode, defaults.quarantine.enabled) == ("enforce", False)


def test_notes_point_at_observe_results_and_the_quarantine_when_on() -> None:
    def notes(values: dict[str, Any]) -> str:
        files = render_files(values)
        return next(text for path, text in files.items() if path.endswith("NOTES.txt"))

    default = notes({})
    assert "envelope_proxy_observe_total" not in default
    assert "/rejections" not in default
    on = notes({"proxyMode": "observe", "quarantine": {"enabled": True}})
    assert 'envelope_proxy_observe_total{result!="ok"}' in on
    assert "envelope-proxy quarantine list --dir /var/lib/envelope-proxy/quarantine" in on
