"""Typed keys for what the proxy stores on its aiohttp applications."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from proxy.server.budget import PeerLoad
from proxy.server.state import ProxyState
from proxy.server.upstream import UpstreamPools, UpstreamStats

STATE = web.AppKey("envelope_proxy_state", ProxyState)
# Event exchanges and their counters: the lean client of `upstream.py`.
POOLS = web.AppKey("envelope_proxy_pools", UpstreamPools)
UPSTREAM_STATS = web.AppKey("envelope_proxy_upstream_stats", UpstreamStats)
# Pass-through has a pool of its own: long streams (server-sent events, slow clients)
# must never take the connections events need.
STREAM_SESSION = web.AppKey("envelope_proxy_stream_session", aiohttp.ClientSession)
# Pass-through handlers in progress; cut at the shutdown cutoff (a stream may never end).
STREAMS = web.AppKey("envelope_proxy_streams", set[asyncio.Task[Any]])
# What each client address has in flight (requests, event body bytes).
PEERS = web.AppKey("envelope_proxy_peers", PeerLoad)
