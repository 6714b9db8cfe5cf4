"""The package's layers: every import points down, no cycle, and the two wings never meet.

Every module of ``agybridge`` is parsed (``ast``; nothing is imported), and every import of a
package module counts: top-level ones, imports inside functions and ``TYPE_CHECKING`` blocks.
A lower module that needs a higher object declares a Protocol of what it uses instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "agybridge"

#: Layers, lowest first. A module may import modules of lower layers, and of its own layer
#: as long as no cycle forms. The two wings share a layer and may not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("agybridge.errors", "agybridge._env", "agybridge._diagnostics", "agybridge._fork"),
    ("agybridge._validate",),
    ("agybridge._core", "agybridge._core_py", "agybridge._select", "agybridge.config"),
    ("agybridge._backends",),
    ("agybridge._origin",),
    ("agybridge._agent_state",),
    ("agybridge.commands",),
    ("agybridge._registry",),
    ("agybridge._loop", "agybridge._caller"),
    ("agybridge.lowlevel", "agybridge.state"),
    ("agybridge.runtime",),
    ("agybridge",),
    # Users of the public API only: never a wing.
    ("agybridge.testing", "agybridge.adapters", "agybridge.demo", "agybridge.bench", "agybridge.__main__"),
]

WINGS = ("agybridge._loop", "agybridge._caller")
USERS = LAYERS[-1]

#: Imports inside a function that are allowed, and why: they point down, and they are the
#: point of the function (choosing the core), or they load an optional dependency late.
LOCAL_IMPORTS_ALLOWED = {
    "agybridge._select": "load_core() imports the core it was asked for",
    "agybridge.__main__": "the CLI imports the demo or the benchmarks only when asked",
    "agybridge.demo": "the demo imports an SDK adapter or the pure core only when asked",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    found["agybridge._core"] = PACKAGE / "_core.pyx"
    return found


def _group(module: str) -> str:
    """The layer entry a module belongs to (its longest matching prefix)."""
    best = ""
    for layer in LAYERS:
        for name in layer:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best = name
    assert best, f"{module} is in no layer of tests/test_layers.py: add it"
    return best


def _rank(module: str) -> int:
    group = _group(module)
    return next(i for i, layer in enumerate(LAYERS) if group in layer)


def _resolve(module: str, node: ast.ImportFrom | ast.Import, is_package: bool, known: set[str]) -> list[str]:
    """The package modules an import reaches: ``from X import y`` reaches ``X.y`` when that is a
    module (the package ``X`` itself is only initialised on the way), else ``X``."""
    targets: list[str] = []
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parent = module.split(".") if is_package else module.split(".")[:-1]
            parent = parent[: len(parent) - (node.level - 1)]
            base = ".".join([*parent, base] if base else parent)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            targets.append(submodule if submodule in known else base)
    return [t for t in targets if t == "agybridge" or t.startswith("agybridge.")]


class _Imports(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []  # (node, local or TYPE_CHECKING)
        self._depth = 0

    def _visit_nested(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_nested

    def visit_If(self, node: ast.If) -> None:
        test = ast.unparse(node.test)
        if "TYPE_CHECKING" in test:
            self._visit_nested(node)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.append((node, self._depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.append((node, self._depth > 0))


def _python_imports_of_cython(source: str) -> str:
    """The top-level ``agybridge`` imports of a Cython file, as Python ``ast`` can parse."""
    kept: list[str] = []
    open_paren = False
    for line in source.splitlines():
        if open_paren or line.startswith(("from agybridge", "import agybridge")):
            kept.append(line)
            open_paren = (open_paren or "(" in line) and ")" not in line
    return "\n".join(kept)


def _edges() -> list[tuple[str, str, bool, int]]:
    modules = _modules()
    edges: list[tuple[str, str, bool, int]] = []
    for name, path in modules.items():
        source = path.read_text()
        text = _python_imports_of_cython(source) if path.suffix == ".pyx" else source
        visitor = _Imports()
        visitor.visit(ast.parse(text))
        for node, nested in visitor.found:
            for target in _resolve(name, node, path.name == "__init__.py", set(modules)):
                if target in modules and target != name:
                    edges.append((name, target, nested, node.lineno))
    return edges


def test_every_module_is_in_a_layer() -> None:
    for module in _modules():
        _group(module)


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{src} imports {dst} (line {line}): layer {_rank(src)} -> {_rank(dst)}"
        for src, dst, _nested, line in _edges()
        if _rank(dst) > _rank(src)
    ]
    assert not upward, "\n".join(upward)


def test_the_wings_never_import_each_other() -> None:
    crossing = [
        f"{src} imports {dst} (line {line})"
        for src, dst, _nested, line in _edges()
        if _group(src) in WINGS and _group(dst) in WINGS and _group(src) != _group(dst)
    ]
    assert not crossing, "\n".join(crossing)


def test_users_of_the_public_api_never_import_a_wing() -> None:
    reaching = [
        f"{src} imports {dst} (line {line})"
        for src, dst, _nested, line in _edges()
        if _group(src) in USERS and _group(dst) in WINGS
    ]
    assert not reaching, "\n".join(reaching)


def test_no_import_hides_inside_a_function_or_type_checking_block() -> None:
    hidden = [
        f"{src} imports {dst} (line {line}) inside a function or a TYPE_CHECKING block"
        for src, dst, nested, line in _edges()
        if nested and _group(src) not in LOCAL_IMPORTS_ALLOWED
    ]
    assert not hidden, "\n".join(hidden)


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for src, dst, _nested, _line in _edges():
        graph.setdefault(src, set()).add(dst)
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    graph = {src: {dst for dst in dsts if not dst.startswith(src + ".")} for src, dsts in graph.items()}
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(_modules(), white)
    stack: list[str] = []

    def visit(node: str) -> None:
        color[node] = grey
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if color.get(nxt, black) == grey:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if color.get(nxt) == white:
                visit(nxt)
        stack.pop()
        color[node] = black

    for module in sorted(color):
        if color[module] == white:
            visit(module)


def test_the_checker_sees_hidden_imports(tmp_path: Path) -> None:
    """The visitor counts local and TYPE_CHECKING imports (else the tests above prove nothing)."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from agybridge.runtime import PythonRuntime\n"
        "def f():\n    from agybridge import _select\n"
    )
    visitor = _Imports()
    visitor.visit(ast.parse(source))
    nested = [(type(node).__name__, flag) for node, flag in visitor.found]
    assert nested == [("ImportFrom", False), ("ImportFrom", True), ("ImportFrom", True)]
