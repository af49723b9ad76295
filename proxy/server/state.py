"""The proxy's live state: the config snapshot requests run under, and what changes it.

A `Snapshot` bundles everything a request depends on (settings, rules, engine, the current
target and upstream version). It is immutable; a probe result or a config reload builds a
new one and swaps a single reference, so a request keeps the snapshot it started with.
Extensions read the state through a `StateView`, given to each once, when the state is made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import hdrs, web
from aiohttp.web import BaseRequest
from yarl import URL

from proxy.config import Settings, engine_options, parse_client_source, resolve_machine_id
from proxy.contract import Extension
from proxy.envelope import CANONICAL_TARGET, LEGACY_TARGET, Engine, Rules, load_rules
from proxy.envelope.ids import SnowflakeMinter
from proxy.server.upstream import origin_and_prefix

log = logging.getLogger(__name__)

PINNED_TARGETS = {"v1": LEGACY_TARGET, "v2": CANONICAL_TARGET}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One consistent view of configuration and upstream state."""

    settings: Settings
    rules: Rules
    engine: Engine
    target: str
    upstream_version: str | None
    upstream_base: str  # upstream URL without a trailing slash; request paths are appended
    upstream_origin: str  # scheme://host:port of the upstream, what event connections open
    upstream_prefix: bytes  # the upstream URL's base path (encoded), before request paths
    client_header: str | None
    event_timeouts: aiohttp.ClientTimeout
    stream_timeouts: aiohttp.ClientTimeout
    generation: int

    def upstream_target(self, request: BaseRequest) -> bytes:
        """The request target for the upstream: base path, then the raw path and query."""
        raw = request.raw_path
        if not raw.startswith("/"):  # absolute-form or asterisk-form request target
            raw = request.rel_url.raw_path_qs
        return self.upstream_prefix + raw.encode("utf-8", "surrogateescape")

    def upstream_url(self, request: BaseRequest) -> URL:
        """The upstream URL for a request: its raw path and query, still percent-encoded."""
        raw = request.raw_path
        if not raw.startswith("/"):  # absolute-form or asterisk-form request target
            raw = request.rel_url.raw_path_qs
        return URL(self.upstream_base + raw, encoded=True)


def build_engine(settings: Settings, minter: SnowflakeMinter | None = None) -> tuple[Rules, Engine]:
    """Rules and engine for a configuration (raises RulesError); blocking file I/O.

    Pass the process's one `minter` (see `ProxyState`): an engine built with its own
    minter could repeat ids another engine of this process minted in the same millisecond.
    """
    rules = load_rules(settings.rules_dir) if settings.rules_dir else load_rules()
    if minter is None:
        minter = SnowflakeMinter(resolve_machine_id(settings.envelope.machine_id))
    return rules, Engine(rules, engine_options(settings, minter.machine_id), minter=minter)


def choose_target(settings: Settings, rules: Rules, probed: str | None) -> tuple[str, str | None]:
    """(target, upstream version) for a configuration and the last probed version."""
    mode = settings.upstream.version
    if mode in PINNED_TARGETS:
        return PINNED_TARGETS[mode], None
    if mode == "auto":
        return rules.target_for_version(probed), probed
    return rules.target_for_version(mode), mode


def client_header(settings: Settings) -> str | None:
    """The header whose value is passed as `ClientHints.header` (sources name one at most)."""
    for spec in settings.clients.sources:
        source = parse_client_source(spec)
        if source.kind == "header":
            return source.header
    return None


def make_snapshot(
    settings: Settings, rules: Rules, engine: Engine, probed: str | None, generation: int
) -> Snapshot:
    target, version = choose_target(settings, rules, probed)
    upstream = settings.upstream
    origin, prefix = origin_and_prefix(upstream.url)
    return Snapshot(
        settings=settings,
        rules=rules,
        engine=engine,
        target=target,
        upstream_version=version,
        upstream_base=upstream.url.rstrip("/"),
        upstream_origin=origin,
        upstream_prefix=prefix,
        client_header=client_header(settings),
        event_timeouts=aiohttp.ClientTimeout(
            total=upstream.timeout_seconds, sock_connect=upstream.connect_timeout_seconds
        ),
        # Pass-through responses may stream for long (SSE): bound idle time, not the total,
        # and the wait for a pooled connection (`connect`).
        stream_timeouts=aiohttp.ClientTimeout(
            total=None,
            connect=upstream.timeout_seconds,
            sock_connect=upstream.connect_timeout_seconds,
            sock_read=upstream.timeout_seconds,
        ),
        generation=generation,
    )


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    ok: bool
    at: float
    problems: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()


