"""The extension contract stands on its own: the server and observability meet only there.

`proxy/contract.py` imports nothing of `proxy.server` or `proxy.observability`, and
observability imports of the server only a piece that imports nothing of the proxy itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.samples import REPO_ROOT

PACKAGE = REPO_ROOT / "proxy"
# Log-safe text (`printable`): a server module, but one that imports nothing of the proxy.
NEUTRAL_SERVER_MODULES = frozenset({"proxy.server.logsafe"})


def _is_module(name: str) -> bool:
    path = REPO_ROOT / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(source: str, filename: str = "<source>") -> set[str]:
    """Every module a source imports; of `from package import name`, `package.name` too
    when that is a module of this tree."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.add(node.module)
            submodules = (f"{node.module}.{alias.name}" for alias in node.names)
            found.update(name for name in submodules if _is_module(name))
    return found


def imports_under(path: Path, *prefixes: str) -> list[str]:
    """The modules `path` imports that are `prefix` or lie under it."""
    modules = imported_modules(path.read_text(encoding="utf-8"), str(path))
    return sorted(m for m in modules for p in prefixes if m == p or m.startswith(p + "."))


def test_the_contract_imports_neither_the_server_nor_observability() -> None:
    assert imports_under(PACKAGE / "contract.py", "proxy.server", "proxy.observability") == []


def test_observability_imports_no_server_module_but_the_neutral_ones() -> None:
    """Not `proxy.server.hooks` (gone), `state` or `problems`: what it needs of the server
    comes through the contract."""
    modules = sorted((PACKAGE / "observability").rglob("*.py"))
    assert len(modules) > 5
    found = [
        f"{path.relative_to(REPO_ROOT)}: {module}"
        for path in modules
        for module in imports_under(path, "proxy.server")
        # `from proxy.server import x` names the package too; `x` is what is checked.
        if module != "proxy.server" and module not in NEUTRAL_SERVER_MODULES
    ]
    assert found == []


def test_the_neutral_server_modules_import_nothing_of_the_proxy() -> None:
    for module in NEUTRAL_SERVER_MODULES:
        path = REPO_ROOT / (module.replace(".", "/") + ".py")
        assert imports_under(path, "proxy") == [], module


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from proxy.server.hooks import EventRecord", ["proxy.server.hooks"]),
        ("from proxy.server import state, STATE", ["proxy.server", "proxy.server.state"]),
        ("import proxy.server.state", ["proxy.server.state"]),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from proxy.observability import tracing",
            ["proxy.observability", "proxy.observability.tracing"],
        ),
        ("from proxy.contract import Extension\nfrom proxy.serverless import y", []),
    ],
)
def test_imports_are_found_in_every_form(source: str, expected: list[str], tmp_path: Path) -> None:
    """The check above sees an import however it is written (and only under the prefix)."""
    path = tmp_path / "module.py"
    path.write_text(source, encoding="utf-8")
    assert imports_under(path, "proxy.server", "proxy.observability") == expected
