"""Observability for the proxy: traces keyed by event id, per-client shape metrics, the sunset
ledger behind admin `/clients`, and the shadow check.

The server calls `build_extension(settings)` once at start and uses the returned object
through the `proxy.contract.Extension` protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.observability.extension import ObservabilityExtension

if TYPE_CHECKING:
    from proxy.config import Settings

__all__ = [
    "ObservabilityExtension",
    "build_extension",
]


def build_extension(settings: Settings, *, worker: int = 0) -> ObservabilityExtension:
    """The extension for these settings.

    `worker` is this process's index among `settings.workers` (each keeps its own
    quarantine segments). The engine its shadow and observe checks use is the server's,
    read through the view the server attaches.
    """
    return ObservabilityExtension(settings, worker=worker)
