"""The package layers: every import inside bitty points down a layer or stays in its package, and
no two modules import each other, even through function-level or TYPE_CHECKING imports."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "bitty"

# Lowest first. A module may import from a lower layer, or from its own package.
LAYERS = [
    ("bitty.errors", "bitty.backoff"),
    ("bitty.lang",),
    ("bitty.trade",),
    ("bitty.spec",),
    ("bitty.mapping", "bitty.storage"),
    ("bitty.engine", "bitty.markets"),
    ("bitty.continuity",),
    ("bitty.ops",),
    ("bitty.planning",),
    ("bitty.pipeline",),
    ("bitty.commands",),
    ("bitty.cli",),
    ("bitty.collect", "bitty.__main__", "bitty.hooks", "bitty"),
]


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> tuple[int, str]:
    """(layer, package) of a module: the longest layer entry that contains it."""
    best: tuple[int, str] | None = None
    for rank, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best[1])):
                best = (rank, name)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def _imports() -> dict[str, set[str]]:
    modules = {_name(p): p for p in ROOT.rglob("*.py") if "_data" not in p.parts}
    out: dict[str, set[str]] = {}
    for module, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bitty"):
                # ``from bitty.spec import files`` imports the module bitty.spec.files
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("bitty"))
        out[module] = found - {module}
    return out


def test_imports_point_down() -> None:
    """No module imports one from a higher layer or from a sibling package of its own layer."""
    wrong = []
    for module, imported in _imports().items():
        rank, unit = _unit(module)
        for target in imported:
            trank, tunit = _unit(target)
            if trank > rank or (trank == rank and tunit != unit):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports pointing up or sideways:\n" + "\n".join(sorted(wrong))


def test_no_import_circles() -> None:
    """The module import graph has no cycle."""
    graph = _imports()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "import circles:\n" + "\n".join(cycles)
