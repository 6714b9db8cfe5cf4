"""The dispatcher on a plain asyncio loop, with no runtime thread: drain, run, abort, account."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import pytest

from agybridge import (
    CommandCancelledError,
    OperationTimeoutError,
    PyCommand,
    Run,
    RuntimeDiedError,
    RuntimeShutdownError,
)
from agybridge._loop.dispatcher import Dispatcher

pytestmark = pytest.mark.timeout(20)


async def run_handler(cmd: Run) -> Any:
    return await cmd.fn(*cmd.args, **cmd.kwargs)


def serve(core: ModuleType, body: Callable[[Dispatcher, Any, Callable[..., Run]], Awaitable[None]]) -> None:
    """Run *body(dispatcher, queue, make_run)* on a fresh loop in this very thread."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        holder: list[Dispatcher] = []
        queue = core.CommandQueue(lambda: loop.call_soon(holder[0].on_wake))
        holder.append(Dispatcher(queue, {Run: run_handler}))

        def make_run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Run:
            return Run(fn, args, oneshot=core.Oneshot())

        await body(holder[0], queue, make_run)

    asyncio.run(main())


async def start_long_command(dispatcher: Dispatcher, make_run: Callable[..., Run]) -> Run:
    """Push a command that runs for 30 s and return it once its body is running."""
    running = asyncio.Event()

    async def long() -> None:
        running.set()
        await asyncio.sleep(30)

    cmd = make_run(long)
    dispatcher.submit(cmd)
    await asyncio.wait_for(running.wait(), 5)
    return cmd


async def settle(shot: Any) -> None:
    """Yield to the loop until *shot* is done (bounded by the test timeout)."""
    while not shot.done():
        await asyncio.sleep(0)


def test_commands_run_concurrently_and_every_outcome_is_counted(core: ModuleType) -> None:
    async def body(dispatcher: Dispatcher, queue: Any, make_run: Callable[..., Run]) -> None:
        both_started = asyncio.Event()
        started = 0

        async def wait_for_partner(value: int) -> int:
            nonlocal started
            started += 1
            if started == 2:
                both_started.set()
            await both_started.wait()  # deadlocks unless the two commands run at once
            return value

        async def fail() -> None:
            raise LookupError("boom")

        commands = [make_run(wait_for_partner, 1), make_run(wait_for_partner, 2), make_run(fail)]
        for cmd in commands:
            dispatcher.submit(cmd)
        for cmd in commands:
            await settle(cmd.oneshot)
        assert [commands[0].oneshot.result(0), commands[1].oneshot.result(0)] == [1, 2]
        assert isinstance(commands[2].oneshot.exception(0), LookupError)
        metrics = dispatcher.metrics()
        assert (metrics.submitted, metrics.completed, metrics.failed, metrics.in_flight) == (3, 2, 1, 0)
        assert metrics.wakeups == 1, "three pushes into an idle queue cost one wake-up"

    serve(core, body)


def test_a_command_type_without_handler_fails_with_a_clear_error(core: ModuleType) -> None:
    class Custom(PyCommand):
        __slots__ = ()

    async def body(dispatcher: Dispatcher, queue: Any, make_run: Callable[..., Run]) -> None:
        cmd = Custom(oneshot=core.Oneshot())
        dispatcher.submit(cmd)
        await settle(cmd.oneshot)
        error = cmd.oneshot.exception(0)
        assert isinstance(error, TypeError) and "no handler for Custom()" in str(error)
        assert dispatcher.metrics().failed == 1

    serve(core, body)


def test_abort_cancels_the_running_task_and_counts_it_once(core: ModuleType) -> None:
    async def body(dispatcher: Dispatcher, queue: Any, make_run: Callable[..., Run]) -> None:
        cmd = await start_long_command(dispatcher, make_run)
        assert cmd.oneshot.cancel()  # the caller gives up first, then asks for the abort
        dispatcher.abort(cmd)
        while dispatcher.in_flight():  # only a reaped (cancelled and accounted) task leaves
            await asyncio.sleep(0)
        metrics = dispatcher.metrics()
        assert (metrics.cancelled, metrics.finished, metrics.submitted) == (1, 1, 1)

    serve(core, body)


def test_abort_before_the_task_first_runs_is_accounted(core: ModuleType) -> None:
    """An abort landing between task creation and its first step still ends the command.

    Found by the long stress run: a task cancelled before its first step never runs its
    coroutine, so the command was neither cleaned up nor counted.
    """

    async def body(dispatcher: Dispatcher, queue: Any, make_run: Callable[..., Run]) -> None:
        cmd = make_run(asyncio.sleep, 30)
        dispatcher.submit(cmd)
        dispatcher.on_wake()  # the dispatcher creates the task (started eagerly only on 3.12+)
        assert cmd.oneshot.cancel()  # the caller gives up...
        dispatcher.abort(cmd)  # ...and its abort lands before the task's first step
        for _ in range(5):
            await asyncio.sleep(0)
        metrics = dispatcher.metrics()
        assert metrics.in_flight == 0, metrics
        assert metrics.submitted == metrics.finished == metrics.cancelled == 1, metrics

    serve(core, body)


