"""Fixtures for the hostile-input suite: the functional suite's, plus a log capture."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.functional.conftest import no_blocking_calls, session

__all__ = ["all_logs", "no_blocking_calls", "session"]


class Captured(logging.Handler):
    """Every record any logger emits while a test runs, formatted as the proxy formats it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, name_prefix: str = "") -> list[str]:
        """The formatted output (tracebacks included) of records from loggers under a prefix."""
        out: list[str] = []
        for record in self.records:
            if record.name.startswith(name_prefix):
                out.extend(self.format(record).split("\n"))
        return out

    def text(self) -> str:
        return "\n".join(self.format(record) for record in self.records)


@pytest.fixture
def all_logs() -> Iterator[Captured]:
    """Capture every log record at DEBUG and above from the root logger down."""
    handler = Captured()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
