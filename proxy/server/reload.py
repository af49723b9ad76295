"""Live configuration reload: the config file's directory and the rules directory are watched.

Watching directories (not files) catches Kubernetes' ConfigMap update, which swaps a
`..data` symlink rather than writing the file. SIGHUP forces a reload. A new configuration
is read and validated off the event loop; only a complete, valid one replaces the snapshot
(one reference swap). An invalid one is logged and the running one kept. Start-only
settings (listen addresses, workers, pool size, keep-alive timeout, the event-id machine id,
extension settings) are reported as needing a restart and not applied.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import watchfiles

from proxy.config import ConfigError, Settings, keep_start_only, restart_needed
from proxy.envelope import Engine, Rules
from proxy.errors import ProblemsError
from proxy.server.logsafe import printable
from proxy.server.state import ProxyState, ReloadStatus, build_engine

log = logging.getLogger(__name__)

# Short enough for an operator to see the change at once, long enough to coalesce the
# several events of one editor save or one ConfigMap swap.
DEBOUNCE_MS = 150
# The files are also compared every second (a hash, in a thread): a change made while the
# watcher was starting, or on a volume that sends no inotify events, is still picked up.
RECHECK_MS = 1000
RETRY_WATCH_SECONDS = 5.0


def _fingerprint(config_file: Path | None, rules_dir: Path | None) -> str:
    digest = hashlib.sha256()
    if config_file is not None:
        try:
            digest.update(config_file.read_bytes())
        except OSError as exc:
            digest.update(f"unreadable:{exc}".encode())
    if rules_dir is not None and rules_dir.is_dir():
        for path in sorted(rules_dir.iterdir()):
            if path.is_file():
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class ConfigReloader:
    """Re-reads the configuration on file changes and SIGHUP; swaps it in when valid."""

    def __init__(self, state: ProxyState, on_applied: Callable[[], None] | None = None):
        self._state = state
        self._on_applied = on_applied
        self._lock = asyncio.Lock()
        self._fingerprint = _fingerprint(state.config_file, state.snapshot.settings.rules_dir)

    def _watched(self) -> list[Path]:
        paths = []
        if self._state.config_file is not None:
            # The mount directory itself, not the resolved target: Kubernetes swaps the
            # `..data` symlink there and deletes the old dated directory on every update.
            paths.append(self._state.config_file.absolute().parent)
        rules_dir = self._state.snapshot.settings.rules_dir
        if rules_dir is not None:
            paths.append(rules_dir.absolute())
        return [path for path in dict.fromkeys(paths) if path.is_dir()]

    def _load(self) -> tuple[Settings, Rules, Engine]:
        if self._state.load is None:
            raise ConfigError(["no configuration source to reload from"])
        settings = self._state.load()
        rules, engine = build_engine(settings, self._state.minter)
        return settings, rules, engine

    async def reload(self, *, force: bool, reason: str) -> bool | None:
        """Reload now; None when nothing changed (and not forced), else whether it applied."""
        async with self._lock:
            state = self._state
            old = state.snapshot.settings
            fingerprint = await asyncio.to_thread(_fingerprint, state.config_file, old.rules_dir)
            if not force and fingerprint == self._fingerprint:
                return None
            self._fingerprint = fingerprint
            try:
                new, rules, engine = await asyncio.to_thread(self._load)
            except ProblemsError as exc:  # a ConfigError or a RulesError
                problems = tuple(exc.problems)
                log.error(
                    "config reload (%s) rejected, keeping the running config: %s",
                    reason,
                    "; ".join(problems),
                )
                state.last_reload = ReloadStatus(ok=False, at=time.time(), problems=problems)
                for ext in state.extensions:
                    ext.on_reload(False)
                return False
            pending = tuple(restart_needed(old, new))
            if pending:
                log.warning(
                    "config reload (%s): %s changed; takes effect after a restart",
                    reason,
                    ", ".join(pending),
                )
            state.apply(keep_start_only(old, new), rules, engine)
            state.last_reload = ReloadStatus(ok=True, at=time.time(), restart_needed=pending)
            log.info(
                "config reload (%s) applied: generation %d, rules %s",
                reason,
                state.snapshot.generation,
                rules.digest,
            )
            for ext in state.extensions:
                ext.on_reload(True)
            if self._on_applied is not None:
                self._on_applied()
            if new.rules_dir != old.rules_dir:
                self._fingerprint = await asyncio.to_thread(
                    _fingerprint, state.config_file, new.rules_dir
                )
            return True

    def _relevant(self, _change: watchfiles.Change, path: str) -> bool:
        """Whether a change in a watched directory can change the configuration: the config
        file, a rule file, or Kubernetes' `..data` swap. Others (a log or state file kept
        next to the config) are ignored, at DEBUG, so they cannot drive reloads."""
        changed = Path(path)
        name, parent = changed.name, changed.parent
        if name.startswith("..data"):
            return True
        config_file = self._state.config_file
        if (
            config_file is not None
            and name == config_file.name
            and parent == config_file.absolute().parent
        ):
            return True
        rules_dir = self._state.snapshot.settings.rules_dir
        if rules_dir is not None and parent == rules_dir.absolute() and not name.startswith("."):
            return True
        log.debug("config watch: ignoring a change to %s", printable(path))
        return False

    async def watch(self) -> None:
        """Watch until cancelled; restarts when the set of watched directories changes."""
        quiet = logging.getLogger("watchfiles")
        if quiet.level == logging.NOTSET:
            # watchfiles logs every batch of changes at INFO; the reload's own line says
            # what a change did.
            quiet.setLevel(logging.WARNING)
        while True:
            paths = await asyncio.to_thread(self._watched)
            if not paths:
                return
            stop = asyncio.Event()
            try:
                async for changes in watchfiles.awatch(
                    *paths,
                    watch_filter=self._relevant,
                    debounce=DEBOUNCE_MS,
                    step=50,
                    stop_event=stop,
                    recursive=False,
                    rust_timeout=RECHECK_MS,
                    yield_on_timeout=True,
                ):
                    await self.reload(
                        force=False, reason="file change" if changes else "file check"
                    )
                    if await asyncio.to_thread(self._watched) != paths:
                        stop.set()
            except Exception:  # e.g. a watched directory vanished; SIGHUP still works
                log.exception("watching %s failed; retrying", ", ".join(map(str, paths)))
                await asyncio.sleep(RETRY_WATCH_SECONDS)
