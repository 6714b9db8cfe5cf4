"""Adversarial tests of the hand-run bodies and their carrier Task (agybridge/_backends/_carrier.py).

Each test compares what a body sees with what it would see as its own ``asyncio.create_task``
on a plain loop (and with d244e62, where every command was its own Task). Each finding of the
attack that could be mended is a test of the mended behaviour; tests named ``..._pinned`` pin
a difference the carrier's docstring and the guarantees page document.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc
import weakref
from types import ModuleType
from typing import Any

import pytest

from agybridge import (
    CommandCancelledError,
    OperationTimeoutError,
    PythonRuntime,
    RuntimeConfig,
    RuntimeShutdownError,
)

pytestmark = pytest.mark.timeout(60)

_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("carrier_attack_var", default="unset")


@pytest.fixture
def runtime(stock_runtime: PythonRuntime) -> PythonRuntime:
    return stock_runtime  # the carrier is in use on every CPython there


async def _nothing() -> None:
    return None


def _in_plain_asyncio(fn: Any, *args: Any) -> Any:
    """What *fn* returns as its own Task on a plain loop (the reference behaviour)."""

    async def main() -> Any:
        return await asyncio.get_running_loop().create_task(fn(*args))

    return asyncio.run(main())


def _on_loop(runtime: PythonRuntime, fn: Any) -> Any:
    """Call *fn* in a plain callback on the runtime loop (no task current) and return its result."""
    out: list[Any] = []
    done = threading.Event()

    def callback() -> None:
        try:
            out.append(fn())
        finally:
            done.set()

    runtime.loop.call_soon_threadsafe(callback)
    assert done.wait(5)
    return out[0]


# -- 1. what one body leaves on "its" task is seen by the next one ---------------------------


def test_a_weak_registry_of_a_finished_bodys_task_cannot_cancel_a_later_command(runtime: PythonRuntime) -> None:
    """A body that never suspends records its task weakly (a WeakSet registry of "my tasks",
    a WeakKeyDictionary of per-task state: no strong reference, so the refcount check does not
    retire the carrier). A later, unrelated command then runs in that same Task, and "cancel
    every registered task" cancels *it*. As its own Task (plain asyncio, d244e62) the finished
    body's task is done (or gone): cancelling it is a no-op."""
    registry: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    async def register() -> None:
        task = asyncio.current_task()
        assert task is not None
        registry.add(task)

    runtime.run(register)

    started = threading.Event()
    gate: list[asyncio.Event] = []

    async def victim() -> str:
        gate.append(asyncio.Event())
        started.set()
        try:
            await gate[0].wait()
        except asyncio.CancelledError:
            return "cancelled by another command's clean-up"
        return "finished"

    future = runtime.submit(victim)
    assert started.wait(5)

    async def cancel_registered() -> int:
        cancelled = sum(task.cancel() for task in list(registry))
        gate[0].set()
        return cancelled

    runtime.run(cancel_registered)
    assert future.result(5) == "finished"


def test_a_task_name_set_by_a_finished_body_is_not_seen_by_the_next(runtime: PythonRuntime) -> None:
    """``set_name()`` is no reference, no cancel and no done callback, so the carrier is kept:
    the next body sees the previous body's name on "its own" task (logging that shows task
    names then blames the wrong command). Plain asyncio / d244e62: a fresh ``Task-N``."""

    async def name_it() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.set_name("named by a body that already finished")

    async def my_name() -> str:
        task = asyncio.current_task()
        assert task is not None
        return task.get_name()

    runtime.run(name_it)
    assert runtime.run(my_name) != "named by a body that already finished"


def test_an_attribute_set_on_its_task_by_a_finished_body_stays_for_later_bodies_pinned(
    runtime: PythonRuntime,
) -> None:
    """Tasks take arbitrary attributes, yet a C Task exposes no ``__dict__`` to check, so the
    carrier cannot tell that a body tagged it: a later body that runs by hand in the same
    carrier sees the tag (documented). A body that suspends gets a task of its own."""

    async def tag_it() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.request_id = "first command"  # type: ignore[attr-defined]

    async def my_tag() -> object:
        task = asyncio.current_task()
        assert task is not None
        return getattr(task, "request_id", None)

    runtime.run(tag_it)
    assert runtime.run(my_tag) == "first command"


# -- 2. the idle carrier is a pending task in asyncio.all_tasks() ----------------------------


