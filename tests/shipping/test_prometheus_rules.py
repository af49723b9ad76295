"""The chart's PrometheusRule: rendered only when asked, checked and unit-tested by promtool.

The rule groups are taken out of the rendered object and given to the real `promtool`
(`check rules`, then `test rules` with synthetic series: a legacy client seen only by a
pod that was later replaced, a canonical client on another pod, and a legacy client in
another namespace that the rule's selector leaves out).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.observability import fleet
from tests.shipping.chart import find, kinds, render

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="needs Debian's prometheus package (.ci/run installs it)"
)
HOUR = {"config": {"file": {"clients": {"sunset_window_seconds": 3600}}}}


def rule_groups(values: dict[str, Any]) -> dict[str, Any]:
    rule = find(render(values), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "noetl"
    groups: dict[str, Any] = rule["spec"]
    return groups


def rules_by_name(groups: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r.get("record") or r["alert"]: r for g in groups["groups"] for r in g["rules"]}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_prometheus_rule_is_opt_in_and_alerts_only_after_the_cutover() -> None:
    """Off by default; on, the recording rules use the fleet expressions over the proxy's
    sunset window; the alert appears only with cutoverDone."""
    assert "PrometheusRule" not in kinds(render())
    rules = rules_by_name(rule_groups({"metrics": {"prometheusRule": {"enabled": True}}}))
    assert set(rules) == {
        "envelope_proxy:legacy_last_seen_timestamp_seconds:max_over_window",
        "envelope_proxy:clients_on_legacy_shapes:count",
    }
    selector = 'namespace="noetl"'
    last_seen = rules["envelope_proxy:legacy_last_seen_timestamp_seconds:max_over_window"]
    assert last_seen["expr"] == fleet.legacy_last_seen_expr(selector, 86400)
    values = {"metrics": {"prometheusRule": {"enabled": True, "cutoverDone": True}}}
    rules = rules_by_name(rule_groups({**HOUR, **values}))
    alert = rules["EnvelopeProxyLegacyShapeAfterCutover"]
    assert alert["expr"] == fleet.legacy_recent_expr(selector, 300)
    assert rules["envelope_proxy:clients_on_legacy_shapes:count"]["expr"] == (
        fleet.legacy_clients_expr(selector, 3600)
    )
    custom = {"enabled": True, "selector": 'job="proxies"', "labels": {"release": "kps"}}
    rule = find(render({"metrics": {"prometheusRule": custom}}), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert 'job="proxies"' in rule["spec"]["groups"][0]["rules"][0]["expr"]


@needs_promtool
def test_promtool_checks_and_unit_tests_the_rules(tmp_path: Path) -> None:
    """promtool accepts the rules, and on synthetic series the fleet count follows a legacy
    client through its pod's replacement until the window has passed, and the alert fires
    for a legacy shape after the cutover (never for another namespace's client)."""
    values = {**HOUR, "metrics": {"prometheusRule": {"enabled": True, "cutoverDone": True}}}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(values)), encoding="utf-8")
    checked = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 3 rules found" in checked.stdout

    last_seen = "envelope_proxy_client_last_seen_timestamp_seconds"
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # pod a sees the legacy client every minute for 10 minutes, then is replaced
                    {
                        "series": f'{last_seen}{{namespace="noetl",pod="a",client="old",'
                        'shape="event_request"}',
                        "values": "60+60x9",
                    },
                    # pod b, the replacement: only the canonical client
                    {
                        "series": f'{last_seen}{{namespace="noetl",pod="b",client="new",'
                        'shape="executor_event"}',
                        "values": "_x10 660+60x120",
                    },
                    {
                        "series": f'{last_seen}{{namespace="other",pod="x",client="elsewhere",'
                        'shape="worker_event"}',
                        "values": "60+60x130",
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": "envelope_proxy:clients_on_legacy_shapes:count",
                        "eval_time": eval_time,
                        "exp_samples": [
                            {
                                "labels": "envelope_proxy:clients_on_legacy_shapes:count",
                                "value": value,
                            }
                        ],
                    }
                    # replaced at 10 min: still counted until its last event leaves the hour
                    for eval_time, value in (("5m", 1), ("30m", 1), ("65m", 1), ("75m", 0))
                ]
                + [
                    {
                        "expr": "envelope_proxy:legacy_last_seen_timestamp_seconds:max_over_window",
                        "eval_time": "30m",
                        "exp_samples": [
                            {
                                "labels": "envelope_proxy:legacy_last_seen_timestamp_seconds:"
                                'max_over_window{client="old",shape="event_request"}',
                                "value": 600,
                            }
                        ],
                    }
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "8m",
                        "alertname": "EnvelopeProxyLegacyShapeAfterCutover",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "client": "old",
                                    "shape": "event_request",
                                },
                                "exp_annotations": {
                                    "summary": "old sent a legacy event_request envelope after "
                                    "the cutover was declared done",
                                    "description": "The client old sent event_request in the "
                                    "last 5 minutes; metrics.prometheusRule.cutoverDone says no "
                                    "client should. Check it with envelope-proxy clients "
                                    "--prometheus.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "EnvelopeProxyLegacyShapeAfterCutover",
                        "exp_alerts": [],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests), encoding="utf-8")
    tested = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
