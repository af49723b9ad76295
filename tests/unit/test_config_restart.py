"""Start-only settings come from the models' `START_ONLY` markers; a reload keeps them."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import BaseModel

from proxy.config import (
    RESTART_ONLY,
    START_ONLY,
    Settings,
    keep_start_only,
    load_settings,
    restart_needed,
    start_only_fields,
)

# One valid change per start-only setting (a whole section changes through one of its fields).
START_ONLY_CHANGES: dict[str, object] = {
    "listen": "127.0.0.1:18080",
    "admin_listen": "127.0.0.1:19090",
    "workers": 2,
    "upstream.pool_size": 7,
    "limits.keepalive_timeout_seconds": 3,
    "lifecycle.shutdown_timeout_seconds": 4,
    "envelope.machine_id": 9,
    "clients": {"max_clients": 5},
    "tracing": {"service_name": "other"},
    "shadow": True,
    "log": {"level": "debug"},
    "quarantine": {"max_bytes": 1 << 20},
}
# One valid change per setting a live reload applies.
LIVE_CHANGES: dict[str, object] = {
    "rules_dir": "/srv/rules",
    "upstream.url": "http://other:1",
    "upstream.version": "v2",
    "upstream.probe_interval_seconds": 5,
    "upstream.connect_timeout_seconds": 1,
    "upstream.timeout_seconds": 9,
    "limits.max_body_bytes": 1024,
    "limits.max_json_depth": 8,
    "limits.batch_max_items": 9,
    "limits.max_inflight": 10,
    "limits.max_inflight_bytes": 32 << 20,
    "limits.body_read_timeout_seconds": 2,
    "limits.max_inflight_per_peer": 3,
    "limits.max_inflight_bytes_per_peer": 4 << 20,
    "limits.max_passthrough_body_bytes": 100,
    "lifecycle.drain_seconds": 1,
    "envelope.normalise_status": False,
    "envelope.mint": "never",
    "mode": "observe",
}


def leaf_settings(model: type[BaseModel], prefix: str = "") -> list[str]:
    leaves = []
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            leaves += leaf_settings(info.annotation, f"{prefix}{name}.")
        else:
            leaves.append(prefix + name)
    return leaves


def test_every_setting_is_either_start_only_or_live() -> None:
    """The change tables below cover every setting, and the start-only one is RESTART_ONLY."""
    assert set(START_ONLY_CHANGES) == set(RESTART_ONLY)
    assert len(RESTART_ONLY) == len(set(RESTART_ONLY))
    uncovered = [
        leaf
        for leaf in leaf_settings(Settings)
        if leaf not in LIVE_CHANGES
        and not any(leaf == name or leaf.startswith(name + ".") for name in RESTART_ONLY)
    ]
    assert uncovered == []


@pytest.mark.parametrize("name", sorted(START_ONLY_CHANGES))
def test_a_start_only_change_is_reported_and_not_applied(name: str) -> None:
    old = load_settings(None, environ={})
    new = load_settings(None, {name: START_ONLY_CHANGES[name]}, environ={})
    assert new != old
    assert restart_needed(old, new) == [name]
    assert keep_start_only(old, new) == old


@pytest.mark.parametrize("name", sorted(LIVE_CHANGES))
def test_a_live_change_is_applied_and_needs_no_restart(name: str) -> None:
    old = load_settings(None, environ={})
    new = load_settings(None, {name: LIVE_CHANGES[name]}, environ={})
    assert new != old
    assert restart_needed(old, new) == []
    assert keep_start_only(old, new) == new


class _Inner(BaseModel):
    live: int = 0
    fixed: Annotated[int, START_ONLY] = 0


class _Outer(BaseModel):
    first: Annotated[str, START_ONLY] = ""
    inner: _Inner = _Inner()
    plain: bool = False
    whole: Annotated[_Inner, START_ONLY] = _Inner()


def test_the_list_is_the_marked_fields_in_field_order() -> None:
    """A marked field is listed, a marked section whole, a marked field of a section dotted."""
    assert start_only_fields(_Outer) == ("first", "inner.fixed", "whole")