def test_an_idle_runtime_loop_has_no_pending_task(runtime: PythonRuntime) -> None:
    """After a command that never suspended, ``asyncio.all_tasks(runtime.loop)`` holds the
    parked carrier, pending forever. d244e62 and plain asyncio: no task at all. Code that
    inspects the loop (monitoring, "tasks still running at exit" reports, aiomonitor) sees a
    phantom task; the docstring does not say so."""
    runtime.run(_nothing)
    pending = _on_loop(runtime, lambda: [t for t in asyncio.all_tasks(runtime.loop) if not t.done()])
    if sys.version_info < (3, 14):
        assert pending == []
    else:  # 3.14+ lists native tasks where unregistering has no effect (documented)
        assert [t.get_coro().__qualname__ for t in pending] == ["_carry"]


def test_a_body_waiting_for_every_other_task_does_not_wait_for_the_idle_carrier(runtime: PythonRuntime) -> None:
    """A common "wait for the other tasks" idiom in a body (drain background work before
    returning) would wait for the parked carrier too, which only ends when some later command
    suspends in it. Before 3.14 the idle carrier is not listed, so the idiom finds no other
    task; 3.14+ lists it (documented), and the idiom waits its own bound (2 s) for it."""
    gate: list[asyncio.Event] = []
    started = threading.Event()

    async def drain_others() -> int:
        gate.append(asyncio.Event())
        started.set()
        await gate[0].wait()  # adopted: its carrier is now its own task
        me = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not me]
        if not others:
            return 0
        _done, pending = await asyncio.wait(others, timeout=2)
        return len(pending)

    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(runtime.run(drain_others)))
    waiter.start()
    assert started.wait(5)
    runtime.run(_nothing)  # never suspends: leaves a fresh carrier parked

    async def release() -> None:
        gate[0].set()

    runtime.run(release)
    waiter.join(10)
    # 3.14+ lists the idle carrier (documented): the body then waits its 2 s bound for it.
    assert result == [1 if sys.version_info >= (3, 14) else 0]


# -- 3. Task.get_context() (3.12+) is the carrier's empty context, not the body's -----------


@pytest.mark.parametrize("suspends", [False, True], ids=["by-hand", "adopted"])
def test_the_current_tasks_context_is_the_carriers_own_pinned(runtime: PythonRuntime, suspends: bool) -> None:
    """``asyncio.current_task().get_context()`` is the context the task's steps run in: a copy
    of the caller's for ``create_task``, the command's own in d244e62. The carrier was made
    with an empty ``contextvars.Context()`` before the command existed, so a body (or a
    library: ``task.get_context().run(...)`` to schedule work "in the task's context") sees
    none of the caller's variables there, though ``_VAR.get()`` in the body sees them."""
    _VAR.set("the caller's")

    async def body() -> tuple[str, str]:
        if suspends:
            await asyncio.sleep(0)
        task = asyncio.current_task()
        assert task is not None
        if not hasattr(task, "get_context"):  # before 3.12 a Task does not tell its context
            return _VAR.get(), "no get_context"
        return _VAR.get(), task.get_context().get(_VAR, "missing")

    told = sys.version_info >= (3, 12)
    assert _in_plain_asyncio(body) == ("the caller's", "the caller's" if told else "no get_context")
    # The body runs in the command's context all the same; the carrier's own is empty.
    assert runtime.run(body) == ("the caller's", "missing" if told else "no get_context")


# -- 4. cancel() then uncancel() in the first step (3.13 semantics) --------------------------


def test_a_cancel_taken_back_with_uncancel_in_the_first_step_ends_as_in_a_task_of_its_own(
    runtime: PythonRuntime,
) -> None:
    """``cancel()`` then ``uncancel()`` in one step: from 3.13 on, ``uncancel()`` that brings the
    count to zero also drops the pending cancel, so the task runs on; on 3.11 and 3.12 the
    cancel stays pending and the task is cancelled at its next await. A hand-run body in the
    carrier ends as it would in a task of its own, on each version."""
    if sys.version_info < (3, 11):
        pytest.skip("Task.uncancel() is new in 3.11")

    async def body() -> str:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        task.uncancel()  # type: ignore[attr-defined,unused-ignore]
        try:
            await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            return "cancelled anyway"
        return "ran on"

    expected = "ran on" if sys.version_info >= (3, 13) else "cancelled anyway"
    assert _in_plain_asyncio(body) == expected
    assert runtime.run(body) == expected


