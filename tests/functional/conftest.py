"""Fixtures shared by the functional tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from blockbuster import BlockBuster, blockbuster_ctx

_START_UP = (
    ("proxy/server/app.py", {"create_app", "_upstream"}),  # app construction, start-up
    ("proxy/observability/__init__.py", {"build_extension"}),
)


@pytest.fixture(autouse=True)
def no_blocking_calls() -> Iterator[BlockBuster]:
    """Fail any test in which the proxy makes a blocking call (file or socket I/O, sleep)
    on the event loop.

    Start-up may read files: it runs before the listener accepts anything (a reload reads
    them in a thread). The emulator is exempt: it stands in for the control plane.
    """
    with blockbuster_ctx("proxy", excluded_modules=["proxy.emulator"]) as detector:
        for function in detector.functions.values():
            for path, names in _START_UP:
                function.can_block_in(path, names)
        yield detector


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for talking to the servers a test starts."""
    async with aiohttp.ClientSession() as client:
        yield client
