"""Who sent an event: a client identity chosen from ordered sources, and its bounded label.

`clients.sources` lists where an identity may come from, first match wins:

* `header:<Name>` - the value of that request header (the server passes it as
  `ClientHints.header`); used as written, it is the name the client gives itself;
* `worker_id` - the envelope's worker id, shown as `worker:<id>`;
* `user_agent` - the User-Agent header, shown as `ua:<agent>`;
* `peer` - the remote address, shown as `peer:<address>`.

Identities are cleaned (control characters replaced, surrounding space removed) and
cut to `MAX_IDENTITY_LENGTH` characters. Metrics and the sunset ledger use a *label*:
the first `max_clients` distinct identities keep their own, every later one counts as
`other`, so a misbehaving producer cannot grow the series without bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from proxy.config import ClientSource, ClientSourceKind, parse_client_source
from proxy.contract import ClientHints

OTHER = "other"
UNKNOWN = "unknown"
MAX_IDENTITY_LENGTH = 64

_PREFIXES: dict[ClientSourceKind, str] = {
    "header": "",
    "worker_id": "worker:",
    "user_agent": "ua:",
    "peer": "peer:",
}


def clean(value: str) -> str:
    """A printable, trimmed identity of at most MAX_IDENTITY_LENGTH characters."""
    if len(value) <= MAX_IDENTITY_LENGTH and value.isprintable() and value == value.strip():
        return value  # the common case, without rebuilding the string
    text = "".join(ch if ch.isprintable() else "_" for ch in value[: MAX_IDENTITY_LENGTH * 2])
    return text.strip()[:MAX_IDENTITY_LENGTH]


_MAX_KNOWN_HINTS = 1024
# Hints longer than this (characters, all four together) are not remembered: the envelope's
# worker id can be as long as the body, and a thousand of those would stay in memory.
_MAX_KNOWN_CHARS = 1024


class ClientIdentifier:
    """Chooses a client identity per event and folds identities beyond the cap into `other`."""

    def __init__(self, sources: Sequence[str], max_clients: int) -> None:
        if max_clients < 1:
            raise ValueError("clients.max_clients must be at least 1")
        self._sources = tuple(parse_client_source(spec) for spec in sources)
        self._max_clients = max_clients
        self._labels: set[str] = set()
        # (identity, label) by the hints they come from: producers repeat them event after
        # event. Bounded in count and size (hints are client-chosen); a label, once given,
        # never changes.
        self._known: dict[tuple[str | None, str | None, str | None, str | None], tuple[str, str]]
        self._known = {}

    @property
    def max_clients(self) -> int:
        return self._max_clients

    def identify(self, hints: ClientHints, worker_id: str | None) -> tuple[str, str]:
        """The identity (`identity`) and its metric label (`label`), remembered per hints."""
        key = (hints.header, hints.user_agent, hints.peer, worker_id)
        known = self._known.get(key)
        if known is None:
            identity = self.identity(hints, worker_id)
            known = (identity, self.label(identity))
            if sum(len(hint) for hint in key if hint is not None) <= _MAX_KNOWN_CHARS:
                if len(self._known) >= _MAX_KNOWN_HINTS:
                    self._known.clear()
                self._known[key] = known
        return known

    def identity(self, hints: ClientHints, worker_id: str | None) -> str:
        """The identity from the first source that has a non-empty value, else `unknown`."""
        for source in self._sources:
            raw = self._raw(source, hints, worker_id)
            if raw is None:
                continue
            value = clean(_PREFIXES[source.kind] + raw)
            if value and value != _PREFIXES[source.kind]:
                return value
        return UNKNOWN

    def label(self, identity: str) -> str:
        """The metric/ledger label: the identity while under the cap, else `other`."""
        if identity in self._labels:
            return identity
        if len(self._labels) >= self._max_clients:
            return OTHER
        self._labels.add(identity)
        return identity

    def seed(self, identities: Iterable[str]) -> None:
        """Register known identities (e.g. from a persisted ledger) so they keep their label."""
        for identity in identities:
            if len(self._labels) >= self._max_clients:
                return
            if identity != OTHER:
                self._labels.add(identity)

    @staticmethod
    def _raw(source: ClientSource, hints: ClientHints, worker_id: str | None) -> str | None:
        if source.kind == "header":
            return hints.header
        if source.kind == "worker_id":
            return worker_id
        if source.kind == "user_agent":
            return hints.user_agent
        return hints.peer
