"""The sunset ledger: per-client shape history, the window verdict and the persisted form."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.observability.ledger import FORMAT, LedgerFormatError, SunsetLedger, iso

DAY = 86400.0
T0 = 1_800_000_000.0  # a fixed "now" for the whole module


def ledger(window: float = DAY, since: float = T0 - 2 * DAY) -> SunsetLedger:
    return SunsetLedger(window, tracking_since=since)


def test_shapes_are_counted_with_first_and_last_seen() -> None:
    """Each shape of a client gets a count and its first and last time."""
    book = ledger()
    book.record("svc", "event_request", T0 - 30)
    book.record("svc", "event_request", T0 - 10)
    book.record("svc", "executor_event", T0 - 20)
    (entry,) = book.report(T0)["clients"]
    assert entry["shapes"]["event_request"] == {
        "count": 2,
        "first_seen": iso(T0 - 30),
        "last_seen": iso(T0 - 10),
    }
    assert entry["shapes"]["executor_event"]["count"] == 1
    assert entry["last_seen"] == iso(T0 - 10)
    assert entry["canonical_only"] is False


def test_only_canonical_traffic_is_ready() -> None:
    """With every client on executor_event the verdict is ready and nobody blocks."""
    book = ledger()
    book.record("a", "executor_event", T0 - 5)
    book.record("b", "executor_event", T0 - 1)
    report = book.report(T0)
    assert report["ready_to_sunset_v1"] is True
    assert report["blocking_clients"] == []
    assert all(c["canonical_only"] for c in report["clients"])


@pytest.mark.parametrize("shape", ["event_request", "emit_request", "worker_event", "batch"])
def test_a_legacy_shape_within_the_window_blocks(shape: str) -> None:
    """Any recognised shape other than executor_event seen inside the window blocks the sunset."""
    book = ledger()
    book.record("new", "executor_event", T0 - 1)
    book.record("old", shape, T0 - DAY + 1)
    report = book.report(T0)
    assert report["ready_to_sunset_v1"] is False
    assert report["blocking_clients"] == ["old"]
    assert [c["client"] for c in report["clients"]] == ["old", "new"]
    assert report["clients"][0]["blocks_sunset"] is True


def test_legacy_outside_the_window_no_longer_blocks() -> None:
    """A migrated client stops blocking once its last legacy event leaves the window."""
    book = ledger()
    book.record("moved", "event_request", T0 - DAY - 1)
    book.record("moved", "executor_event", T0 - 1)
    report = book.report(T0)
    assert report["ready_to_sunset_v1"] is True
    (entry,) = report["clients"]
    assert entry["blocks_sunset"] is False
    assert entry["canonical_only"] is False
    assert entry["last_legacy_seen"] == iso(T0 - DAY - 1)
    assert book.report(T0 - 2)["ready_to_sunset_v1"] is False


def test_unclassified_bodies_do_not_block() -> None:
    """Requests refused before a shape was known are listed as `unknown` but do not block."""
    book = ledger()
    book.record("broken", "unknown", T0 - 1)
    report = book.report(T0)
    assert report["ready_to_sunset_v1"] is True
    assert report["clients"][0]["shapes"]["unknown"]["count"] == 1
    assert report["clients"][0]["canonical_only"] is False


def test_blocking_clients_are_listed_most_recent_first() -> None:
    """The blockers come first in the report, ordered by their last legacy event."""
    book = ledger()
    book.record("canon", "executor_event", T0)
    book.record("older", "event_request", T0 - 100)
    book.record("recent", "worker_event", T0 - 10)
    report = book.report(T0)
    assert report["blocking_clients"] == ["recent", "older"]
    assert [c["client"] for c in report["clients"]] == ["recent", "older", "canon"]


def test_window_observed_says_whether_the_ledger_covers_the_window() -> None:
    """A ledger younger than the window says so, so a fresh 'ready' is not over-trusted."""
    assert ledger(since=T0 - 10).report(T0)["window_observed"] is False
    assert ledger(since=T0 - DAY).report(T0)["window_observed"] is True


def test_shadow_failures_are_kept_per_client_and_code() -> None:
    """Shadow failures are counted per client by error code."""
    book = ledger()
    book.record("svc", "event_request", T0)
    book.record_shadow_failure("svc", "invalid_id", T0 - 3)
    book.record_shadow_failure("svc", "invalid_id", T0 - 2)
    book.record_shadow_failure("svc", "missing_field", T0 - 1)
    failures = book.report(T0)["clients"][0]["shadow_failures"]
    assert failures["invalid_id"]["count"] == 2
    assert failures["invalid_id"]["last_seen"] == iso(T0 - 2)
    assert failures["missing_field"]["count"] == 1


def test_state_round_trips_exactly() -> None:
    """to_state/from_state keep counts, times, failures and the tracking start."""
    book = ledger()
    book.record("a", "event_request", T0 - 7.25)
    book.record("a", "executor_event", T0 - 1.5)
    book.record_shadow_failure("a", "invalid_id", T0 - 2)
    book.record("b", "unknown", T0)
    again = SunsetLedger.from_state(book.to_state(), DAY)
    assert again.report(T0) == book.report(T0)
    assert again.to_state() == book.to_state()


def test_from_state_uses_the_current_window() -> None:
    """A changed sunset window applies to a ledger loaded from disk."""
    book = ledger()
    book.record("a", "event_request", T0 - 100)
    assert SunsetLedger.from_state(book.to_state(), 50).report(T0)["ready_to_sunset_v1"] is True


def _valid() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "tracking_since": T0,
        "clients": {
            "a": {
                "shapes": {"batch": {"count": 1, "first_seen": T0, "last_seen": T0}},
                "shadow_failures": {},
            }
        },
    }


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param((), [], id="not-an-object"),
        pytest.param(("format",), "other/9", id="wrong-format"),
        pytest.param(("tracking_since",), "yesterday", id="since-text"),
        pytest.param(("tracking_since",), True, id="since-bool"),
        pytest.param(("clients",), [], id="clients-list"),
        pytest.param(("clients", "a", "shapes"), None, id="shapes-null"),
        pytest.param(("clients", "a", "shapes", "batch", "count"), 0, id="count-zero"),
        pytest.param(("clients", "a", "shapes", "batch", "count"), 1.5, id="count-float"),
        pytest.param(("clients", "a", "shapes", "batch", "last_seen"), -1, id="negative-time"),
        pytest.param(("clients", "a", "shapes", "batch", "last_seen"), 1e20, id="time-too-far"),
        pytest.param(("tracking_since",), float("inf"), id="since-infinite"),
        pytest.param(("clients", "a", "shapes", "batch", "extra"), 1, id="extra-key"),
    ],
)
def test_from_state_rejects_malformed_data(path: tuple[str, ...], value: object) -> None:
    """Every structural problem raises LedgerFormatError instead of producing a half ledger."""
    state: Any = _valid()
    if path:
        node = state
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    else:
        state = value
    with pytest.raises(LedgerFormatError):
        SunsetLedger.from_state(state, DAY)
