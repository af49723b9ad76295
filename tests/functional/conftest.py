"""Fixtures shared by the functional tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for talking to the servers a test starts."""
    async with aiohttp.ClientSession() as client:
        yield client