# -- 5. the carrier's coroutine can be closed by a body, breaking the next command -----------


def test_a_body_closing_its_tasks_coroutine_does_not_break_the_next_command(runtime: PythonRuntime) -> None:
    """``asyncio.current_task().get_coro()`` of a hand-run body is the carrier's ``_carry``
    coroutine, which is *suspended*, not running: ``close()`` succeeds (a real task's running
    coroutine refuses with "coroutine already executing"). The closed carrier is kept (no
    reference was kept), so the next command that suspends is handed to a dead Task, is
    never resumed, and fails with a GeneratorExit when the garbage collector closes it."""

    async def close_my_coroutine() -> str:
        task = asyncio.current_task()
        assert task is not None
        try:
            task.get_coro().close()
        except ValueError:
            return "refused"
        return "closed"

    assert _in_plain_asyncio(close_my_coroutine) == "refused"
    runtime.run(close_my_coroutine)

    async def innocent() -> str:
        await asyncio.sleep(0)
        return "fine"

    assert runtime.run(innocent, timeout=10) == "fine"


# -- 6. documented differences, pinned -------------------------------------------------------


def test_an_adopted_body_resumes_one_loop_iteration_later_pinned(runtime: PythonRuntime) -> None:
    """Documented ("the carrier wakes one loop iteration later"): a body whose first await is
    ready at once (``sleep(0)``) resumes an iteration later than its own Task would, so its
    order against loop callbacks differs from plain asyncio. Passes (pins the difference)."""

    async def body() -> list[str]:
        loop = asyncio.get_running_loop()
        order: list[str] = []
        loop.call_soon(lambda: loop.call_soon(order.append, "callback two iterations on"))
        await asyncio.sleep(0)
        order.append("resumed")
        return list(order)

    assert _in_plain_asyncio(body) == ["resumed"]
    assert runtime.run(body) == ["callback two iterations on", "resumed"]


# -- 7. promises that hold under attack (passing) --------------------------------------------


def test_a_cancel_that_lands_before_the_carrier_adopts_the_body_runs_its_handler(runtime: PythonRuntime) -> None:
    """future.cancel() arrives while the body's hand-run step still blocks the loop: the abort
    is queued before the carrier's wake-up, so the carrier is cancelled before it adopted the
    body (``cancelled_early``). The body must see CancelledError at its first await, its
    finally must run, and the metrics must add up. Passes."""
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()
    seen: list[str] = []

    async def body() -> str:
        entered.set()
        release.wait(5)  # the caller's cancel lands while this first step holds the loop
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            seen.append("cancelled at its first await")
            raise
        finally:
            finished.set()
        return "not cancelled"

    future = runtime.submit(body)
    assert entered.wait(5)
    assert future.cancel()
    release.set()
    assert finished.wait(5)
    assert seen == ["cancelled at its first await"]
    runtime.run(_nothing)
    metrics = runtime.metrics()
    assert metrics.cancelled == 1 and metrics.in_flight == 0
    assert metrics.submitted == metrics.finished


class _DuckFuture:
    """A future-like awaitable: asyncio's Task takes any object with ``_asyncio_future_blocking``
    (it never checks isinstance(Future)) and cancels it through its own ``cancel()``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._callbacks: list[Any] = []
        self._asyncio_future_blocking = False
        self._done = False
        self.cancel_calls = 0

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def add_done_callback(self, callback: Any, *, context: Any = None) -> None:
        self._callbacks.append(callback)

    def remove_done_callback(self, callback: Any) -> int:
        self._callbacks.remove(callback)
        return 1

    def done(self) -> bool:
        return self._done

    def cancel(self, msg: Any = None) -> bool:
        self.cancel_calls += 1
        self._done = True
        for callback in self._callbacks:
            self._loop.call_soon(callback, self)
        return True

    def result(self) -> Any:
        raise asyncio.CancelledError()

    def __await__(self) -> Any:
        self._asyncio_future_blocking = True
        yield self
        return self.result()


def test_a_cancel_before_adoption_cancels_a_future_like_object_the_body_waits_on(runtime: PythonRuntime) -> None:
    """A cancel that lands between the hand-run step and the adoption reaches what the body
    waits on as a Task's would: a future-like object (anything with
    ``_asyncio_future_blocking``, which a Task accepts) gets its ``cancel()`` called once the
    Task's wake-up is attached to it, and the body sees the cancellation through it."""
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()
    ducks: list[_DuckFuture] = []

    async def body() -> None:
        duck = _DuckFuture(asyncio.get_running_loop())
        ducks.append(duck)
        entered.set()
        release.wait(5)  # the caller's cancel lands while this first step holds the loop
        try:
            await duck
        finally:
            finished.set()

    future = runtime.submit(body)
    assert entered.wait(5)
    assert future.cancel()
    release.set()
    assert finished.wait(5)
    assert ducks[0].cancel_calls == 1


