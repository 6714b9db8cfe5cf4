"""wrap(): a typed blocking callable with an .aio face, one Run command per call."""

from __future__ import annotations

import asyncio
import threading
from types import ModuleType
from typing import Any

import pytest
from conftest import (
    asyncio_host,
    call_in_thread,
    cancel_once_started,
    ctrl_c_once,
    make_config,
    remote_probe,
    self_cancelling,
    settled,
    trio_cancel_once_started,
    trio_host,
)

from agybridge import (
    CommandCancelledError,
    ConfigError,
    DeadlockError,
    OperationTimeoutError,
    PythonRuntime,
    RuntimeShutdownError,
)


async def fetch(url: str, *, timeout: float = 1.0) -> tuple[str, float, str]:
    """Has a parameter named timeout of its own: wrap() must pass it through untouched."""
    await asyncio.sleep(0)
    return url, timeout, threading.current_thread().name


async def fail(message: str) -> None:
    await asyncio.sleep(0)
    raise LookupError(message)


def test_wrapper_blocks_and_passes_every_argument_through(runtime: PythonRuntime) -> None:
    fetch_sync = runtime.wrap(fetch)
    assert fetch_sync("u", timeout=7.5) == ("u", 7.5, runtime.config.thread_name)
    assert fetch_sync.__name__ == "fetch" and fetch_sync.__doc__ == fetch.__doc__
    assert fetch_sync.__wrapped__ is fetch  # type: ignore[attr-defined]
    with pytest.raises(LookupError, match="remote failure") as info:
        runtime.wrap(fail)("remote failure")
    assert "fail" in "".join(str(entry.name) for entry in info.traceback)  # the remote frame is kept


def test_aio_face_from_asyncio_and_trio(runtime: PythonRuntime) -> None:
    fetch_sync = runtime.wrap(fetch)

    async def host() -> Any:
        return await fetch_sync.aio("a", timeout=2.0)

    assert asyncio_host(host) == ("a", 2.0, runtime.config.thread_name)
    assert trio_host(host) == ("a", 2.0, runtime.config.thread_name)


def test_decorator_on_functions_and_methods(runtime: PythonRuntime) -> None:
    @runtime.wrap
    async def add(a: int, b: int) -> int:
        return a + b

    class Store:
        def __init__(self) -> None:
            self.items = {"k": 41}

        @runtime.wrap(timeout=5)
        async def get(self, key: str) -> int:
            await asyncio.sleep(0)
            return self.items[key] + 1

    store = Store()
    assert add(2, 3) == 5
    assert store.get("k") == 42
    assert Store.get is Store.__dict__["get"]  # unbound access returns the wrapper itself
    assert asyncio_host(lambda: store.get.aio("k")) == 42
    assert runtime.wrap(store.get.__wrapped__.__get__(store))("k") == 42  # type: ignore[attr-defined]


def test_timeout_belongs_to_wrap_and_cancels_the_task(runtime: PythonRuntime) -> None:
    long_running, started, cancelled = remote_probe()
    slow = runtime.wrap(long_running, timeout=0.2)
    with pytest.raises(OperationTimeoutError) as info:
        slow()
    assert "long_running" in str(info.value) and "0.2 s" in str(info.value)
    assert started.is_set() and cancelled.wait(10)

    async def host() -> str:
        try:
            await slow.aio()
        except OperationTimeoutError as exc:
            return str(exc)
        return "no timeout"

    assert "0.2 s" in asyncio_host(host)
    assert "0.2 s" in trio_host(host)
    assert settled(runtime).timed_out == 3
    with pytest.raises(ConfigError, match="timeout"):
        runtime.wrap(fetch, timeout=-1)
    with pytest.raises(TypeError, match="coroutine function"):
        runtime.wrap(42)  # type: ignore[call-overload]


def test_cancelled_aio_call_cancels_the_remote_task(runtime: PythonRuntime) -> None:
    long_running, started, cancelled = remote_probe()
    slow = runtime.wrap(long_running)

    async def asyncio_caller() -> bool:
        return await cancel_once_started(slow.aio(), started)

    assert asyncio_host(asyncio_caller) is True
    assert cancelled.wait(10)

    started.clear()
    cancelled.clear()

    async def trio_caller() -> bool:
        return await trio_cancel_once_started(started, slow.aio)

    assert trio_host(trio_caller) is True
    assert cancelled.wait(10)
    assert settled(runtime).cancelled == 2


def test_task_cancelled_on_the_loop_reports_cancellation(runtime: PythonRuntime) -> None:
    with pytest.raises(CommandCancelledError):
        runtime.wrap(self_cancelling)()


def test_ctrl_c_interrupts_a_wrapped_call_and_cancels_the_task(runtime: PythonRuntime) -> None:
    long_running, started, cancelled = remote_probe()
    ctrl_c_once(started)
    with pytest.raises(KeyboardInterrupt):
        runtime.wrap(long_running, timeout=30)()
    assert cancelled.wait(10), "Ctrl-C did not cancel the wrapped call's task"
    assert runtime.wrap(fetch)("after")[0] == "after"


def test_blocking_call_on_the_runtime_loop_is_a_deadlock_error(runtime: PythonRuntime) -> None:
    fetch_sync = runtime.wrap(fetch)

    async def on_loop() -> str:
        try:
            fetch_sync("x")
        except DeadlockError as exc:
            return str(exc)
        return "no error"

    assert "runtime's own thread" in runtime.run(on_loop)

    async def aio_on_loop() -> Any:
        return await fetch_sync.aio("y")  # awaiting from the runtime loop itself is fine

    assert runtime.run(aio_on_loop)[0] == "y"


def test_shutdown_fails_in_flight_and_later_wrapped_calls(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(shutdown_grace=0.1), core=core).start()
    long_running, started, cancelled = remote_probe()
    slow = rt.wrap(long_running)
    waiter, errors = call_in_thread(slow)
    assert started.wait(10)
    rt.shutdown(timeout=10)
    waiter.join(10)
    assert errors and isinstance(errors[0], RuntimeShutdownError)
    assert cancelled.is_set()
    with pytest.raises(RuntimeShutdownError):
        rt.wrap(fetch)("late")
    with pytest.raises(RuntimeShutdownError):
        asyncio.run(rt.wrap(fetch).aio("late"))