class ProxyState:
    """Mutable process state around the current snapshot; touched only from the event loop."""

    def __init__(
        self,
        settings: Settings,
        *,
        extensions: Sequence[Extension] = (),
        config_file: Path | None = None,
        load: Callable[[], Settings] | None = None,
        minter: SnowflakeMinter | None = None,
    ):
        # One minter for the process: every engine built here, at start and after each
        # reload, mints from it, so event ids never repeat. Its machine id is fixed at start.
        self.minter = minter or SnowflakeMinter(resolve_machine_id(settings.envelope.machine_id))
        rules, engine = build_engine(settings, self.minter)
        self.snapshot = make_snapshot(settings, rules, engine, None, 1)
        self.extensions = tuple(extensions)
        self.config_file = config_file
        # How a reload reads the configuration again (file + env + the same flags).
        self.load = load
        self.probed_version: str | None = None
        self.upstream_reached = False
        self.draining = False
        self.inflight = 0
        self.inflight_bytes = 0  # bodies of event requests in flight (see limits)
        self.last_reload: ReloadStatus | None = None
        self.shutdown_deadline: float | None = None  # loop time; set when shutdown starts
        # Loop time by which event exchanges must give up (a little before the deadline).
        self.shutdown_cutoff: float | None = None
        self.cut_off = False  # True once the cutoff passed: exchanges still open answer 504
        self.started_at = time.time()
        view = StateView(self)
        for ext in self.extensions:
            ext.attach(view)
        # The server middlewares the extensions add (a tracing one puts TRACE_HEADERS on
        # event requests); none means no request carries anything from one.
        self.middlewares = tuple(mw for ext in self.extensions for mw in ext.server_middlewares())
        self._announce(None)

    def send_away(self, response: web.StreamResponse) -> None:
        """While draining, the answer about to go out ends its keep-alive connection, so the
        client reconnects to another replica. Called by each handler before its answer's
        head is written (rather than in a response-prepare signal, which every request
        would pay for)."""
        if self.draining and not response.prepared:
            response.force_close()
            response.headers[hdrs.CONNECTION] = "close"

    def past_cutoff(self) -> bool:
        """True once the shutdown cutoff passed: exchanges still open give up (504)."""
        return self.cut_off

    @property
    def pinned(self) -> bool:
        return self.snapshot.settings.upstream.version != "auto"

    def ready(self) -> bool:
        return not self.draining and (self.pinned or self.upstream_reached)

    def set_probed(self, version: str | None) -> None:
        """Record an authoritative probe answer; switches target when the version changed."""
        self.upstream_reached = True
        if version == self.probed_version:
            return
        self.probed_version = version
        previous = self.snapshot
        current = self.snapshot.settings
        self.snapshot = make_snapshot(
            current, previous.rules, previous.engine, version, previous.generation
        )
        self._announce(previous)

    def apply(self, settings: Settings, rules: Rules, engine: Engine) -> None:
        """Swap in a validated configuration (start-only settings already kept)."""
        previous = self.snapshot
        if settings.upstream.url != previous.settings.upstream.url:
            # Another server: what the old one said about its version does not carry over.
            self.probed_version = None
            self.upstream_reached = False
        self.snapshot = make_snapshot(
            settings, rules, engine, self.probed_version, previous.generation + 1
        )
        self._announce(previous)

    def _announce(self, previous: Snapshot | None) -> None:
        current = self.snapshot
        if previous is not None and (previous.target, previous.upstream_version) == (
            current.target,
            current.upstream_version,
        ):
            return
        log.info(
            "upstream target %s (upstream version %s, mode %s)",
            current.target,
            current.upstream_version or "unknown",
            current.settings.upstream.version,
        )
        for ext in self.extensions:
            ext.on_target(current.target, current.upstream_version)


class StateView:
    """The `ProxyView` extensions are given: read-only, and always of the current snapshot."""

    __slots__ = ("_state",)

    def __init__(self, state: ProxyState) -> None:
        self._state = state

    @property
    def engine(self) -> Engine:
        return self._state.snapshot.engine

    @property
    def inflight(self) -> int:
        return self._state.inflight

    @property
    def client_header(self) -> str | None:
        return self._state.snapshot.client_header
