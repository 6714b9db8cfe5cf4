"""agybridge's own contenders: one runtime per core, on stock asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType

from agybridge import PythonRuntime, RuntimeConfig
from agybridge._select import load_core
from agybridge.bench._hosts import uvloop_available

__all__ = ["COMPILED", "PURE", "UVLOOP", "cores", "runtimes"]

COMPILED = "agybridge"
PURE = "agybridge-pure"
UVLOOP = "agybridge+uvloop"


def cores() -> list[tuple[str, ModuleType]]:
    """The compiled core when it is built, and the pure twin, under their row names."""
    found: list[tuple[str, ModuleType]] = []
    try:
        found.append((COMPILED, load_core("cython")))
    except ImportError:
        pass
    found.append((PURE, load_core("python")))
    return found


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@contextmanager
def runtimes(log: Callable[[str], None]) -> Iterator[list[tuple[str, PythonRuntime]]]:
    """Started runtimes: each core on stock asyncio, plus the first core on uvloop if installed.

    ``use_uvloop`` defaults to True, so the loop kind is always set explicitly here, and the
    uvloop row is only kept when its runtime really runs on uvloop.
    """
    base = RuntimeConfig(inter_agent_delay=0, chat_timeout=600, operation_timeout=600, max_in_flight=1_000_000)
    stock = dataclasses.replace(base, use_uvloop=False)
    started: list[tuple[str, PythonRuntime]] = []
    try:
        found = cores()
        for name, core in found:
            started.append((name, PythonRuntime(stock, core=core).start()))
        if uvloop_available():
            name, core = found[0]
            runtime = PythonRuntime(dataclasses.replace(base, use_uvloop=True), core=core).start()
            started.append((UVLOOP if name == COMPILED else f"{name}+uvloop", runtime))
        else:
            log("(uvloop not installed: uvloop row left out) ")
        for name, runtime in started:
            kind = runtime.run(_loop_module)
            if kind.startswith("uvloop") != name.endswith("+uvloop"):
                raise RuntimeError(f"bench runtime {name!r} runs on a {kind} loop")
        yield started
    finally:
        for _, runtime in started:
            runtime.shutdown()
