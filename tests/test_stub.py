"""``_core.pyi`` matches what each implementation really exports: names and signatures."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import agybridge

STUB = Path(agybridge.__file__).with_name("_core.pyi")


def _stub_api() -> dict[str, Any]:
    tree = ast.parse(STUB.read_text())
    api: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            api[node.name] = _params(node)
        elif isinstance(node, ast.ClassDef):
            members: dict[str, Any] = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    is_property = any(isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list)
                    members[item.name] = "property" if is_property else _params(item)
            api[node.name] = members
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            api[node.target.id] = ("constant", ast.unparse(node.annotation))
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            api["__all__"] = sorted(ast.literal_eval(node.value))
    return api


def _params(fn: ast.FunctionDef) -> list[tuple[str, str, str | None]]:
    args = fn.args
    result: list[tuple[str, str, str | None]] = []
    positional = args.posonlyargs + args.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for arg, default in zip(positional, defaults):
        if arg.arg == "self":
            continue
        result.append((arg.arg, "positional", ast.unparse(default) if default is not None else None))
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults):
        result.append((arg.arg, "keyword", ast.unparse(kw_default) if kw_default is not None else None))
    return result


def _runtime_params(fn: Any) -> list[tuple[str, str, str | None]]:
    result: list[tuple[str, str, str | None]] = []
    for param in inspect.signature(fn).parameters.values():
        if param.name == "self":
            continue
        kind = "keyword" if param.kind is param.KEYWORD_ONLY else "positional"
        default = None if param.default is param.empty else repr(param.default)
        result.append((param.name, kind, default))
    return result


def test_stub_matches_each_implementation(core: ModuleType) -> None:
    api = _stub_api()
    assert sorted(core.__all__) == api.pop("__all__")
    for name, members in api.items():
        obj = getattr(core, name)
        if isinstance(members, tuple):
            annotation = members[1]
            assert annotation.startswith("Literal["), f"{name}: only Literal constants are checked"
            assert obj in ast.literal_eval(annotation.removeprefix("Literal")), f"{name}={obj!r} not in {annotation}"
            continue
        if not isinstance(members, dict):
            assert _runtime_params(obj) == members, name
            continue
        public = {m for m in dir(obj) if not m.startswith("_")} | (
            {"__init__", "__len__", "__contains__"} & set(members)
        )
        assert {m for m in public if not m.startswith("_")} == {m for m in members if not m.startswith("_")}, name
        for member, params in members.items():
            attr = inspect.getattr_static(obj, member)
            if params == "property":
                assert not callable(attr) or hasattr(attr, "__get__"), f"{name}.{member} should be a property"
                assert not inspect.isfunction(attr), f"{name}.{member} should be a property"
                continue
            if member in ("__len__", "__contains__"):
                assert hasattr(obj, member)
                continue
            if member == "__init__":
                continue  # Cython's __init__ has no introspectable signature; covered by usage
            assert _runtime_params(getattr(obj, member)) == params, f"{name}.{member}"
