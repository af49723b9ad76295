"""The emulator stays apart from the proxy: who may import it, and what it imports.

The production image leaves `proxy/emulator` out, so the product reaches it only from the
`upstream` and `demo` commands, and only once they run. The emulator itself depends on
the pure engine at most, never on the server or observability code it stands in front of.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from proxy.emulator import PROFILES
from proxy.emulator_commands import PROFILE_NAMES

PACKAGE = Path(__file__).resolve().parents[2] / "proxy"
EMULATOR = PACKAGE / "emulator"
ENTRY_POINTS = {"demo.py", "emulator_commands.py"}  # `envelope-proxy demo` and `upstream`
EMULATOR_MAY_IMPORT = {"proxy.emulator", "proxy.envelope"}
_EMULATOR_NAME = re.compile(r"proxy\.emulator(\.\w+)*")


def imported_names(tree: ast.AST) -> list[tuple[str, int, bool]]:
    """(module, line, at module level) for every import and every `"proxy.emulator..."`
    string (what importlib would import) in `tree`."""
    top_level = {id(node) for node in getattr(tree, "body", [])}
    found: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            found.append((node.module, node.lineno, id(node) in top_level))
            found += [
                (f"{node.module}.{a.name}", node.lineno, id(node) in top_level) for a in node.names
            ]
        elif isinstance(node, ast.Constant) and _EMULATOR_NAME.fullmatch(str(node.value)):
            found.append((str(node.value), node.lineno, False))
    return found


def is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def emulator_imports_outside() -> list[str]:
    """`path:line module` for each import of proxy.emulator outside it that is not allowed."""
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(EMULATOR):
            continue
        relative = path.relative_to(PACKAGE.parent).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for module, line, top in imported_names(tree):
            if not is_under(module, "proxy.emulator"):
                continue
            if path.parent != PACKAGE or path.name not in ENTRY_POINTS or top:
                wrong.append(f"{relative}:{line} {module}")
    return wrong


def test_only_the_demo_and_upstream_commands_import_the_emulator_when_they_run() -> None:
    """Outside proxy/emulator, only proxy/demo.py and proxy/emulator_commands.py import it,
    and only inside a function (every other command, and these two's parsers, work without
    it)."""
    assert emulator_imports_outside() == []


def test_the_check_sees_a_module_level_import_and_an_importlib_name() -> None:
    """The scan catches the forms it forbids (a check that cannot fail proves nothing)."""
    tree = ast.parse(
        "import proxy.emulator.app\n"
        "from proxy import emulator\n"
        "def f():\n"
        "    importlib.import_module('proxy.emulator.commands')\n"
    )
    found = [(m, top) for m, _, top in imported_names(tree) if is_under(m, "proxy.emulator")]
    assert found == [
        ("proxy.emulator.app", True),
        ("proxy.emulator", True),
        ("proxy.emulator.commands", False),
    ]


def test_the_emulator_depends_on_the_engine_at_most() -> None:
    """proxy/emulator imports from proxy only itself and proxy.envelope: nothing from
    proxy.server, proxy.observability, proxy.config or the command line."""
    outside = []
    for path in sorted(EMULATOR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                outside.append(f"{path.name}:{node.lineno} relative import")
        for module, line, _ in imported_names(tree):
            if is_under(module, "proxy") and not any(
                is_under(module, allowed) for allowed in EMULATOR_MAY_IMPORT
            ):
                outside.append(f"{path.relative_to(PACKAGE.parent)}:{line} {module}")
    assert outside == []


def test_the_upstream_command_offers_every_profile_in_order() -> None:
    """`upstream --emulate` parses without the emulator, from a copy of the profile names."""
    assert tuple(PROFILES) == PROFILE_NAMES
