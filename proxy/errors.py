"""`ProblemsError`: the base of errors that carry a list of problems, one line each.

A configuration or a rules directory is checked whole, so its error names every problem
found rather than the first. Standard library only: the pure engine imports it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class ProblemsError(Exception):
    """Something unusable; `problems` holds one line per problem, in the order found."""

    problems: Sequence[str]
    # What the problems are joined with in the message (`str(error)`).
    separator: ClassVar[str] = "\n"

    def __init__(self, problems: Sequence[str]):
        self.problems = problems
        super().__init__(self.separator.join(problems))

    def __str__(self) -> str:
        return self.separator.join(self.problems)
