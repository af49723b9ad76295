"""A `ProxyView` that holds still, for an extension tested without a server: its fields are
what the server would show; a test changes them to play a reload or a busy proxy."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.envelope import Engine


@dataclass
class FixedView:
    engine: Engine
    inflight: int = 0
    client_header: str | None = None
