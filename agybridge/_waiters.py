"""Awaiting a :class:`~agybridge.Oneshot` from asyncio or trio without parking a thread.

One waiter kind per caller kind: an asyncio waiter is woken through its own loop's
``call_soon_threadsafe``, a trio waiter through ``TrioToken.run_sync_soon``; the oneshot's
done callback does the waking, from whichever thread completed it.

The exactly-once rule for a caller that gives up (cancellation or timeout): the caller
tries to complete the oneshot itself (``cancel()`` or ``set_exception(timeout)``). If that
wins, the outcome of the command *is* that cancellation or timeout and ``abort()`` tells
the runtime to stop the remote work. If it loses, a result was already delivered: a trio
caller receives it (trio then delivers the cancellation at its next checkpoint); an asyncio
caller still propagates its own ``CancelledError`` (swallowing a task's cancellation breaks
``TaskGroup`` and ``timeout()``), and the command's recorded outcome stays the result.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, Literal

from agybridge._select import Oneshot

AsyncLibrary = Literal["asyncio", "trio"]


def current_async_library() -> AsyncLibrary:
    """Name the async library running the current task; RuntimeError outside both."""
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return "trio"
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "this coroutine must be awaited from asyncio or trio; from plain threads use the "
            "blocking API (send_command, chat, run)"
        ) from None
    return "asyncio"


async def await_oneshot(
    shot: Oneshot,
    timeout: float | None,
    on_timeout: Callable[[], BaseException],
    abort: Callable[[], object],
    spin: float = 0.0,
) -> Any:
    """Wait for *shot* under asyncio or trio and return its result (or raise its error).

    *timeout* (seconds, None for none) completes the oneshot with ``on_timeout()`` if it is
    still pending then; *abort* is called whenever this waiter's cancellation or timeout
    is what completed the oneshot, to stop the remote work.

    *spin* > 0: if the caller's loop has nothing else ready to run, first poll for up to
    *spin* seconds (GIL released) before suspending. An idle loop would otherwise go to
    sleep in its selector and pay an OS wake-up for the answer; polling delays nothing
    because nothing else was runnable.
    """
    if current_async_library() == "trio":
        if spin and not shot.done() and _trio_idle():
            shot.wait(spin, spin)
        return await _await_trio(shot, timeout, on_timeout, abort)
    if spin and not shot.done() and not getattr(asyncio.get_running_loop(), "_ready", True):
        shot.wait(spin, spin)
    return await _await_asyncio(shot, timeout, on_timeout, abort)


def _trio_idle() -> bool:
    import trio

    return trio.lowlevel.current_statistics().tasks_runnable == 0


def _set_fut_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _await_asyncio(
    shot: Oneshot,
    timeout: float | None,
    on_timeout: Callable[[], BaseException],
    abort: Callable[[], object],
) -> Any:
    if not shot.done():
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def wake(_shot: Oneshot) -> None:
            try:
                loop.call_soon_threadsafe(_set_fut_done, fut)
            except RuntimeError:
                pass  # the caller's loop is closed: nobody is waiting any more

        def expire() -> None:
            if shot.set_exception(on_timeout()):
                abort()

        shot.add_done_callback(wake)
        timer = loop.call_later(timeout, expire) if timeout is not None else None
        try:
            await fut
        except asyncio.CancelledError:
            if shot.cancel():
                abort()
            raise
        finally:
            if timer is not None:
                timer.cancel()
    return shot.result(0)


async def _await_trio(
    shot: Oneshot,
    timeout: float | None,
    on_timeout: Callable[[], BaseException],
    abort: Callable[[], object],
) -> Any:
    import trio

    if shot.done():
        await trio.lowlevel.checkpoint()
        return shot.result(0)

    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()
    waiting = [True]  # only touched on the trio thread
    deadline = trio.current_time() + timeout if timeout is not None else float("inf")

    def reschedule() -> None:
        if waiting[0]:
            waiting[0] = False
            trio.lowlevel.reschedule(task)

    def wake(_shot: Oneshot) -> None:
        try:
            token.run_sync_soon(reschedule)
        except trio.RunFinishedError:
            pass

    def abort_fn(_raise_cancel: Any) -> trio.lowlevel.Abort:
        # Our own deadline passed: the outcome is a timeout; otherwise an outer cancellation.
        won = shot.set_exception(on_timeout()) if trio.current_time() >= deadline else shot.cancel()
        if not won:
            return trio.lowlevel.Abort.FAILED  # the result is in; reschedule() is on its way
        waiting[0] = False
        abort()
        return trio.lowlevel.Abort.SUCCEEDED

    shot.add_done_callback(wake)
    with trio.CancelScope(deadline=deadline):
        await trio.lowlevel.wait_task_rescheduled(abort_fn)
    # Either rescheduled with the outcome, or our own deadline fired and stored the timeout.
    return shot.result(0)
