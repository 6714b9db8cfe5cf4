"""The hot path's promises (issue 23): eventfd wake-ups, hand-run bodies, batched completions.

A command whose body never suspends completes inside the dispatcher's reader callback and
never becomes a Task of its own, yet it runs inside a real Task from its first step on (the
runtime's carrier, which goes on as the body's own task if it suspends); completions bound for
one asyncio host loop or one trio run share one wake-up per batch.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from typing import Any

import pytest
import trio

from agybridge import CommandCancelledError, PythonRuntime
from agybridge._backends import _asyncio as asyncio_backend
from agybridge._backends import _trio as trio_backend

pytestmark = pytest.mark.timeout(60)

_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("hot_path_var", default="unset")


@pytest.fixture
def runtime(stock_runtime: PythonRuntime) -> PythonRuntime:
    return stock_runtime  # the carrier is in use on every CPython there


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


async def _my_task_name() -> str:
    # Names are Task-1, Task-2, ... by creation, so a name tells a task apart without keeping
    # any reference to it (a kept one retires the carrier).
    task = asyncio.current_task()
    assert task is not None
    return task.get_name()


def test_bodies_that_never_suspend_make_no_task_of_their_own(runtime: PythonRuntime) -> None:
    # Both ran inside the one carrier: no Task was made (or retired) for either.
    assert runtime.run(_my_task_name) == runtime.run(_my_task_name)


def test_a_body_that_suspends_takes_the_carrier_and_the_next_body_gets_a_new_one(runtime: PythonRuntime) -> None:
    async def suspends() -> tuple[str, bool]:
        first = asyncio.current_task()
        assert first is not None
        await asyncio.sleep(0.001)
        return first.get_name(), asyncio.current_task() is first

    before = runtime.run(_my_task_name)
    adopted, same = runtime.run(suspends)
    assert same and adopted == before  # it started in the carrier and went on in it
    assert runtime.run(_my_task_name) != adopted


def test_a_body_that_keeps_its_task_gets_one_that_ends_as_its_own_would(runtime: PythonRuntime) -> None:
    async def keep() -> asyncio.Task[Any]:
        task = asyncio.current_task()
        assert task is not None
        return task

    kept = runtime.run(keep)
    assert runtime.run(_my_task_name) != kept.get_name()  # the next body runs in another carrier

    async def ended() -> bool:
        await asyncio.wait([kept], timeout=5)
        return kept.done() and not kept.cancel()

    assert runtime.run(ended)  # done, and cancelling it touches no other command


def test_a_done_callback_on_the_task_of_a_body_that_never_suspended_fires(runtime: PythonRuntime) -> None:
    fired = threading.Event()

    async def watch() -> str:
        task = asyncio.current_task()
        assert task is not None
        task.add_done_callback(lambda _task: fired.set())
        return "answered"

    assert runtime.run(watch) == "answered"
    assert fired.wait(5)


def test_a_body_that_cancels_its_own_task_in_its_first_step_is_cancelled_at_its_first_await(
    runtime: PythonRuntime,
) -> None:
    reached: list[str] = []

    async def cancel_myself() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        reached.append("first step")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            reached.append("cancelled at the await")
            raise

    with pytest.raises(CommandCancelledError):
        runtime.run(cancel_myself)
    assert reached == ["first step", "cancelled at the await"]
    assert runtime.run(_what_runs_me)[:2] == (True, True)  # the runtime goes on
    assert runtime.metrics().cancelled == 1


def test_scopes_entered_in_the_first_step_exit_after_a_suspension(runtime: PythonRuntime) -> None:
    anyio = pytest.importorskip("anyio")

    async def body() -> str:
        with anyio.CancelScope():  # anyio refuses an exit in another task than the entry
            await asyncio.sleep(0.001)
        with anyio.fail_after(5):
            await anyio.sleep(0.001)
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(5):
                await asyncio.sleep(0.001)
        return "exited"

    assert runtime.run(body) == "exited"


def test_a_timeout_entered_in_the_first_step_cancels_the_body_after_it_suspended(runtime: PythonRuntime) -> None:
    if sys.version_info < (3, 11):
        pytest.skip("asyncio.timeout needs Python 3.11")

    async def body() -> str:
        try:
            async with asyncio.timeout(0):  # expires before the carrier even took the body over
                await asyncio.sleep(30)
        except TimeoutError:
            return "timed out in its own task"
        return "not timed out"

    assert runtime.run(body) == "timed out in its own task"


def test_a_variable_set_in_the_first_step_is_seen_after_a_suspension(runtime: PythonRuntime) -> None:
    _VAR.set("the caller's")

    async def body() -> tuple[str, str]:
        seen = _VAR.get()
        _VAR.set("set in the first step")
        await asyncio.sleep(0.001)
        return seen, _VAR.get()

    assert runtime.run(body) == ("the caller's", "set in the first step")
    assert _VAR.get() == "the caller's"  # the command ran in a copy of the caller's context


def test_many_suspending_bodies_each_go_on_in_a_task_of_their_own(runtime: PythonRuntime) -> None:
    tasks: list[asyncio.Task[Any]] = []
    gate: list[asyncio.Event] = []

    async def one(i: int) -> int:
        first = asyncio.current_task()
        assert first is not None
        if not gate:
            gate.append(asyncio.Event())
        tasks.append(first)
        if len(tasks) == 50:
            gate[0].set()  # every body has started: all of them are suspended or here
        await gate[0].wait()
        assert asyncio.current_task() is first
        return i

    futures = [runtime.submit(one, i) for i in range(50)]
    assert [future.result(10) for future in futures] == list(range(50))
    assert len({id(task) for task in tasks}) == 50  # alive at once, so distinct ids: distinct tasks


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
