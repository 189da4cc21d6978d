"""The demo lives in one package, ``headrace.demo``: nothing else in the product imports it (but the
``demo`` command that runs it) or carries demo-only code, and the demo itself uses only what the
CLI uses (it runs the public commands; it has no private way into the product)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import headrace

ROOT = Path(headrace.__file__).parent
DEMO = "headrace.demo"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[tuple[str, int]]:
    """Every headrace module ``path`` imports (at the top or inside a function), with the line."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "headrace"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "headrace":
                continue
            found.add((target, node.lineno))
            found |= {(f"{target}.{a.name}", node.lineno) for a in node.names}  # from pkg import module
    return found


def _resolve(target: str, modules: dict[str, Path]) -> str | None:
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = {_resolve(t, modules) for t, _ in _imports(name, path)}
        graph[name] = {e for e in edges if e is not None and e != name}
    return graph


def _in_demo(name: str) -> bool:
    return name == DEMO or name.startswith(DEMO + ".")


def test_no_module_outside_the_demo_package_imports_it():
    modules = _modules()
    importers = []
    for name, path in modules.items():
        if _in_demo(name):
            continue
        for target, line in _imports(name, path):
            if _in_demo(_resolve(target, modules) or ""):
                importers.append(f"{name}:{line}")
    # the one way in: the 'headrace demo' command runs it
    assert {i.split(":")[0] for i in importers} == {"headrace.cli.core"}, importers


def test_the_demo_command_is_the_only_importer_and_imports_lazily():
    tree = ast.parse((ROOT / "cli" / "core.py").read_text(encoding="utf-8"))
    demo_fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "demo")
    inside = {id(n) for n in ast.walk(demo_fn)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "demo":
            in_type_checking = False
            for top in tree.body:
                if isinstance(top, ast.If) and "TYPE_CHECKING" in ast.unparse(top.test):
                    in_type_checking |= any(n is node for n in ast.walk(top))
            assert id(node) in inside or in_type_checking, f"cli/core.py:{node.lineno} imports the demo"


def test_no_demo_only_code_outside_the_demo_package():
    offenders = []
    for name, path in _modules().items():
        if _in_demo(name):
            continue
        if "demo" in path.stem:
            offenders.append(f"{name} (a demo module)")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and re.search(
                "demo", node.name, re.IGNORECASE
            ):
                if name == "headrace.cli.core" and node.name == "demo":
                    continue  # the command itself
                offenders.append(f"{name}.{node.name}")
    assert offenders == []
    assert not list(ROOT.glob("*/demo*.py")) or all(p.parent.name == "demo" for p in ROOT.glob("*/demo*.py"))


def test_the_demo_uses_only_what_the_cli_uses():
    graph = _graph()
    reach: set[str] = set()
    todo = [n for n in graph if n == "headrace.cli" or n.startswith("headrace.cli.")]
    while todo:
        node = todo.pop()
        if node in reach or _in_demo(node):
            continue
        reach.add(node)
        todo.extend(graph[node])
    used = {m for n in graph if _in_demo(n) for m in graph[n] if not _in_demo(m)}
    assert used, "the demo package imports the product"
    assert "headrace.cli" in used, "the demo runs the public commands"
    assert sorted(used - reach) == []


def test_the_graph_sees_relative_and_lazy_imports():
    graph = _graph()
    # relative, at the top: the CLI's commands register through cli/_app
    assert "headrace.cli._app" in graph["headrace.cli.core"]
    # lazy, inside the command: 'headrace demo' imports the demo package when it runs
    assert DEMO in graph["headrace.cli.core"]
