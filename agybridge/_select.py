"""The one place that chooses between the compiled core and its pure-Python twin.

``agybridge._core`` (Cython) is used when it was built and importable, unless
``AGYBRIDGE_NO_EXTENSIONS`` asks for the twin; ``agybridge._core_py`` otherwise. The
environment variable is read by :func:`agybridge._env.no_extensions_requested`, the same
function ``setup.py`` uses, so the build and the import can never disagree.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from agybridge._env import REQUIRE_EXTENSIONS_VAR, env_flag, no_extensions_requested

__all__ = [
    "IMPLEMENTATION",
    "AgentRegistry",
    "Channel",
    "CommandQueue",
    "Implementation",
    "Oneshot",
    "core",
    "load_core",
]

Implementation = Literal["cython", "python"]


def load_core(name: Implementation) -> ModuleType:
    """Import and return the core module of the named implementation (used by the tests)."""
    if name == "cython":
        from agybridge import _core

        return _core
    if name == "python":
        from agybridge import _core_py

        return _core_py
    raise ValueError(f"unknown core implementation {name!r}; expected 'cython' or 'python'")


def _choose() -> ModuleType:
    if no_extensions_requested():
        return load_core("python")
    try:
        return load_core("cython")
    except ImportError:
        if env_flag(REQUIRE_EXTENSIONS_VAR):
            raise
        if (Path(__file__).resolve().parent.parent / "setup.py").exists():
            # Imported from a source checkout (e.g. `python -m ...` run from its root), which
            # shadows the installed, compiled package: say so instead of silently slowing down.
            warnings.warn(
                "agybridge is imported from its source tree, where the compiled core is not built, "
                "so it runs on the pure-Python twin; run from another directory, use the "
                "'agybridge' command, or build in place with 'pip install -e .'",
                RuntimeWarning,
                stacklevel=2,
            )
        return load_core("python")


core = _choose()
# Each core names itself, so what is reported is what was loaded, not what was meant to be.
IMPLEMENTATION: Implementation = core.IMPLEMENTATION

if TYPE_CHECKING:
    # Both implementations are typed by one stub, agybridge/_core.pyi.
    from agybridge._core import AgentRegistry, Channel, CommandQueue, Oneshot
else:
    Oneshot = core.Oneshot
    Channel = core.Channel
    CommandQueue = core.CommandQueue
    AgentRegistry = core.AgentRegistry
