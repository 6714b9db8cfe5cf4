"""Benchmark fixtures: every benchmark runs on both core implementations."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from agybridge import PythonRuntime, RuntimeConfig
from agybridge._select import load_core


@pytest.fixture(params=["cython", "python"])
def core(request: pytest.FixtureRequest) -> ModuleType:
    try:
        return load_core(request.param)
    except ImportError as exc:
        pytest.skip(f"compiled core not built: {exc}")


@pytest.fixture
def runtime(core: ModuleType) -> Iterator[PythonRuntime]:
    rt = PythonRuntime(RuntimeConfig(inter_agent_delay=0, max_in_flight=1_000_000), core=core).start()
    yield rt
    rt.shutdown()
