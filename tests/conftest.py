"""Shared fixtures: every core test runs against both implementations.

The compiled core is skipped (with its reason shown) only when it is not importable AND
``AGYBRIDGE_REQUIRE_EXTENSIONS`` is not set; CI sets it, so a missing extension fails there.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest

from agybridge._env import REQUIRE_EXTENSIONS_VAR, env_flag
from agybridge._select import Implementation, load_core

IMPLEMENTATIONS: tuple[Implementation, ...] = ("cython", "python")

# tests/servers runs real pre-fork servers (the ``servers`` extra, redis-server from the OS): a
# CI step of its own (.ci/run) runs them with AGYBRIDGE_SERVER_TESTS=1; the default run does not.
collect_ignore = [] if os.environ.get("AGYBRIDGE_SERVER_TESTS") == "1" else ["servers"]


def _load(name: Implementation) -> ModuleType:
    try:
        return load_core(name)
    except ImportError as exc:
        if env_flag(REQUIRE_EXTENSIONS_VAR):
            pytest.fail(f"{REQUIRE_EXTENSIONS_VAR} is set but the compiled core is missing: {exc}")
        pytest.skip(f"compiled core not built ({exc}); set {REQUIRE_EXTENSIONS_VAR}=1 to make this an error")


@pytest.fixture(params=IMPLEMENTATIONS)
def core(request: pytest.FixtureRequest) -> ModuleType:
    """The core module under test: ``agybridge._core`` or ``agybridge._core_py``."""
    return _load(request.param)


# ------------------------------------------------------------------------------------------
# Runtime fixtures
# ------------------------------------------------------------------------------------------

import asyncio  # noqa: E402
import concurrent.futures  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any, TypeVar  # noqa: E402

from agybridge import BRIDGE_STATE, PythonRuntime, RuntimeConfig, RuntimeMetrics  # noqa: E402

T = TypeVar("T")


def make_config(**overrides: Any) -> RuntimeConfig:
    """A config for tests: no inter-agent spacing and short bounds unless overridden."""
    values: dict[str, Any] = {
        "inter_agent_delay": 0.0,
        "chat_timeout": 10.0,
        "operation_timeout": 20.0,
        "shutdown_grace": 0.5,
    }
    values.update(overrides)
    return RuntimeConfig(**values)


@pytest.fixture
def runtime(core: ModuleType) -> Iterator[PythonRuntime]:
    """A started runtime on the core under test; shut down (and checked) afterwards."""
    rt = PythonRuntime(make_config(), core=core)
    rt.start()
    try:
        yield rt
    finally:
        rt.shutdown(timeout=10)
        BRIDGE_STATE.clear()


def in_thread(fn: Callable[[], T], timeout: float = 30.0) -> T:
    """Run *fn* on a fresh thread (a host thread with its own loop) and return its result."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=timeout)


def asyncio_host(coro_fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Run ``asyncio.run(coro_fn())`` on another thread: an asyncio host loop."""
    return in_thread(lambda: asyncio.run(coro_fn()), timeout)


def trio_host(coro_fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Run ``trio.run(coro_fn)`` on another thread: a trio host."""
    import trio

    return in_thread(lambda: trio.run(coro_fn), timeout)


def settled(runtime: PythonRuntime, timeout: float = 10.0) -> RuntimeMetrics:
    """The metrics once nothing is in flight: a caller can see its outcome (a timeout, a
    cancellation) a moment before the runtime loop has finished the task and counted it."""
    deadline = time.monotonic() + timeout
    metrics = runtime.metrics()
    while metrics.in_flight and time.monotonic() < deadline:
        threading.Event().wait(0.005)
        metrics = runtime.metrics()
    return metrics
