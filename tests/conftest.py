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
import contextlib  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Generator, Iterator  # noqa: E402
from typing import Any, TypeVar  # noqa: E402

from agybridge import BRIDGE_STATE, PythonRuntime, RuntimeConfig, RuntimeMetrics, dispatch_tool  # noqa: E402

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


def _started(core: ModuleType, config: RuntimeConfig) -> Iterator[PythonRuntime]:
    rt = PythonRuntime(config, core=core)
    rt.start()
    try:
        yield rt
    finally:
        rt.shutdown(timeout=10)
        BRIDGE_STATE.clear()


@pytest.fixture
def runtime(core: ModuleType) -> Iterator[PythonRuntime]:
    """A started runtime on the core under test; shut down (and checked) afterwards."""
    yield from _started(core, make_config())


@pytest.fixture
def stock_runtime(core: ModuleType) -> Iterator[PythonRuntime]:
    """:func:`runtime` on stock asyncio, never uvloop: the loop on which each command's body
    runs by hand in the carrier task on every CPython (with uvloop, only on 3.12+)."""
    yield from _started(core, make_config(use_uvloop=False))


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


# ------------------------------------------------------------------------------------------
# Giving up on a command: the probe, a cancelled await, Ctrl-C
# ------------------------------------------------------------------------------------------


def remote_probe() -> tuple[Any, threading.Event, threading.Event]:
    """A coroutine function that signals when it starts and when it is cancelled.

    Returns ``(long_running, started, cancelled)``: ``long_running(seconds=30)`` sleeps on the
    runtime loop, so a test can give up on it once *started* is set and then wait (bounded) for
    *cancelled*, the proof that giving up reached the loop.
    """
    started = threading.Event()
    cancelled = threading.Event()

    async def long_running(seconds: float = 30.0) -> str:
        started.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "finished"

    return long_running, started, cancelled


async def cancel_once_started(awaitable: Any, started: threading.Event) -> bool:
    """Await *awaitable* as a task of this asyncio loop, cancel the task once *started* is set.

    True if the task ended cancelled, as a caller that gives up must see it; False if it
    finished instead. The wait for *started* is bounded (10 s) and blocks no loop.
    """
    task = asyncio.ensure_future(awaitable)
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return True
    return False


async def trio_cancel_once_started(started: threading.Event, fn: Callable[..., Any], *args: Any) -> bool:
    """The trio twin of :func:`cancel_once_started`: run ``fn(*args)`` in a nursery and cancel
    its scope once *started* is set. True if the scope caught the cancellation."""
    import trio

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fn, *args)
            await trio.to_thread.run_sync(started.wait, 10)
            scope.cancel()
    return bool(scope.cancelled_caught)


def ctrl_c_once(started: threading.Event) -> None:
    """Press Ctrl-C (SIGINT to this process) once *started* is set, from another thread.

    Signals reach Python code on the main thread only, so off it the test is skipped.
    """
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")

    def interrupt_when_started() -> None:
        if started.wait(10):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_started).start()


@contextlib.contextmanager
def ctrl_c_soon(delay: float = 0.05) -> Generator[None, None, None]:
    """Press Ctrl-C *delay* seconds into the block, unless it ended first.

    For a wait that blocks until interrupted: whether the signal lands before the wait starts
    or during it, the block raises KeyboardInterrupt, so the verdict does not depend on timing.
    """
    timer = threading.Timer(delay, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def run_drivers(driver: Callable[[int], None], count: int, timeout: float) -> None:
    """Run ``driver(k)`` for k in range(*count*), each in its own thread, and join them all
    within *timeout* seconds each; fails if any is still running (a hung caller)."""
    threads = [threading.Thread(target=driver, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a driver thread is still running"


def call_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``fn()`` in a new thread, a caller blocked in the runtime.

    Returns the started thread and the list that receives what ``fn`` raised (empty if it
    returned); read the list after joining the thread.
    """
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    return thread, errors


# ------------------------------------------------------------------------------------------
# Agents and coroutines shared by the fault tests
# ------------------------------------------------------------------------------------------


class CallsTool:
    """Calls tool *tool* of *agent_id* on every chat and replies with its result."""

    def __init__(self, agent_id: str, tool: str = "tool") -> None:
        self.agent_id, self.tool = agent_id, tool
        self.closed = threading.Event()

    async def chat(self, message: str) -> str:
        return str(await dispatch_tool(self.agent_id, self.tool, None))

    async def aclose(self) -> None:
        self.closed.set()


async def ping() -> str:
    return "pong"


async def self_cancelling() -> None:
    """A command whose task cancels itself on the runtime loop: cancelled by no caller."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(1)
