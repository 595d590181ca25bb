"""No import circles inside `cai`: the layers read one way.

Every import of a `cai.*` module counts, also one inside a function (a lazy import hides a circle
from Python at start-up, not from the reader), except one under `if TYPE_CHECKING:` (never run).
`from cai.x import y` is an edge to `cai.x.y` when that is a module, else to `cai.x`. A module's
edge to its own parent packages is left out: Python imports those implicitly, whatever it says.
"""

from __future__ import annotations

import ast
import textwrap
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "cai"


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module
    path: Path
    line: int
    code: str  # the import statement as written


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module under `root` (the folder of `package`) → its file."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join([package, *parts])] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Import statements anywhere in the tree (functions, classes, try blocks), except the body of
    `if TYPE_CHECKING:` (its `else:` does run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """`name`, or its nearest ancestor that is a module here."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_edges(root: Path, package: str) -> list[Edge]:
    modules = module_names(root, package)
    edges = []
    for source, path in modules.items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        is_pkg = path.name == "__init__.py"
        for node in _import_nodes(ast.parse(text, filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:  # relative: from the package this module is in
                    base_parts = source.split(".")
                    drop = node.level - 1 if is_pkg else node.level
                    base_parts = base_parts[:len(base_parts) - drop] if drop else base_parts
                    base = ".".join(p for p in [".".join(base_parts), node.module or ""] if p)
                else:
                    base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if alias.name != "*" and sub in modules else base)
            for name in dict.fromkeys(targets):  # once per statement and module
                if not (name == package or name.startswith(package + ".")):
                    continue
                target = _known(name, modules)
                if target is None or target == source or source.startswith(target + "."):
                    continue  # itself, or one of its parent packages (imported implicitly anyway)
                code = " ".join(l.strip() for l in lines[node.lineno - 1:node.end_lineno])
                edges.append(Edge(source, target, path, node.lineno, code))
    return edges


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one module, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return sorted(found)


def a_cycle(comp: list[str], by_pair: dict[tuple[str, str], Edge]) -> list[Edge]:
    """One shortest circle through the component's first module, as the imports that make it."""
    members = set(comp)
    start = comp[0]
    prev: dict[str, str] = {}
    todo = deque([start])
    while todo:
        node = todo.popleft()
        for (a, b) in by_pair:
            if a != node or b not in members:
                continue
            if b == start:
                chain = [by_pair[(node, start)]]
                while node != start:
                    chain.append(by_pair[(prev[node], node)])
                    node = prev[node]
                return chain[::-1]
            if b not in prev:
                prev[b] = node
                todo.append(b)
    raise AssertionError(f"no circle through {start}")  # a component always has one


def import_cycles(root: Path, package: str) -> list[tuple[list[str], list[Edge], list[Edge]]]:
    """Each import circle: (its modules, one circle through them, every import between them)."""
    edges = import_edges(root, package)
    graph: dict[str, set[str]] = {}
    by_pair: dict[tuple[str, str], Edge] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        by_pair.setdefault((e.source, e.target), e)
    out = []
    for comp in strongly_connected(graph):
        members = set(comp)
        inside = sorted((e for e in edges if e.source in members and e.target in members),
                        key=lambda e: (e.source, e.line, e.target))
        out.append((comp, a_cycle(comp, by_pair), inside))
    return out


def describe(cycles, base: Path) -> str:
    """Each circle: its modules, one way round it, and every import between its modules (what to cut)."""
    out = []
    for comp, chain, inside in cycles:
        out.append(f"circle of {len(comp)} modules: {', '.join(comp)}")
        out.append("  for one: " + " -> ".join([e.source for e in chain] + [chain[0].source]))
        out.append("  imports inside it:")
        for e in inside:
            out.append(f"    {e.path.relative_to(base)}:{e.line}: {e.code}  [{e.source} -> {e.target}]")
    return "\n".join(out)


def test_cai_has_no_import_circles():
    cycles = import_cycles(ROOT, "cai")
    if cycles:
        pytest.fail(f"{len(cycles)} import circle(s):\n" + describe(cycles, ROOT.parent), pytrace=False)


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = tmp_path / "pkg" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return tmp_path / "pkg"


def test_the_checker_finds_a_circle_hidden_in_a_function(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "from pkg.a import thing\n",  # the package's own import of its module: no circle
        "a.py": """
            from pkg import helper  # a module
            from pkg import VERSION  # a name in the parent package: Python imports that one anyway
            thing = 1
            """,
        "helper.py": """
            def later():
                from pkg.a import thing  # lazy, still a circle
                return thing
            """,
        "typed.py": """
            from typing import TYPE_CHECKING
            import pkg.helper
            if TYPE_CHECKING:
                from pkg.sub.deep import X  # never runs
            """,
        "sub/__init__.py": "",
        "sub/deep.py": "from ..typed import something\nimport os\n",
        "sub/leaf.py": "from . import deep\nfrom .. import a\n",
    })
    cycles = import_cycles(root, "pkg")
    assert [comp for comp, _, _ in cycles] == [["pkg.a", "pkg.helper"]]
    (_, chain, inside), = cycles
    assert [(e.source, e.target, e.line) for e in chain] == [("pkg.a", "pkg.helper", 2), ("pkg.helper", "pkg.a", 3)]
    assert len(inside) == 2
    text = describe(cycles, tmp_path)
    assert "pkg.a -> pkg.helper -> pkg.a" in text and "pkg/helper.py:3: from pkg.a import thing" in text
    edges = {(e.source, e.target) for e in import_edges(root, "pkg")}
    assert ("pkg.typed", "pkg.sub.deep") not in edges
    assert {("pkg.sub.deep", "pkg.typed"), ("pkg.sub.leaf", "pkg.sub.deep"), ("pkg.sub.leaf", "pkg.a")} <= edges
    assert not any(t == "pkg" for _, t in edges)  # parents left out


def test_the_checker_finds_every_circle(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "import pkg.b\n",
        "b.py": "import pkg.c\n",
        "c.py": "import pkg.a\n",
        "d.py": "import pkg.e\nimport pkg.a\n",
        "e.py": "from pkg.d import x\n",
        "f.py": "import pkg.a\n",  # into a circle, not part of one
    })
    assert [comp for comp, _, _ in import_cycles(root, "pkg")] == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.d", "pkg.e"]]
