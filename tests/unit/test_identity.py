"""Client identity: source order, cleaning, and the cap that folds extra clients into `other`."""

from __future__ import annotations

import tracemalloc

import pytest

from proxy.config import Settings
from proxy.contract import ClientHints
from proxy.observability.identity import (
    MAX_IDENTITY_LENGTH,
    OTHER,
    UNKNOWN,
    ClientIdentifier,
    clean,
)
from proxy.server.state import client_header

DEFAULT_SOURCES = ("header:X-NoETL-Client", "worker_id", "user_agent", "peer")
FULL = ClientHints(header="billing-worker", user_agent="noetl-worker/2.1", peer="10.0.0.7")


def test_header_wins_and_is_used_as_written() -> None:
    """The client-name header is the first source and its value is the identity unprefixed."""
    ids = ClientIdentifier(DEFAULT_SOURCES, 10)
    assert ids.identity(FULL, "w-1") == "billing-worker"


@pytest.mark.parametrize(
    ("hints", "worker_id", "expected"),
    [
        pytest.param(
            ClientHints(None, "noetl-worker/2.1", "10.0.0.7"), "w-1", "worker:w-1", id="worker"
        ),
        pytest.param(
            ClientHints(None, "noetl-worker/2.1", "10.0.0.7"), None, "ua:noetl-worker/2.1", id="ua"
        ),
        pytest.param(ClientHints("", "", "10.0.0.7"), "", "peer:10.0.0.7", id="peer"),
        pytest.param(ClientHints("  ", None, None), None, UNKNOWN, id="nothing"),
    ],
)
def test_fallbacks_follow_the_source_order(
    hints: ClientHints, worker_id: str | None, expected: str
) -> None:
    """Empty or missing sources are skipped and later ones carry a prefix naming the source."""
    ids = ClientIdentifier(DEFAULT_SOURCES, 10)
    assert ids.identity(hints, worker_id) == expected


def test_order_is_configurable() -> None:
    """A configuration that lists the peer first identifies by address even with a header."""
    ids = ClientIdentifier(("peer", "header:X-NoETL-Client"), 10)
    assert ids.identity(FULL, "w-1") == "peer:10.0.0.7"


def test_identity_is_cleaned_and_bounded() -> None:
    """Control characters are replaced and a huge header is cut to the maximum length."""
    ids = ClientIdentifier(DEFAULT_SOURCES, 10)
    assert ids.identity(ClientHints("a\nb\x00c", None, None), None) == "a_b_c"
    long = ids.identity(ClientHints("x" * 10_000, None, None), None)
    assert long == "x" * MAX_IDENTITY_LENGTH
    assert clean("  spaced  ") == "spaced"


@pytest.mark.parametrize("bad", ["cookie", "header:", "header:X Team", "Peer"])
def test_unknown_sources_are_refused_as_the_settings_refuse_them(bad: str) -> None:
    """A source that is none of the four kinds (or names no valid header) is refused, naming it."""
    with pytest.raises(ValueError, match="must be header:<Header-Name>"):
        ClientIdentifier([bad], 1)


def test_client_header_is_the_header_source() -> None:
    """The server learns which header to pass as ClientHints.header."""
    sources = {"clients": {"sources": ["peer", "header:X-Team"]}}
    assert client_header(Settings.model_validate(sources)) == "X-Team"
    no_header = {"clients": {"sources": ["worker_id", "peer"]}}
    assert client_header(Settings.model_validate(no_header)) is None


def test_labels_are_capped_at_max_clients() -> None:
    """The first max_clients identities keep their label; later ones become `other`."""
    ids = ClientIdentifier(DEFAULT_SOURCES, 3)
    labels = [ids.label(f"client-{i}") for i in range(10)]
    assert labels[:3] == ["client-0", "client-1", "client-2"]
    assert set(labels[3:]) == {OTHER}
    assert ids.label("client-1") == "client-1"


def test_seed_reserves_known_clients() -> None:
    """Identities seeded from a persisted ledger keep their label after a restart."""
    ids = ClientIdentifier(DEFAULT_SOURCES, 2)
    ids.seed(["old-a", OTHER, "old-b", "old-c"])
    assert ids.label("old-a") == "old-a"
    assert ids.label("old-b") == "old-b"
    assert ids.label("old-c") == OTHER
    assert ids.label("new") == OTHER


def test_max_clients_must_be_positive() -> None:
    """A cap of zero is a configuration error, not a silent `other` for everyone."""
    with pytest.raises(ValueError, match="max_clients"):
        ClientIdentifier(DEFAULT_SOURCES, 0)


def test_identify_remembers_what_identity_and_label_give() -> None:
    """`identify` answers as `identity` then `label` would, for hints seen once or often,
    past the cap and past the number of hints it remembers."""
    remembered = ClientIdentifier(DEFAULT_SOURCES, 3)
    fresh = ClientIdentifier(DEFAULT_SOURCES, 3)
    hints = [
        ClientHints(header=f"worker-{i % 7}" if i % 3 else None, user_agent="ua", peer=f"p{i % 11}")
        for i in range(2000)
    ]
    for round_ in range(2):
        for number, hint in enumerate(hints):
            worker_id = f"w{number % 5}" if number % 2 else None
            identity = fresh.identity(hint, worker_id)
            expected = (identity, fresh.label(identity))
            assert remembered.identify(hint, worker_id) == expected, (round_, number)


def test_identify_does_not_keep_long_hints() -> None:
    """A worker id may be as long as the body: such hints are answered, not remembered."""
    ids = ClientIdentifier(("worker_id",), 3)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(20):
            worker_id = f"{number}" + "w" * 100_000
            identity, _ = ids.identify(ClientHints(None, None, None), worker_id)
            assert identity == f"worker:{worker_id}"[:MAX_IDENTITY_LENGTH]
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 200_000
