"""Fixtures for the shipping tests: the host chart assembled once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.shipping.chart import build_host_chart, helm


@pytest.fixture(scope="session")
def host_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example NoETL host chart with envelope-proxy under charts/."""
    helm()
    return build_host_chart(tmp_path_factory.mktemp("host-chart"))
