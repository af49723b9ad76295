"""Typed keys for what the proxy stores on its aiohttp applications."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from proxy.server.budget import PeerLoad
from proxy.server.state import ProxyState

STATE = web.AppKey("envelope_proxy_state", ProxyState)
SESSION = web.AppKey("envelope_proxy_session", aiohttp.ClientSession)  # event exchanges
# One slot per pooled upstream connection for events: the wait for a free one is bounded
# and, when it runs out, answered as "never sent" rather than as an upstream timeout.
EVENT_SLOTS = web.AppKey("envelope_proxy_event_slots", asyncio.Semaphore)
# Pass-through has a pool of its own: long streams (server-sent events, slow clients)
# must never take the connections events need.
STREAM_SESSION = web.AppKey("envelope_proxy_stream_session", aiohttp.ClientSession)
# Upstream exchanges that outlive their handler (client gone); awaited at shutdown.
TASKS = web.AppKey("envelope_proxy_tasks", set[asyncio.Future[web.StreamResponse]])
# Pass-through handlers in progress; cut at the shutdown cutoff (a stream may never end).
STREAMS = web.AppKey("envelope_proxy_streams", set[asyncio.Task[Any]])
# What each client address has in flight (requests, event body bytes).
PEERS = web.AppKey("envelope_proxy_peers", PeerLoad)
