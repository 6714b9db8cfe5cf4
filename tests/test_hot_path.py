"""The hot path's promises (issue 23): eventfd wake-ups, eager starts, batched completions.

A command whose body never suspends completes inside the dispatcher's reader callback, yet
runs as a real Task from its first step on; completions bound for one asyncio host loop or
one trio run share one wake-up per batch.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from types import ModuleType
from typing import Any

import pytest
import trio

from agybridge import PythonRuntime, RuntimeConfig
from agybridge._backends import _asyncio as asyncio_backend
from agybridge._backends import _trio as trio_backend

pytestmark = pytest.mark.timeout(60)

_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("hot_path_var", default="unset")


@pytest.fixture
def runtime(core: ModuleType) -> Any:
    rt = PythonRuntime(RuntimeConfig(inter_agent_delay=0, use_uvloop=False), core=core)
    rt.start()
    yield rt
    rt.shutdown(grace=1)


async def _what_runs_me() -> tuple[bool, bool, str]:
    task = asyncio.current_task()
    async with asyncio.timeout(5) if sys.version_info >= (3, 11) else _nullcontext():
        pass
    return isinstance(task, asyncio.Task), task is not None and not task.done(), _VAR.get()


class _nullcontext:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def test_the_first_step_runs_as_a_real_task_in_the_callers_context(runtime: PythonRuntime) -> None:
    _VAR.set("from the caller")
    is_task, running, seen = runtime.run(_what_runs_me)
    assert is_task and running
    assert seen == "from the caller"


async def _same_task_across_a_suspension() -> bool:
    first = asyncio.current_task()
    await asyncio.sleep(0)
    await asyncio.sleep(0.001)
    return asyncio.current_task() is first


def test_a_body_that_suspends_goes_on_in_the_task_it_started_in(runtime: PythonRuntime) -> None:
    # anyio's cancel scopes (httpx, openai) refuse to exit in another task than they entered.
    assert runtime.run(_same_task_across_a_suspension)


def test_a_task_group_entered_in_the_first_step_works(runtime: PythonRuntime) -> None:
    if sys.version_info < (3, 11):
        pytest.skip("asyncio.TaskGroup needs Python 3.11")

    async def body() -> int:
        async with asyncio.TaskGroup() as group:
            children = [group.create_task(asyncio.sleep(0, i)) for i in range(3)]
        return sum(child.result() for child in children)

    assert runtime.run(body) == 3


def test_a_body_that_raises_in_its_first_step_reaches_the_caller(runtime: PythonRuntime) -> None:
    async def boom() -> None:
        raise LookupError("first step")

    with pytest.raises(LookupError, match="first step"):
        runtime.run(boom)
    assert runtime.metrics().failed == 1


def test_a_suspended_body_can_still_be_cancelled_by_its_callers_timeout(runtime: PythonRuntime) -> None:
    from agybridge import OperationTimeoutError

    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(OperationTimeoutError):
        runtime.run(slow, timeout=0.05)
    assert cancelled.wait(5)


def test_commands_from_one_asyncio_host_share_its_wake_ups(runtime: PythonRuntime) -> None:
    """Completions for one host loop arrive in batches: one eventfd wake-up serves many."""
    release = threading.Event()

    async def held(i: int) -> int:
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        return i

    async def host() -> tuple[list[int], int]:
        calls = [asyncio.ensure_future(runtime.arun(held, i)) for i in range(64)]
        while runtime.metrics().in_flight < 64:
            await asyncio.sleep(0.001)
        release.set()
        results = await asyncio.gather(*calls)
        waker = asyncio_backend._WAKERS[asyncio.get_running_loop()]
        return results, waker._queue.wakeups

    results, wakeups = asyncio.run(host())
    assert results == list(range(64))
    assert 1 <= wakeups < 64


def test_a_closed_host_loop_is_not_woken(runtime: PythonRuntime) -> None:
    loop = asyncio.new_event_loop()
    try:
        waker = asyncio_backend._waker_of(loop)
        fut = loop.create_future()
        wake = waker.wake_soon(fut)
    finally:
        loop.close()
    wake(None)  # type: ignore[arg-type]
    assert waker._queue.wakeups == 0 and len(waker._queue) == 0


def test_commands_from_one_trio_run_share_its_wake_ups(runtime: PythonRuntime) -> None:
    release = threading.Event()

    async def held(i: int) -> int:
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        return i

    async def host() -> tuple[list[int], int]:
        results: list[int] = []

        async def one(i: int) -> None:
            results.append(await runtime.arun(held, i))

        async with trio.open_nursery() as nursery:
            for i in range(64):
                nursery.start_soon(one, i)
            while runtime.metrics().in_flight < 64:
                await trio.sleep(0.001)
            release.set()
        batcher = trio_backend._BATCHERS[trio.lowlevel.current_trio_token()]
        return sorted(results), batcher._queue.wakeups

    results, wakeups = trio.run(host)
    assert results == list(range(64))
    assert 1 <= wakeups < 64


def test_the_runtime_loop_starts_tasks_eagerly(runtime: PythonRuntime) -> None:
    """From a plain callback (where the dispatcher starts commands) a task that never
    suspends is done before ``start_task`` returns: it was never scheduled."""
    loop = runtime.loop
    if sys.version_info < (3, 12):
        assert isinstance(loop, asyncio_backend.EagerStartLoop)
    seen: list[tuple[bool, Any]] = []
    done = threading.Event()

    async def probe() -> Any:
        return asyncio.current_task()

    def in_a_callback() -> None:
        task = asyncio_backend.start_task(loop, probe(), contextvars.copy_context())
        seen.append((task.done(), task.result() is task if task.done() else None))
        done.set()

    loop.call_soon_threadsafe(in_a_callback)
    assert done.wait(5)
    assert seen == [(True, True)]  # done at once, and current_task() was the task itself


def test_a_task_started_from_inside_a_task_is_scheduled_not_nested(runtime: PythonRuntime) -> None:
    async def child() -> str:
        return "child"

    async def parent() -> str:
        task = asyncio_backend.start_task(asyncio.get_running_loop(), child(), contextvars.copy_context())
        return await task

    assert runtime.run(parent) == "child"
