"""Every logger the proxy creates is named by its module's `__name__`: one `proxy.*` tree."""

from __future__ import annotations

import ast

import pytest

from tests.samples import REPO_ROOT

PACKAGE = REPO_ROOT / "proxy"
# Third-party loggers the proxy hands to a library or tunes; they keep the library's names.
THIRD_PARTY = frozenset({"aiohttp.access", "aiohttp.server", "watchfiles"})
# Where configuration sets the levels `log.levels` names (it looks loggers up, logs nothing).
CONFIGURES = {"proxy/server/logs.py": {"logging.getLogger(name)"}}


def _is_get_logger(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr in ("getLogger", "Logger")
    return isinstance(func, ast.Name) and func.id in ("getLogger", "Logger")


def foreign_loggers(source: str, filename: str = "<source>") -> list[str]:
    """`file:line: call` for each logger created under a name other than `__name__`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not (isinstance(node, ast.Call) and _is_get_logger(node.func)):
            continue
        args = [*node.args, *(k.value for k in node.keywords if k.arg == "name")]
        if not args:
            continue  # the root logger: configured, never logged to
        [name] = args
        if isinstance(name, ast.Name) and name.id == "__name__":
            continue
        if isinstance(name, ast.Constant) and name.value in THIRD_PARTY:
            continue
        call = ast.unparse(node)
        if call not in CONFIGURES.get(filename, set()):
            found.append(f"{filename}:{node.lineno}: {call}")
    return found


def test_every_logger_in_the_package_is_named_by_its_module() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 20
    found = [
        problem
        for path in modules
        for problem in foreign_loggers(
            path.read_text(encoding="utf-8"), str(path.relative_to(REPO_ROOT))
        )
    ]
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        'log = logging.getLogger("envelope_proxy.server")',
        "log = getLogger(ACCESS_LOGGER)",
        'log = logging.getLogger(name="proxy")',
        "log = logging.Logger('mine')",
        "log = logging.getLogger(__name__ + '.child')",
        'logging.getLogger("aiohttp")',
    ],
)
def test_the_check_flags_a_logger_named_otherwise(source: str) -> None:
    assert len(foreign_loggers(source)) == 1


@pytest.mark.parametrize(
    "source",
    [
        "log = logging.getLogger(__name__)",
        "root = logging.getLogger()",
        'quiet = logging.getLogger("watchfiles")',
        "logger or logging.getLogger('aiohttp.server')",
    ],
)
def test_the_check_allows_module_root_and_listed_third_party_loggers(source: str) -> None:
    assert foreign_loggers(source) == []