def test_a_command_completed_while_queued_is_counted_and_never_run(core: ModuleType) -> None:
    async def body(dispatcher: Dispatcher, queue: Any, make_run: Callable[..., Run]) -> None:
        ran: list[str] = []

        async def record() -> None:
            ran.append("ran")

        cmd = make_run(record)
        dispatcher.submit(cmd)
        assert cmd.oneshot.set_exception(OperationTimeoutError("timed out in the queue"))
        while dispatcher.metrics().queued:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert ran == []
        assert dispatcher.metrics().timed_out == 1

    serve(core, body)


def test_stop_all_lets_work_finish_within_grace_then_fails_the_rest(core: ModuleType) -> None:
    async def body(dispatcher: Dispatcher, queue: Any, make_run: Callable[..., Run]) -> None:
        async def quick() -> str:
            await asyncio.sleep(0.01)
            return "done"

        quick_cmd, slow_cmd = make_run(quick), make_run(asyncio.sleep, 30)
        dispatcher.submit(quick_cmd)
        dispatcher.submit(slow_cmd)
        while dispatcher.metrics().queued:
            await asyncio.sleep(0)
        await dispatcher.stop_all(grace=0.2)
        assert quick_cmd.oneshot.result(0) == "done"
        error = slow_cmd.oneshot.exception(0)
        assert isinstance(error, RuntimeShutdownError) and "0.2 s grace" in str(error)
        metrics = dispatcher.metrics()
        assert (metrics.completed, metrics.shut_down, metrics.in_flight) == (1, 1, 0)

    serve(core, body)


def test_leftovers_fail_with_shutdown_and_death_fails_everything(core: ModuleType) -> None:
    async def body(dispatcher: Dispatcher, queue: Any, make_run: Callable[..., Run]) -> None:
        active = await start_long_command(dispatcher, make_run)
        queued_then_closed = [make_run(asyncio.sleep, 0), make_run(asyncio.sleep, 0)]
        late = make_run(asyncio.sleep, 0)
        for cmd in [*queued_then_closed, late]:
            dispatcher.submit(cmd)
        leftovers = queue.close()
        assert leftovers == [*queued_then_closed, late]
        cause = RuntimeError("loop exploded")
        dispatcher.fail_for_death(leftovers[:2], cause, "RuntimeError('loop exploded')")
        for cmd in [active, *queued_then_closed]:
            error = cmd.oneshot.exception(0)
            assert isinstance(error, RuntimeDiedError) and error.__cause__ is cause
            assert "loop exploded" in str(error)
        dispatcher.reap_all()  # the closing loop reaps the active one
        dispatcher.fail_queued([late])
        assert isinstance(late.oneshot.exception(0), RuntimeShutdownError)
        metrics = dispatcher.metrics()
        assert metrics.submitted == metrics.finished == 4, metrics
        assert metrics.in_flight == 0

    serve(core, body)


def test_a_cancelled_oneshot_reads_as_cancelled(core: ModuleType) -> None:
    async def body(dispatcher: Dispatcher, queue: Any, make_run: Callable[..., Run]) -> None:
        async def cancel_myself() -> None:
            raise asyncio.CancelledError

        cmd = make_run(cancel_myself)
        dispatcher.submit(cmd)
        await settle(cmd.oneshot)
        with pytest.raises(CommandCancelledError):
            cmd.oneshot.result(0)
        assert dispatcher.metrics().cancelled == 1

    serve(core, body)


def test_submit_is_bounded_and_drained_commands_still_count(core: ModuleType) -> None:
    async def body(dispatcher: Dispatcher, queue: Any, make_run: Callable[..., Run]) -> None:
        gate = asyncio.Event()

        async def held() -> None:
            await gate.wait()

        first, second, third = make_run(held), make_run(held), make_run(held)
        assert dispatcher.submit(first, 2) == -1 and dispatcher.submit(second, 2) == -1
        assert dispatcher.submit(third, 2) == 2, "refused: the count in flight"
        assert not third.oneshot.done(), "a refusal touches nothing"
        # Drained but not yet started, then running: they keep counting against the bound.
        for _ in range(3):
            await asyncio.sleep(0)
            assert dispatcher.in_flight() == 2 and dispatcher.submit(third, 2) == 2
        gate.set()
        await settle(first.oneshot)
        await settle(second.oneshot)
        metrics = dispatcher.metrics()
        assert (metrics.submitted, metrics.completed, metrics.in_flight) == (2, 2, 0), metrics
        assert dispatcher.submit(third, 2) == -1
        await settle(third.oneshot)

    serve(core, body)
