"""The package's import graph: no circle, no module importing another's ``_private`` names.

The graph is read from the source (AST), imports anywhere in a module counted (module
level and inside functions; ``if TYPE_CHECKING:`` blocks excepted, they never run).
An edge goes to the module named by ``import a.b`` / ``from a.b import c`` and, when
``c`` is itself a module, to ``a.b.c``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "atrisk"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                skip |= {id(n) for n in ast.walk(sub)}
    return skip


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Return ``{module: modules it imports}`` for ``atrisk`` and the private-name imports."""
    graph: dict[str, set[str]] = {}
    private: list[str] = []
    for path in sorted(PKG.rglob("*.py")):
        name = _module_name(path)
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_nodes(tree)
        edges: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.split(".")[0] == "atrisk"}
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    module = ".".join(base + ([module] if module else []))
                if module.split(".")[0] != "atrisk":
                    continue
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    if _is_module(sub):
                        edges.add(sub)
                    else:
                        edges.add(module)
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            private.append(f"{path.relative_to(ROOT)}:{node.lineno}: "
                                           f"from {module} import {alias.name}")
        graph[name] = {e for e in edges if e != name and _is_module(e)}
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    sys.setrecursionlimit(10000)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    graph, _ = import_graph()
    assert len(graph) > 60
    assert "atrisk.extract.session" in graph["atrisk.extract.plan"]
    assert "atrisk.extractors.prosody" in graph["atrisk.extract.session"]


def test_no_import_circle():
    graph, _ = import_graph()
    assert cycles(graph) == []


def test_no_private_name_imported_across_modules():
    _, private = import_graph()
    assert private == []


def test_the_checks_catch_a_circle_and_a_private_import(tmp_path):
    # negative control: the same walkers on a graph with a circle
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("module", ["atrisk", "atrisk.features.pairs", "atrisk.training.model",
                                    "atrisk.workflows", "atrisk.cli"])
def test_light_parts_import_without_torch(module):
    import subprocess

    code = (f"import sys, {module}; "
            "heavy = [m for m in ('torch', 'opensmile', 'ray', 'transformers') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout
