"""In-flight budgets: requests and event body bytes, in total and per client address.

A request is admitted with a `Ticket` (or refused with the reason, answered 503). Body bytes
count as they arrive, not as declared: a stalled body holds its slot but no byte budget, so
slow peers cannot lock others out by announcing large bodies. One address may use
`limits.peer_requests` of the requests and `limits.peer_bytes` of the bytes (half of each by
default), so one client cannot take them all. `release()` gives everything back once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.config import LimitSettings
from proxy.server.state import ProxyState


@dataclass(slots=True)
class _Peer:
    requests: int = 0
    bytes: int = 0


@dataclass(slots=True)
class PeerLoad:
    """What each client address has in flight; an address leaves when it has nothing."""

    peers: dict[str | None, _Peer] = field(default_factory=dict)


class Ticket:
    """One admitted request: its slot, and the body bytes counted for it so far."""

    __slots__ = ("_limits", "_load", "_peer", "_peer_key", "_released", "_state", "bytes")

    def __init__(
        self,
        state: ProxyState,
        load: PeerLoad,
        peer: str | None,
        limits: LimitSettings,
        held: _Peer | None = None,
    ):
        self._state = state
        self._load = load
        self._limits = limits
        self._peer_key = peer
        if held is None:
            held = load.peers[peer] = _Peer()
        self._peer = held
        self._released = False
        self.bytes = 0
        state.inflight += 1
        self._peer.requests += 1

    def add(self, size: int) -> str | None:
        """Count `size` more body bytes; the refusal reason (nothing counted) when they
        would not fit the total or this address's byte budget."""
        refusal = bytes_refusal(self._state, self._peer, self._limits, size)
        if refusal is not None:
            return refusal
        self.bytes += size
        self._state.inflight_bytes += size
        self._peer.bytes += size
        return None

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._state.inflight -= 1
        self._state.inflight_bytes -= self.bytes
        peer = self._peer
        peer.requests -= 1
        peer.bytes -= self.bytes
        if peer.requests == 0:
            self._load.peers.pop(self._peer_key, None)


def bytes_refusal(
    state: ProxyState, peer: _Peer | None, limits: LimitSettings, size: int
) -> str | None:
    if state.inflight_bytes + size > limits.max_inflight_bytes:
        return (
            f"the bodies of the requests in flight would exceed {limits.max_inflight_bytes} "
            "bytes; retry shortly"
        )
    held = peer.bytes if peer is not None else 0
    if held + size > limits.peer_bytes:
        return (
            f"this client's bodies in flight would exceed {limits.peer_bytes} bytes; retry shortly"
        )
    return None


def refusal(
    state: ProxyState,
    load: PeerLoad,
    peer: str | None,
    limits: LimitSettings,
    declared: int | None = None,
) -> str | None:
    """Why a new request would be refused now, or None. A declared body size is checked
    against what is free now (not reserved: the body counts as it arrives)."""
    if state.inflight >= limits.max_inflight:
        return f"more than {limits.max_inflight} requests in flight; retry shortly"
    held = load.peers.get(peer)
    if held is not None and held.requests >= limits.peer_requests:
        return f"this client has {limits.peer_requests} requests in flight already; retry shortly"
    if declared:
        return bytes_refusal(state, held, limits, declared)
    return None


def admit(
    state: ProxyState,
    load: PeerLoad,
    peer: str | None,
    limits: LimitSettings,
    declared: int | None = None,
) -> Ticket | str:
    """A ticket for a new request, or why it is refused (see `refusal`)."""
    refused = refusal(state, load, peer, limits, declared)
    if refused is not None:
        return refused
    return Ticket(state, load, peer, limits, load.peers.get(peer))
