"""The two cores are one API: the same public names, and the same docstring for each.

``agybridge._core`` (compiled from ``_core.pyx``) and ``agybridge._core_py`` (its pure-Python
twin) are documented once, in the API reference, from whichever core the docs build imports.
So every public class, method, property and function must carry the same text in both, or
the reference would describe one core and not the other. Names starting with ``_`` are the
cores' own business and are not compared.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest
from conftest import _load

PACKAGE = Path(__file__).resolve().parent.parent / "agybridge"


@pytest.fixture(scope="module")
def cores() -> tuple[ModuleType, ModuleType]:
    return _load("cython"), _load("python")


def _public(obj: object) -> list[str]:
    return sorted(name for name in dir(obj) if not name.startswith("_"))


def test_both_cores_export_the_same_names(cores: tuple[ModuleType, ModuleType]) -> None:
    compiled, twin = cores
    assert list(compiled.__all__) == list(twin.__all__)
    for name in compiled.__all__:
        assert hasattr(compiled, name) and hasattr(twin, name), name


def test_every_public_docstring_is_the_same_in_both_cores(cores: tuple[ModuleType, ModuleType]) -> None:
    compiled, twin = cores
    differ: list[str] = []
    documented = 0
    for name in compiled.__all__:
        a, b = getattr(compiled, name), getattr(twin, name)
        if not (inspect.isclass(a) or callable(a)):
            continue  # a constant (IMPLEMENTATION): its value differs by design
        documented += 1
        if inspect.getdoc(a) != inspect.getdoc(b):
            differ.append(name)
        if not inspect.isclass(a):
            continue
        assert _public(a) == _public(b), f"{name}: the cores' public members differ"
        for member in _public(a):
            documented += 1
            if inspect.getdoc(getattr(a, member)) != inspect.getdoc(getattr(b, member)):
                differ.append(f"{name}.{member}")
    assert documented > 20  # the classes and their methods were really compared
    assert not differ, f"docstrings that differ between _core.pyx and _core_py.py: {differ}"


def test_every_public_name_of_the_cores_has_a_docstring(cores: tuple[ModuleType, ModuleType]) -> None:
    compiled, _ = cores
    missing = [
        f"{name}.{member}" if member else name
        for name in compiled.__all__
        if inspect.isclass(getattr(compiled, name)) or callable(getattr(compiled, name))
        for member in ["", *(_public(getattr(compiled, name)) if inspect.isclass(getattr(compiled, name)) else [])]
        if not inspect.getdoc(getattr(getattr(compiled, name), member) if member else getattr(compiled, name))
    ]
    assert not missing, f"public names of the cores without a docstring: {missing}"


@pytest.mark.parametrize("source", ["_core.pyx", "_core_py.py"])
def test_implementation_is_assigned_once_per_core(source: str) -> None:
    """One statement names each core, so the two can never disagree with themselves."""
    text = (PACKAGE / source).read_text()
    if source.endswith(".py"):
        assignments = [
            node
            for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.Assign, ast.AnnAssign))
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name) and target.id == "IMPLEMENTATION"
        ]
        count = len(assignments)
    else:  # Cython is not Python: count the module-level assignment lines
        count = len(re.findall(r"^IMPLEMENTATION\s*(?::[^=]+)?=", text, re.M))
    assert count == 1, f"{source} assigns IMPLEMENTATION {count} times"
