"""The proxy in front of a scripted raw-socket upstream (`tests.loopback.WireUpstream`),
with the settings the hostile tests share."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.functional.server_support import (
    Recorder,
    ServerFactory,
    Stack,
    settings_for,
    start_proxy,
)
from tests.loopback import WireUpstream


async def start_wire_stack(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    upstream: WireUpstream,
    overrides: dict[str, Any] | None = None,
) -> Stack:
    url = await upstream.start()
    values = {"upstream.version": "2.19.1", "upstream.timeout_seconds": 2}
    values.update(overrides or {})
    proxy, admin, state, recorder = await start_proxy(
        aiohttp_server, settings_for(url, values), recorder=Recorder()
    )
    return Stack(url, proxy, admin, state, recorder, session)
