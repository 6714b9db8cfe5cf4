"""Shared fixtures: every core test runs against both implementations.

The compiled core is skipped (with its reason shown) only when it is not importable AND
``AGYBRIDGE_REQUIRE_EXTENSIONS`` is not set; CI sets it, so a missing extension fails there.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

from agybridge._env import REQUIRE_EXTENSIONS_VAR, env_flag

IMPLEMENTATIONS = ("cython", "python")


def _load(name: str) -> ModuleType:
    module = "agybridge._core" if name == "cython" else "agybridge._core_py"
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if env_flag(REQUIRE_EXTENSIONS_VAR):
            pytest.fail(f"{REQUIRE_EXTENSIONS_VAR} is set but the compiled core is missing: {exc}")
        pytest.skip(f"compiled core not built ({exc}); set {REQUIRE_EXTENSIONS_VAR}=1 to make this an error")


@pytest.fixture(params=IMPLEMENTATIONS)
def core(request: pytest.FixtureRequest) -> ModuleType:
    """The core module under test: ``agybridge._core`` or ``agybridge._core_py``."""
    return _load(request.param)
