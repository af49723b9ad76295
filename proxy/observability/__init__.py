"""Observability for the proxy: traces keyed by event id, per-client shape metrics, the sunset
ledger behind admin `/clients`, and the shadow check.

The server calls `build_extension(settings, engine_provider)` once at start and uses the
returned object through the `proxy.server.hooks.Extension` protocol.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.observability.extension import (
    ObservabilityExtension,
    ObservabilitySettings,
    engine_from_settings,
)
from proxy.observability.identity import client_header_name
from proxy.observability.shadow import ShadowEngine

__all__ = [
    "ObservabilityExtension",
    "ObservabilitySettings",
    "ShadowEngine",
    "build_extension",
    "client_header_name",
    "engine_from_settings",
]


def build_extension(
    settings: ObservabilitySettings,
    engine_provider: Callable[[], ShadowEngine] | None = None,
) -> ObservabilityExtension:
    """The extension for these settings.

    `engine_provider` returns the engine the server currently uses (called on every shadow
    check, so a reloaded engine is picked up); without it a shadow check builds its own
    engine from `settings` once.
    """
    return ObservabilityExtension(settings, engine_provider)
