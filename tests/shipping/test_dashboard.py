"""The Grafana dashboard: valid JSON that queries only metrics the proxy exports.

The metric families are checked against the list the proxy documents and against the
real registry of `proxy.observability.metrics`, so a renamed metric breaks this test
instead of leaving an empty panel.
"""

from __future__ import annotations

import json
import re
from typing import Any

from proxy.observability import fleet
from proxy.observability.metrics import ProxyMetrics
from tests.shipping.chart import CHART_DIR, find, render

DASHBOARD = CHART_DIR / "dashboards" / "envelope-proxy.json"
# family -> label names, as the proxy documents them
EXPORTED: dict[str, tuple[str, ...]] = {
    "envelope_proxy_events_total": ("client", "shape", "target", "outcome"),
    "envelope_proxy_client_last_seen_timestamp_seconds": ("client", "shape"),
    "envelope_proxy_upstream_request_duration_seconds": ("target", "outcome"),
    "envelope_proxy_upstream_target_info": ("target", "version"),
    "envelope_proxy_config_reloads_total": ("result",),
    "envelope_proxy_inflight_requests": (),
    "envelope_proxy_shadow_total": ("client", "target", "result"),
    "envelope_proxy_ledger_events": ("client", "shape"),
    "envelope_proxy_ledger_window_seconds": (),
    "envelope_proxy_ledger_tracking_since_timestamp_seconds": (),
    "envelope_proxy_ledger_partial": (),
    "envelope_proxy_build_info": ("version",),
    "envelope_proxy_event_request_duration_seconds": ("target", "outcome"),
    "envelope_proxy_batch_items_total": ("target", "outcome"),
    "envelope_proxy_passthrough_requests_total": ("status_class",),
    "envelope_proxy_passthrough_request_duration_seconds": ("status_class",),
    "envelope_proxy_rejections_total": ("client", "code"),
    "envelope_proxy_observe_total": ("client", "target", "result"),
    "envelope_proxy_quarantine_records_total": ("result",),
    "envelope_proxy_quarantine_dropped_segments_total": (),
    "envelope_proxy_quarantine_dropped_records_total": (),
    "envelope_proxy_quarantine_bytes": (),
}
HISTOGRAMS = {
    "envelope_proxy_upstream_request_duration_seconds",
    "envelope_proxy_event_request_duration_seconds",
    "envelope_proxy_passthrough_request_duration_seconds",
}
METRIC = re.compile(r"\benvelope_proxy_[a-z_]+")


def load() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return exprs


def family(series: str) -> str:
    """The family a series name belongs to (histogram _bucket/_sum/_count folded)."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = series.removesuffix(suffix)
        if base != series and base in HISTOGRAMS:
            return base
    return series


def test_dashboard_is_a_grafana_dashboard() -> None:
    """It parses, has a stable uid, unique panel ids, and every panel has a query."""
    dashboard = load()
    assert dashboard["uid"] == "envelope-proxy"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"])
        assert panel["datasource"]["uid"] == "${datasource}"


def test_every_queried_metric_is_exported() -> None:
    """Each envelope_proxy_* name in a query is a family the proxy exports."""
    used = {family(name) for expr in expressions(load()) for name in METRIC.findall(expr)}
    assert used
    assert used <= set(EXPORTED), used - set(EXPORTED)


def test_exported_families_match_the_proxy_registry() -> None:
    """The documented families and labels are the ones the proxy's registry exposes."""
    metrics = ProxyMetrics()
    families = metrics.event_families
    families.observe("c", "worker_event", "event_request", "forwarded", 1.0, 0.01, None, None)
    families.observe("c", "batch", "event_request", "forwarded", 1.0, 0.01, 0.02, 3)
    metrics.observe_passthrough(200, 0.01)
    metrics.observe_shadow("c", "executor_event", "ok")
    metrics.observe_rejection("c", "unknown_shape")
    metrics.observe_would("c", "event_request", "ok")
    metrics.observe_quarantine(written=1)
    metrics.set_target("event_request", "2.9.0")
    metrics.count_reload(True)
    metrics.seed_ledger(86400.0, 1.0, False, [])
    exposed: dict[str, tuple[str, ...]] = {}
    for metric in metrics.registry.collect():
        for sample in metric.samples:
            name = family(sample.name)
            if name.startswith("envelope_proxy_") and not name.endswith("_created"):
                labels = tuple(k for k in sample.labels if k != "le")
                exposed[name] = tuple(sorted(set(exposed.get(name, ())) | set(labels)))
    assert exposed == {name: tuple(sorted(labels)) for name, labels in EXPORTED.items()}


