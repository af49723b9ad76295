"""Observability for the proxy: traces keyed by event id, per-client shape metrics, the sunset
ledger behind admin `/clients`, and the shadow check.

The server calls `build_extension(settings, engine_provider)` once at start and uses the
returned object through the `proxy.server.hooks.Extension` protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.envelope import Engine
from proxy.observability.extension import ObservabilityExtension

if TYPE_CHECKING:
    from proxy.config import Settings

__all__ = [
    "ObservabilityExtension",
    "build_extension",
]


def build_extension(
    settings: Settings,
    engine_provider: Callable[[], Engine] | None = None,
    *,
    worker: int = 0,
) -> ObservabilityExtension:
    """The extension for these settings.

    `engine_provider` returns the engine the server currently uses (called on every shadow
    check, so a reloaded engine is picked up); without it a shadow check builds its own
    engine from `settings` once. `worker` is this process's index among `settings.workers`
    (each keeps its own quarantine segments).
    """
    return ObservabilityExtension(settings, engine_provider, worker=worker)
