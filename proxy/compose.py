"""How a proxy is put together: its extensions, the proxy app, and the admin app over it.

`compose` is the one place this is done: `serve` runs what it returns (once per worker
process), the demo too, and the tests put it behind loopback servers. Without `extensions`
the proxy gets its standard one, observability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy import observability
from proxy.config import Settings
from proxy.contract import Extension
from proxy.envelope.ids import SnowflakeMinter
from proxy.server.admin import create_admin_app
from proxy.server.app import create_app, server_kwargs
from proxy.server.keys import STATE
from proxy.server.logsafe import ServerLog
from proxy.server.state import ProxyState


@dataclass(frozen=True, slots=True)
class Composed:
    """A proxy ready to be served: `app` on the proxy port, `admin` on the admin port."""

    app: web.Application
    admin: web.Application
    extensions: tuple[Extension, ...]  # as given or made; the app may add its own
    app_kwargs: dict[str, Any]  # for the runner (or test server) of `app`
    admin_kwargs: dict[str, Any]  # for the runner (or test server) of `admin`

    @property
    def state(self) -> ProxyState:
        return self.app[STATE]


def standard_extensions(settings: Settings, worker: int = 0) -> list[Extension]:
    """The extensions `serve` runs with: observability."""
    return [observability.build_extension(settings, worker=worker)]


def compose(
    settings: Settings,
    *,
    extensions: Sequence[Extension] | None = None,
    worker: int = 0,
    config_file: Path | None = None,
    reload_from: Callable[[], Settings] | None = None,
    minter: SnowflakeMinter | None = None,
) -> Composed:
    """The proxy app and its admin app for `settings`, with `extensions` (default: the
    standard ones for worker `worker`). `config_file`, `reload_from` and `minter` are
    `create_app`'s."""
    chosen = tuple(standard_extensions(settings, worker) if extensions is None else extensions)
    app = create_app(
        settings,
        extensions=chosen,
        config_file=config_file,
        reload_from=reload_from,
        minter=minter,
    )
    return Composed(
        app=app,
        admin=create_admin_app(app),
        extensions=chosen,
        app_kwargs=server_kwargs(settings),
        admin_kwargs={"access_log": None, "logger": ServerLog()},
    )