def test_dashboard_answers_the_cutover_questions() -> None:
    """Adoption by client and shape, legacy clients, upstream errors, latency, shadow."""
    exprs = expressions(load())
    joined = "\n".join(exprs)
    assert any("envelope_proxy_events_total" in e and "by (client, shape)" in e for e in exprs)
    # Legacy means neither canonical nor refused-before-detection, as in the sunset verdict.
    legacy = 'envelope_proxy_client_last_seen_timestamp_seconds{shape!~"executor_event|unknown"'
    assert legacy in joined
    assert 'outcome=~"upstream_failed|upstream_rejected"' in joined
    for histogram in (
        "envelope_proxy_upstream_request_duration_seconds_bucket",
        "envelope_proxy_event_request_duration_seconds_bucket",
    ):
        quantiles = [
            q
            for e in exprs
            if histogram in e
            for q in re.findall(r"histogram_quantile\((0\.\d+),", e)
        ]
        assert sorted(quantiles) == ["0.5", "0.95", "0.99"], histogram
    assert "envelope_proxy_passthrough_requests_total" in joined
    assert 'envelope_proxy_shadow_total{result!="ok"' in joined
    assert any("envelope_proxy_rejections_total" in e and "by (client, code)" in e for e in exprs)
    assert 'envelope_proxy_observe_total{result!="ok"' in joined


def test_share_by_shape_leaves_out_bodies_refused_before_detection() -> None:
    """The share of events by shape divides detected shapes by detected shapes only."""
    [panel] = [p for p in load()["panels"] if p["title"] == "Share of events by shape"]
    [target] = panel["targets"]
    selectors = re.findall(r"envelope_proxy_events_total\{([^}]*)\}", target["expr"])
    assert len(selectors) == 2
    assert all('shape!="unknown"' in selector for selector in selectors)


def test_dashboard_configmap_carries_the_file_for_the_grafana_sidecar() -> None:
    """dashboards.enabled renders a ConfigMap labelled grafana_dashboard "1" with the JSON."""
    objects = render({"dashboards": {"enabled": True}})
    config_map = find(objects, "ConfigMap", "noetl-envelope-proxy-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["envelope-proxy.json"]) == load()
    assert "noetl-envelope-proxy-dashboard" not in {o["metadata"]["name"] for o in render()}


def test_fleet_verdict_panel_uses_the_command_s_and_the_rule_s_expression() -> None:
    """The fleet-wide verdict panel queries what `clients --prometheus` and the
    PrometheusRule's recording rule compute, over the same 24 h, for every pod."""
    (panel,) = [p for p in load()["panels"] if p["title"].startswith("Fleet-wide sunset verdict")]
    (target,) = panel["targets"]
    assert target["expr"] == fleet.legacy_clients_expr("", 86400)
    rule = find(render({"metrics": {"prometheusRule": {"enabled": True}}}), "PrometheusRule")
    recorded = {r["record"]: r["expr"] for r in rule["spec"]["groups"][0]["rules"]}
    assert recorded["envelope_proxy:clients_on_legacy_shapes:count"] == (
        fleet.legacy_clients_expr('namespace="noetl"', 86400)
    )
    mappings = panel["fieldConfig"]["defaults"]["mappings"]
    assert mappings[0]["options"]["0"]["text"] == "ready to sunset v1"
