"""The fleet verdict's reading of Prometheus HTTP API answers, without a server.

Answers are written as the API returns them (`{"status": "success", "data": {...}}`), one
per query of `fleet.plan`, so each partial-data rule of the verdict is pinned here; the
live tests in tests/functional/test_fleet_prometheus.py run the same code against a real
Prometheus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxy.observability import fleet
from proxy.observability.ledger import iso
from proxy.observability.prometheus import parse_duration

NOW = 1_800_000_000.0
WINDOW = 3600.0
START = NOW - WINDOW
A = {"job": "envelope-proxy", "instance": "10.0.0.1:9090", "pod": "noetl-a"}
B = {"job": "envelope-proxy", "instance": "10.0.0.2:9090", "pod": "noetl-b"}
PLAN = fleet.plan('namespace="noetl"', WINDOW)


def vector(*rows: tuple[dict[str, str], float]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": labels, "value": [NOW, repr(value)]} for labels, value in rows],
        },
    }


def matrix(points: list[float]) -> dict[str, Any]:
    rows = [{"metric": {}, "values": [[t, "2"] for t in points]}] if points else []
    return {"status": "success", "data": {"resultType": "matrix", "result": rows}}


def full_coverage() -> dict[str, Any]:
    step = PLAN.step_seconds
    return matrix([START + k * step for k in range(int(WINDOW // step) + 1)])


def answers(**overrides: dict[str, Any]) -> dict[str, object]:
    """Two healthy pods scraped over the whole window, a canonical client; no legacy."""
    base: dict[str, object] = {
        "instances": vector((A, WINDOW), (B, WINDOW)),
        "first_sample": vector((A, START - 10), (B, START - 12)),
        "last_sample": vector((A, NOW - 20), (B, NOW - 21)),
        "latest": vector((A, NOW - 1), (B, NOW - 2)),
        "tracking_since": vector((A, START - 5000), (B, START - 4000)),
        "last_seen": vector(({"client": "new-svc", "shape": "executor_event"}, NOW - 30)),
        "events": vector(({"client": "new-svc", "shape": "executor_event"}, 12)),
        "shadow": vector(),
        "partial": vector(),
        "failed_scrapes": vector(),
        "down_now": vector(),
    }
    assert set(base) == set(PLAN.instant)
    base.update(overrides)
    return base


def report(coverage: dict[str, Any] | None = None, **overrides: dict[str, Any]) -> dict[str, Any]:
    return fleet.build_report(answers(**overrides), coverage or full_coverage(), PLAN, NOW)


def test_covered_window_without_legacy_is_ready() -> None:
    """Both pods scraped over the whole window, only canonical traffic: ready, exit 0."""
    result = report()
    assert result["ready_to_sunset_v1"] is True
    assert fleet.exit_code(result) == 0
    assert result["warnings"] == []
    assert result["instances"] == 2
    assert result["covered_range"] == {
        "from": iso(START - 12),
        "to": iso(NOW - 1),
        "complete": True,
    }
    assert result["tracking_since"] == iso(START - 5000)
    (client,) = result["clients"]
    assert client["shapes"] == {"executor_event": {"count": 12, "last_seen": iso(NOW - 30)}}
    assert (client["canonical_only"], client["blocks_sunset"]) == (True, False)


def test_legacy_seen_anywhere_is_not_ready_even_when_the_window_is_not_covered() -> None:
    """A legacy shape from a pod that is gone now, with failed scrapes and a gap: still a
    definite "not ready" (exit 1); legacy clients first, most recent first."""
    result = report(
        matrix([START + k * PLAN.step_seconds for k in range(100)]),
        last_seen=vector(
            ({"client": "new-svc", "shape": "executor_event"}, NOW - 30),
            ({"client": "old-py", "shape": "event_request"}, NOW - 900),
            ({"client": "old-rust", "shape": "worker_event"}, NOW - 600),
            ({"client": "old-rust", "shape": "executor_event"}, NOW - 60),
        ),
        events=vector(({"client": "old-py", "shape": "event_request"}, 3)),
        failed_scrapes=vector((B, 4)),
        down_now=vector((B, 0)),
    )
    assert result["ready_to_sunset_v1"] is False
    assert fleet.exit_code(result) == 1
    assert result["blocking_clients"] == ["old-rust", "old-py"]
    assert [c["client"] for c in result["clients"]] == ["old-rust", "old-py", "new-svc"]
    assert result["clients"][1]["shapes"]["event_request"]["count"] == 3
    assert (
        "noetl-b: 4 failed scrape(s) in the window (a restart or an outage)" in (result["warnings"])
    )
    assert "noetl-b is not scraped now (its last scrape failed)" in result["warnings"]
    assert any(w.startswith("no proxy has been scraped since") for w in result["warnings"])


@pytest.mark.parametrize(
    ("overrides", "coverage_points", "warning"),
    [
        pytest.param(
            {"failed_scrapes": vector((A, 2))},
            None,
            "noetl-a: 2 failed scrape(s) in the window (a restart or an outage)",
            id="failed-scrapes",
        ),
        pytest.param(
            {"down_now": vector((A, 0))},
            None,
            "noetl-a is not scraped now (its last scrape failed)",
            id="down-now",
        ),
        pytest.param(
            {"partial": vector((B, 1))},
            None,
            "noetl-b runs several workers: its series carry the first worker's traffic only",
            id="several-workers",
        ),
        pytest.param(
            {"first_sample": vector((A, START + 1200), (B, START + 1300))},
            None,
            "the series begin at " + iso(START + 1200),
            id="retention-shorter-than-the-window",
        ),
        pytest.param(
            {},
            [START + k * 4 for k in range(901) if not 300 <= k < 400],
            f"no proxy was scraped between {iso(START + 1200 - 300)} and {iso(START + 1596)}",
            id="scrape-gap",
        ),
        pytest.param(
            {
                "instances": vector(),
                "first_sample": vector(),
                "last_sample": vector(),
                "latest": vector(),
                "last_seen": vector(),
                "events": vector(),
            },
            [],
            "no envelope-proxy series in the window for this selector",
            id="no-series",
        ),
    ],
)
def test_uncovered_window_without_legacy_cannot_tell(
    overrides: dict[str, Any], coverage_points: list[float] | None, warning: str
) -> None:
    """No legacy shape, but the series do not cover the window: could not tell (exit 2)."""
    coverage = matrix(coverage_points) if coverage_points is not None else None
    result = report(coverage, **overrides)
    assert result["ready_to_sunset_v1"] is None
    assert fleet.exit_code(result) == 2
    assert result["covered_range"]["complete"] is False
    assert any(w.startswith(warning) for w in result["warnings"]), result["warnings"]


def test_legacy_before_the_window_is_migrated_not_blocking() -> None:
    """A client whose last legacy shape is older than the window no longer blocks."""
    result = report(
        last_seen=vector(
            ({"client": "moved", "shape": "emit_request"}, START - 100),
            ({"client": "moved", "shape": "executor_event"}, NOW - 10),
            ({"client": "broken", "shape": "unknown"}, NOW - 5),
        ),
        shadow=vector(({"client": "moved", "result": "missing_field"}, 2.4)),
    )
    assert result["ready_to_sunset_v1"] is True
    moved = next(c for c in result["clients"] if c["client"] == "moved")
    assert moved["blocks_sunset"] is False
    assert moved["canonical_only"] is False
    assert moved["last_legacy_seen"] == iso(START - 100)
    assert moved["shadow_failures"] == {"missing_field": {"count": 2}}
    broken = next(c for c in result["clients"] if c["client"] == "broken")
    assert (broken["canonical_only"], broken["blocks_sunset"]) == (False, False)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        pytest.param(
            {"status": "error", "errorType": "bad_data", "error": "parse error"},
            "Prometheus refused the query: bad_data: parse error",
            id="promql-error",
        ),
        pytest.param({"data": []}, "not from the Prometheus HTTP API", id="not-prometheus"),
        pytest.param([1, 2], "not from the Prometheus HTTP API", id="not-an-object"),
        pytest.param(matrix([NOW]), "expected a vector result", id="wrong-type"),
        pytest.param(
            {"status": "success", "data": {"resultType": "vector", "result": [{"value": 1}]}},
            "malformed result",
            id="malformed",
        ),
    ],
)
def test_answers_that_are_not_a_vector_are_refused(answer: object, message: str) -> None:
    with pytest.raises(fleet.FleetError, match=message):
        fleet.vector(answer)


def test_queries_carry_the_selector_and_window() -> None:
    """Every instant query names the selector; the ledger counts use offset for the window."""
    for name, expr in PLAN.instant.items():
        assert 'namespace="noetl"' in expr, name
        assert "[3600s" in expr or name == "latest", name
    assert "offset 3600s" in PLAN.instant["events"]
    assert fleet.plan("", 60).instant["latest"] == "timestamp(envelope_proxy_ledger_window_seconds)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("{}", ""),
        ('{namespace="noetl"}', 'namespace="noetl"'),
        (' job="a", namespace=~"n.*", ', 'job="a", namespace=~"n.*"'),
    ],
)
def test_selectors_are_label_matchers(text: str, expected: str) -> None:
    assert fleet.normalise_selector(text) == expected


@pytest.mark.parametrize("text", ["noetl", 'job="a"}', 'job="a" or vector(1)', "{job=a}"])
def test_a_selector_that_is_not_matchers_is_refused(text: str) -> None:
    with pytest.raises(fleet.FleetError, match="not a list of label matchers"):
        fleet.normalise_selector(text)


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "15m", "24h", "7d", "1w")] == [
        90,
        90,
        900,
        86400,
        604800,
        604800,
    ]
    for bad in ("", "0", "1y", "-5m", "1h30m"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_exit_codes_of_local_reports() -> None:
    """/clients documents read the same way: young ledger or several workers cannot tell."""
    assert fleet.exit_code({"ready_to_sunset_v1": True, "window_observed": True}) == 0
    assert fleet.exit_code({"ready_to_sunset_v1": True, "window_observed": False}) == 2
    assert fleet.exit_code({"ready_to_sunset_v1": False, "window_observed": False}) == 1
    assert fleet.exit_code({"ready_to_sunset_v1": None, "partial": True}) == 2


RECORDED = Path(__file__).parent / "fleet_answers"


def recorded(name: str) -> dict[str, Any]:
    """Answers of a real Prometheus 2.42 scraping two proxies every second (recorded once
    from the live test's set-up; the queries are stored with them)."""
    data: dict[str, Any] = json.loads((RECORDED / name).read_text(encoding="utf-8"))
    the_plan = fleet.plan(data["selector"], data["window_seconds"])
    assert the_plan.instant == data["queries"], "the queries changed: record the answers again"
    return fleet.build_report(data["answers"], data["coverage"], the_plan, data["now"])


def test_recorded_answers_legacy_on_a_pod_that_was_killed() -> None:
    """Pod b saw the legacy client twice and was killed: not ready, both pods counted, and
    b's failed scrapes and the window's uncovered start are warned about."""
    result = recorded("legacy-pod-killed.json")
    assert fleet.exit_code(result) == 1
    assert result["blocking_clients"] == ["old-svc"]
    assert result["instances"] == 2
    assert {c["client"]: c["shapes"] for c in result["clients"]}["old-svc"]["event_request"][
        "count"
    ] == 2
    b = json.loads((RECORDED / "legacy-pod-killed.json").read_text(encoding="utf-8"))["targets"][
        "b"
    ]
    assert f"{b}: 2 failed scrape(s) in the window (a restart or an outage)" in result["warnings"]
    assert f"{b} is not scraped now (its last scrape failed)" in result["warnings"]
    assert any(w.startswith("the series begin at") for w in result["warnings"])


def test_recorded_answers_canonical_only_over_a_covered_window() -> None:
    """Two pods, canonical clients only, scraped over the whole 4 s window: ready."""
    result = recorded("canonical-only-covered.json")
    assert fleet.exit_code(result) == 0
    assert result["warnings"] == []
    assert result["instances"] == 2
    assert {c["client"] for c in result["clients"]} == {"new-svc", "other-svc"}
    assert all(c["canonical_only"] for c in result["clients"])