def test_a_caller_timeout_during_a_blocking_first_step_cancels_the_body(runtime: PythonRuntime) -> None:
    """The same race through ``run(timeout=...)``: OperationTimeoutError for the caller, the
    body's ``except CancelledError`` runs, timed_out counted once. Passes."""
    timed_out, finished = threading.Event(), threading.Event()
    seen: list[str] = []

    async def body() -> None:
        timed_out.wait(5)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            finished.set()

    errors: list[BaseException] = []

    def caller() -> None:
        try:
            runtime.run(body, timeout=0.05)
        except BaseException as exc:
            errors.append(exc)
        finally:
            timed_out.set()

    thread = threading.Thread(target=caller)
    thread.start()
    thread.join(10)
    assert finished.wait(5)
    assert len(errors) == 1 and isinstance(errors[0], OperationTimeoutError)
    assert seen == ["cancelled"]
    runtime.run(_nothing)
    metrics = runtime.metrics()
    assert metrics.timed_out == 1 and metrics.submitted == metrics.finished


class _BadYield:
    def __await__(self) -> Any:
        try:
            yield 42
        except RuntimeError as exc:
            return str(exc)
        return "no error"


async def _bad_yield() -> str:
    return await _BadYield()


async def _await_a_done_future() -> str:
    fut = asyncio.get_running_loop().create_future()
    fut.set_result("done already")
    return await fut


async def _await_own_task() -> str:
    try:
        await asyncio.current_task()  # type: ignore[misc]
    except RuntimeError as exc:
        return str(exc).split(" <")[0]
    return "no error"


async def _bare_yields() -> int:
    total = 0
    for _ in range(3):
        await asyncio.sleep(0)
        total += 1
    return total


async def _shield_and_wait_for() -> str:
    shielded = await asyncio.shield(asyncio.sleep(0, "shielded"))
    try:
        await asyncio.wait_for(asyncio.sleep(30), 0.01)
    except asyncio.TimeoutError:
        return shielded + ", wait_for timed out"
    return "wait_for did not time out"


async def _same_task_and_context() -> tuple[bool, str]:
    first = asyncio.current_task()
    _VAR.set("step 1")
    await asyncio.sleep(0)
    second = _VAR.get()
    _VAR.set("step 2")
    await asyncio.sleep(0.001)
    return asyncio.current_task() is first, second + "/" + _VAR.get()


@pytest.mark.parametrize(
    "body",
    [_bad_yield, _await_a_done_future, _await_own_task, _bare_yields, _shield_and_wait_for, _same_task_and_context],
)
def test_bodies_see_what_their_own_task_would_see(runtime: PythonRuntime, body: Any) -> None:
    """Bad yields, done futures, awaiting one's own task, bare yields, shield/wait_for, and
    contextvars/current_task across steps: the same outcome as a plain Task. Passes."""
    _VAR.set("caller")
    assert runtime.run(body) == _in_plain_asyncio(body)
    assert _VAR.get() == "caller"


def test_anyio_scopes_and_groups_entered_in_the_first_step(runtime: PythonRuntime) -> None:
    """anyio's cancel scope that is cancelled and left without awaiting (its delivery retry is
    scheduled on the loop), fail_after, move_on_after(0) and a task group, each followed by a
    command that suspends in the same carrier. Passes."""
    anyio = pytest.importorskip("anyio")

    async def cancelled_scope_no_await() -> bool:
        with anyio.CancelScope() as scope:
            scope.cancel()
        return scope.cancel_called

    async def fail_after_in_group() -> str:
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.sleep, 0.001)
            try:
                with anyio.fail_after(0.01):
                    await anyio.sleep(30)
            except TimeoutError:
                return "timed out"
        return "not timed out"

    async def move_on_now() -> bool:
        with anyio.move_on_after(0) as scope:
            await anyio.sleep(30)
        return scope.cancelled_caught

    async def suspends() -> str:
        await asyncio.sleep(0.001)
        return "resumed"

    assert runtime.run(cancelled_scope_no_await) is True
    assert runtime.run(suspends) == "resumed"
    assert runtime.run(fail_after_in_group) == "timed out"
    assert runtime.run(suspends) == "resumed"
    assert runtime.run(move_on_now) is True
    assert runtime.run(suspends) == "resumed"


