"""The proxy with its real observability extension in front of the emulator, for the
cutover-safety tests (rejection metrics, quarantine, observe mode, replay).

Everything is a real server on loopback: the emulator as upstream, the proxy as `compose`
makes it (with the observability extension), its admin app. `CutoverStack` reads metrics,
`/clients`, `/rejections` and what the emulator stored (exact bytes).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxy.compose import compose
from proxy.config import Settings
from proxy.emulator import create_emulator_app
from proxy.observability import ObservabilityExtension
from proxy.server.app import RELOADER
from proxy.server.state import ProxyState
from tests.functional.server_support import ServerFactory, base_url, serve_composed

JSON = {"Content-Type": "application/json"}


@dataclass
class CutoverStack:
    upstream: str
    proxy: str
    admin: str
    ext: ObservabilityExtension
    state: ProxyState
    session: aiohttp.ClientSession
    app: web.Application

    async def reload(self) -> None:
        """Re-read the configuration as a SIGHUP would; it must apply."""
        assert await self.app[RELOADER].reload(force=True, reason="test") is True

    async def post(
        self,
        body: bytes,
        *,
        client: str | None = None,
        path: str = "/api/events",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        sent = {**JSON, **(headers or {})}
        if client is not None:
            sent["X-NoETL-Client"] = client
        async with self.session.post(self.proxy + path, data=body, headers=sent) as response:
            return response.status, await response.read()

    async def admin_json(self, path: str) -> Any:
        async with self.session.get(self.admin + path) as response:
            assert response.status == 200, await response.text()
            return orjson.loads(await response.read())

    async def metric(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Samples of one family: sorted label pairs -> value."""
        async with self.session.get(self.admin + "/metrics") as response:
            text = (await response.read()).decode()
        found: dict[tuple[tuple[str, str], ...], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    found[tuple(sorted(sample.labels.items()))] = sample.value
        return found

    async def arrived(self) -> list[tuple[str, int, bytes]]:
        """(path, status, exact bytes) of every event request the emulator received."""
        async with self.session.get(self.upstream + "/_emulator/requests") as response:
            rows = orjson.loads(await response.read())
        return [(row["path"], row["status"], base64.b64decode(row["body_b64"])) for row in rows]

    async def stored_bodies(self) -> list[bytes]:
        """The exact bytes of each request the emulator stored (one per request)."""
        async with self.session.get(self.upstream + "/_emulator/events") as response:
            rows = orjson.loads(await response.read())
        seen: dict[int, bytes] = {}
        for row in rows:
            seen.setdefault(row["request_seq"], base64.b64decode(row["body_b64"]))
        return [seen[key] for key in sorted(seen)]


def settings_with(config: dict[str, Any], upstream: str) -> Settings:
    """`config` with the emulator as upstream (the canonical target unless it says)."""
    return Settings.model_validate(
        {**config, "upstream": {"version": "v2", **config.get("upstream", {}), "url": upstream}}
    )


async def start_cutover_stack(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    config: dict[str, Any],
    profile: str = "rust-2.19.1",
    *,
    reload_from: Callable[[], Settings] | None = None,
) -> CutoverStack:
    """Emulator, proxy (observability extension included) and admin app on loopback."""
    upstream_server = await aiohttp_server(create_emulator_app(profile, fast=True))
    upstream = str(upstream_server.make_url("")).rstrip("/")
    settings = settings_with(config, upstream)
    proxy = compose(settings, reload_from=reload_from)
    (ext,) = proxy.extensions
    assert isinstance(ext, ObservabilityExtension)
    server, admin = await serve_composed(aiohttp_server, proxy)
    return CutoverStack(
        upstream, base_url(server), base_url(admin), ext, proxy.state, session, proxy.app
    )