def test_commands_started_from_inside_bodies_and_worker_threads(runtime: PythonRuntime) -> None:
    """``await runtime.arun`` from a hand-run body's first step and after a suspension, and a
    blocking ``runtime.run`` from a worker thread of a body: each inner command gets a task
    other than the outer's, and the outer goes on in its own. Passes."""

    async def inner() -> asyncio.Task[Any] | None:
        await asyncio.sleep(0)
        return asyncio.current_task()

    async def outer() -> tuple[bool, bool, bool, bool]:
        me = asyncio.current_task()
        first = await runtime.arun(inner)
        second = await runtime.arun(inner)
        third = await asyncio.get_running_loop().run_in_executor(None, runtime.run, inner)
        return first is not me, second is not me, third is not me, asyncio.current_task() is me

    assert runtime.run(outer) == (True, True, True, True)


def test_many_threads_many_commands_complete_once_and_add_up(runtime: PythonRuntime) -> None:
    """8 threads x 300 commands, mixing bodies that finish by hand, suspend, keep their task,
    cancel their own task and raise. Every command gets its outcome; metrics add up. Passes."""

    async def by_hand(i: int) -> int:
        return i

    async def suspends(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async def keeps(i: int) -> int:
        KEPT.append(asyncio.current_task())
        return i

    async def cancels_itself(i: int) -> int:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)
        return i

    async def raises(i: int) -> int:
        raise LookupError(i)

    bodies = [by_hand, suspends, keeps, cancels_itself, raises]
    KEPT: list[Any] = []
    failures: list[str] = []

    def worker(t: int) -> None:
        for n in range(300):
            i = t * 1000 + n
            body = bodies[i % len(bodies)]
            try:
                got = runtime.run(body, i, timeout=20)
            except LookupError as exc:
                ok = body is raises and exc.args == (i,)
            except CommandCancelledError:
                ok = body is cancels_itself
            else:
                ok = got == i and body not in (raises, cancels_itself)
            if not ok:
                failures.append(f"{body.__name__}({i})")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(50)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    metrics = runtime.metrics()
    assert metrics.submitted == 2400 == metrics.finished
    assert metrics.failed == 480 and metrics.cancelled == 480 and metrics.completed == 1440
    KEPT.clear()


def test_shutdown_mid_run_completes_every_command(core: ModuleType) -> None:
    """Adopted bodies parked forever, bodies parked in their first step's future, and commands
    queued behind: shutdown(grace) completes every one, runs every finally, and counts each
    once. Passes."""
    rt = PythonRuntime(RuntimeConfig(inter_agent_delay=0, use_uvloop=False), core=core)
    rt.start()
    started = threading.Semaphore(0)
    finals: list[int] = []

    async def parked(i: int) -> None:
        if i % 2:
            await asyncio.sleep(0)  # adopted, then parked again
        started.release()
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            finals.append(i)

    futures = [rt.submit(parked, i) for i in range(20)]
    for _ in range(20):
        assert started.acquire(timeout=5)
    rt.shutdown(grace=0.1)
    for future in futures:
        with pytest.raises(RuntimeShutdownError):
            future.result(5)
    assert sorted(finals) == list(range(20))
    metrics = rt.metrics()
    assert metrics.shut_down == 20 and metrics.submitted == metrics.finished


def test_trio_and_asyncio_callers_cancelled_while_the_body_is_adopted(runtime: PythonRuntime) -> None:
    """A trio caller's cancel scope and an asyncio caller's task.cancel() reach a body that
    was adopted by the carrier; the body's except CancelledError runs. Passes."""
    trio = pytest.importorskip("trio")
    seen: list[str] = []
    started = threading.Event()

    async def body(who: str) -> None:
        await asyncio.sleep(0)  # adopted
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append(who)
            raise

    async def trio_caller() -> None:
        with trio.move_on_after(0.05):
            await runtime.arun(body, "trio")

    trio.run(trio_caller)

    async def asyncio_caller() -> None:
        task = asyncio.get_running_loop().create_task(runtime.arun(body, "asyncio"))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started.clear()
    asyncio.run(asyncio_caller())
    for _ in range(100):  # each round trip lets the loop run the aborts' clean-up (bounded)
        if len(seen) == 2:
            break
        runtime.run(_nothing)
    assert sorted(seen) == ["asyncio", "trio"]
    metrics = runtime.metrics()
    assert metrics.submitted == metrics.finished


def test_memory_stays_flat_over_many_round_trips(runtime: PythonRuntime) -> None:
    """4000 round trips of bodies that finish by hand, suspend, keep their task and raise:
    the objects they were given are freed, and traced memory does not grow. Passes."""

    class Arg:
        pass

    async def by_hand(arg: Arg) -> None:
        return None

    async def suspends(arg: Arg) -> None:
        await asyncio.sleep(0)

    async def keeps(arg: Arg) -> asyncio.Task[Any] | None:
        return asyncio.current_task()

    async def raises(arg: Arg) -> None:
        raise ValueError("x")

    bodies = [by_hand, suspends, keeps, raises]

    def rounds(n: int) -> None:
        for i in range(n):
            try:
                runtime.run(bodies[i % 4], Arg())
            except ValueError:
                pass

    for body in bodies:
        arg = Arg()
        ref = weakref.ref(arg)
        try:
            runtime.run(body, arg)
        except ValueError:
            pass
        del arg
        runtime.run(_nothing)
        gc.collect()
        assert ref() is None, body.__name__

    rounds(500)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        rounds(4000)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 64 * 1024


_CLOSE_SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, logging, warnings
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("always")
    from agybridge import PythonRuntime, RuntimeConfig

    async def by_hand(): return 1
    async def suspends(): await asyncio.sleep(0); return 2
    async def keeps(): return asyncio.current_task()
    async def stop_loop(): asyncio.get_running_loop().stop()

    for how in ("shutdown", "died", "left to atexit"):
        rt = PythonRuntime(RuntimeConfig(inter_agent_delay=0, use_uvloop=False))
        rt.start()
        rt.run(by_hand); rt.run(suspends); rt.run(keeps); rt.run(by_hand)
        if how == "shutdown":
            rt.shutdown(grace=1)
        elif how == "died":
            rt.run(stop_loop)
            for _ in range(500):  # until the dead loop refuses commands (bounded)
                try:
                    rt.run(by_hand, timeout=1)
                except Exception:
                    break
    gc.collect()
    print("END")
    """
)


@pytest.mark.parametrize("core_name", ["cython", "python"])
def test_no_pending_task_warning_when_a_loop_closes_with_an_idle_carrier(core_name: str) -> None:
    """Under ``python -X dev``: a runtime shut down, one whose loop died and one left to the
    atexit hook, each with a parked carrier: no "Task was destroyed but it is pending", no
    "never retrieved", no "was never awaited". Passes."""
    # The installed package, from outside the source tree (which has no compiled core and
    # would shadow it).
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("AGYBRIDGE_NO_EXTENSIONS", None)
    if core_name == "python":
        env["AGYBRIDGE_NO_EXTENSIONS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-c", _CLOSE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
        cwd="/",
    )
    output = proc.stdout + proc.stderr
    assert "END" in proc.stdout, output
    for bad in ("destroyed but it is pending", "never retrieved", "was never awaited", "Traceback"):
        assert bad not in output, output


def test_a_forked_child_runs_hand_run_and_adopted_bodies(runtime: PythonRuntime) -> None:
    """A runtime started in the parent, with a parked carrier, used in a forked child: bodies
    that finish by hand, suspend and time out all complete there. Passes."""
    if not hasattr(os, "fork"):
        pytest.skip("no os.fork")
    from test_fork import in_child

    async def suspends() -> str:
        await asyncio.sleep(0)
        return "adopted"

    async def hangs() -> None:
        await asyncio.sleep(30)

    async def my_task() -> bool:
        return isinstance(asyncio.current_task(), asyncio.Task)

    runtime.run(_nothing)  # the parent's carrier is parked
    assert runtime.run(suspends) == "adopted"

    def child() -> tuple[Any, ...]:
        try:
            runtime.run(hangs, timeout=0.05)
        except OperationTimeoutError:
            timed_out = True
        else:
            timed_out = False
        return runtime.run(my_task), runtime.run(suspends), timed_out, runtime.run(my_task)

    assert in_child(child) == repr((True, "adopted", True, True))
    assert runtime.run(suspends) == "adopted"  # the parent goes on
