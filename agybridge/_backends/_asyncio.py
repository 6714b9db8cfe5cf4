"""Everything asyncio-specific, in one place (as anyio keeps ``_backends/_asyncio.py``).

Used on both sides of the bridge: the runtime loop (task start, deadlines, "is this loop
busy?") and an asyncio host loop in another thread (awaiting a oneshot, running an async
tool for the agent).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import sys
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from agybridge._backends import _seen
from agybridge._backends._common import Abort, OnTimeout
from agybridge._select import CommandQueue, Oneshot
from agybridge.errors import HostLoopError

__all__ = [
    "AsyncioHost",
    "EagerStartLoop",
    "await_oneshot",
    "bounded",
    "has_ready_work",
    "new_runtime_loop",
    "start_task",
]

T = TypeVar("T")


def has_ready_work(loop: asyncio.AbstractEventLoop) -> bool:
    """Does *loop* have callbacks ready to run right now?

    Both spinners ask this (a caller about to poll for its answer, and the runtime loop
    about to poll its queue): holding a loop that has work ready delays that work, so
    neither spins then. The stock loops keep ready callbacks in ``_ready``; uvloop hides
    its queue, so there the answer is a deliberate "yes": never spin on a loop whose
    state cannot be seen, because a wrong "idle" delays other work while a wrong "busy"
    costs only the spin's saving.
    """
    ready = getattr(loop, "_ready", None)
    return True if ready is None else bool(ready)


class EagerStartLoop(asyncio.SelectorEventLoop):
    """The runtime's stock loop before 3.12: it can start a task eagerly, as 3.12 does.

    A new Task schedules its first step with ``loop.call_soon``. :func:`start_task` asks this
    loop to hand that one call back instead of queueing it, and runs the step at once: a
    command that finishes without suspending completes inside the dispatcher's callback and
    never waits a loop iteration, while every step still runs as a real Task (so
    ``current_task()``, cancellation, ``asyncio.timeout`` and anyio's cancel scopes, which
    check that they exit in the task they entered, all hold from the first step on).
    """

    _capture: list[Any] | None = None

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        capture = self._capture
        if capture is not None:
            # Only the new task's first step is taken (its later calls queue as usual). The
            # task ignores what call_soon returns, so no Handle is made for a step run now.
            self._capture = None
            capture.append(callback)
            capture.append(context)
            return None  # type: ignore[return-value]
        return super().call_soon(callback, *args, context=context)


def new_runtime_loop() -> asyncio.AbstractEventLoop:
    """A new stock loop for the runtime thread (one that can start tasks eagerly before 3.12)."""
    if sys.version_info >= (3, 12):
        return asyncio.new_event_loop()
    return EagerStartLoop()


if sys.version_info >= (3, 12):

    def start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], ctx: contextvars.Context
    ) -> asyncio.Task[T]:
        """Start *coro* as a task in *ctx*, eagerly: a command that finishes without suspending
        completes inside this call and is never scheduled, so it pays no trip through the loop."""
        return asyncio.Task(coro, loop=loop, context=ctx, eager_start=True)  # type: ignore[call-arg,unused-ignore]

else:

    def start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], ctx: contextvars.Context
    ) -> asyncio.Task[T]:
        """Start *coro* as a task in *ctx*; eagerly on the runtime's own :class:`EagerStartLoop`.

        On other loops (uvloop), and from inside another task (a step cannot run inside
        another task's step), the first step is scheduled. 3.10's ``create_task`` has no
        ``context=``, so there the task copies *ctx* (made current around the call).
        """
        if type(loop) is EagerStartLoop and asyncio.current_task(loop) is None:
            first: list[Any] = []
            loop._capture = first
            try:
                # The Task itself, not loop.create_task: the runtime's loop has no task factory.
                if sys.version_info >= (3, 11):
                    task = asyncio.Task(coro, loop=loop, context=ctx)
                else:
                    task = ctx.run(asyncio.Task, coro, loop=loop)
            finally:
                loop._capture = None
            if first:
                step, context = first
                context.run(step)  # the first step, now: the task's own step, in its own context
            return task
        if sys.version_info >= (3, 11):
            return loop.create_task(coro, context=ctx)
        return ctx.run(loop.create_task, coro)


async def bounded(awaitable: Awaitable[T], seconds: float, on_expire: Callable[[], BaseException]) -> T:
    """Await with a deadline; raise ``on_expire()`` when *our* deadline passes.

    A ``TimeoutError`` raised by the awaited code itself (say, a network timeout inside an
    agent) is not ours and propagates unchanged (3.11+, where the scope can tell).
    """
    if sys.version_info >= (3, 11):
        scope = asyncio.timeout(seconds)
        try:
            async with scope:
                return await awaitable
        except TimeoutError:
            if scope.expired():
                raise on_expire() from None
            raise
    # 3.10: wait_for runs the awaitable as a task of its own, and a task re-raises
    # KeyboardInterrupt/SystemExit out of the event loop, killing it. Carry such an
    # exception out of that task wrapped, and raise it here, in the caller's task.
    try:
        return await asyncio.wait_for(_contained(awaitable), seconds)
    except asyncio.TimeoutError:
        raise on_expire() from None
    except _Escaped as wrapper:
        escaped = wrapper.exc
    raise escaped


class _Escaped(Exception):
    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc


async def _contained(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except asyncio.CancelledError:
        raise
    except Exception:
        raise
    except BaseException as exc:  # noqa: BLE001 - carried to the caller's task by bounded()
        raise _Escaped(exc) from None


def _set_fut_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _LoopWaker:
    """The completions bound for one asyncio host loop: one wake-up per batch, not per command.

    A oneshot completed on the runtime thread pushes its waiter's future onto this loop's
    queue; only the idle-to-armed push writes the queue's eventfd, which this loop watches
    with ``add_reader``. The reader then resolves every future that arrived meanwhile in one
    callback. A loop without ``add_reader`` (Windows' proactor) falls back to one
    ``call_soon_threadsafe`` per completion. The waker lives as long as its loop (it is kept
    by a weak-keyed map, and its descriptor is closed with its queue).
    """

    __slots__ = ("__weakref__", "_loop", "_queue", "wake_soon")

    wake_soon: Callable[[asyncio.Future[None]], Callable[[Oneshot], None]]

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # never a strong one: the map's key must be able to die
        self._queue = CommandQueue()
        try:
            loop.add_reader(self._queue.fileno(), self._resolve)
        except NotImplementedError:
            self.wake_soon = functools.partial(_wake_by_handle, loop)
        else:
            self.wake_soon = self._wake_by_batch

    def _wake_by_batch(self, fut: asyncio.Future[None]) -> Callable[[Oneshot], None]:
        push = self._queue.push

        def wake(_shot: Oneshot) -> None:
            if not fut.get_loop().is_closed():  # a closed loop has nobody waiting any more
                push(fut)

        return wake

    def _resolve(self) -> None:
        # On the host loop: consume the wake-up, then resolve everything that arrived.
        queue = self._queue
        queue.ack()
        while True:
            batch = queue.drain()
            if not batch:
                return
            for fut in batch:
                if not fut.done():
                    fut.set_result(None)


def _wake_by_handle(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> Callable[[Oneshot], None]:
    def wake(_shot: Oneshot) -> None:
        try:
            loop.call_soon_threadsafe(_set_fut_done, fut)
        except RuntimeError:
            pass  # the caller's loop is closed: nobody is waiting any more

    return wake


_WAKERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaker] = weakref.WeakKeyDictionary()


def _waker_of(loop: asyncio.AbstractEventLoop) -> _LoopWaker:
    """This loop's waker, made on its first await (on the loop's own thread, so no race)."""
    waker = _WAKERS.get(loop)
    if waker is None:
        waker = _WAKERS[loop] = _LoopWaker(loop)
    return waker


async def await_oneshot(
    shot: Oneshot, timeout: float | None, on_timeout: OnTimeout, abort: Abort, spin: float = 0.0
) -> Any:
    """Wait for *shot* on the running asyncio loop (see :func:`agybridge._backends.await_oneshot`)."""
    loop = asyncio.get_running_loop()
    if spin and not shot.done() and not has_ready_work(loop):
        shot.wait(spin, spin)
    if not shot.done():
        fut: asyncio.Future[None] = loop.create_future()
        wake = _waker_of(loop).wake_soon(fut)

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


def _transfer_task(task: asyncio.Task[Any], shot: Oneshot, cancelled_by_us: list[bool]) -> None:
    if task.cancelled():
        if cancelled_by_us[0]:
            shot.cancel()
        else:
            # Nobody on the bridge cancelled it: the host loop is shutting down (asyncio.run
            # cancels every task it leaves behind). The call failed; it was not withdrawn.
            shot.set_exception(HostLoopError("the asyncio host loop cancelled the async tool while shutting down"))
    elif task.exception() is not None:
        shot.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        shot.set_result(task.result())


async def _as_coroutine(fn: Callable[..., Awaitable[Any]], kwargs: Mapping[str, Any]) -> Any:
    return await fn(**kwargs)


def _create_task(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], ctx: contextvars.Context
) -> asyncio.Task[T]:
    if sys.version_info >= (3, 11):
        return loop.create_task(coro, context=ctx)
    return ctx.run(loop.create_task, coro)  # 3.10: the task copies the context it is made in


@dataclass(frozen=True)
class AsyncioHost:
    """Runs async tools as tasks on an asyncio loop owned by the host."""

    loop: asyncio.AbstractEventLoop

    def __post_init__(self) -> None:
        _seen.enable()  # blocking callers may now block this loop: they start checking

    def describe(self) -> str:
        """Names the loop in messages."""
        return f"asyncio loop {self.loop!r}"

    def gone(self) -> str | None:
        """Why the loop can no longer run a tool (closed, or stopped), or None while it runs.

        A stopped loop would accept the callback and never run it, stalling the tool call
        for the whole chat timeout; so "not running" counts as gone.
        """
        if self.loop.is_closed():
            return "is closed"
        if not self.loop.is_running():
            return "is not running (it was stopped)"
        return None

    def spawn(
        self,
        fn: Callable[..., Awaitable[Any]],
        kwargs: Mapping[str, Any],
        shot: Oneshot,
        context: contextvars.Context | None = None,
    ) -> Callable[[], None]:
        """Start ``fn(**kwargs)`` on the host loop in *context*, completing *shot*; return a canceller.

        Raises :class:`HostLoopError` at once if the loop is closed or stopped.
        """
        why = self.gone()
        if why is not None:
            raise HostLoopError(f"the asyncio loop this agent's async tools were registered from {why}")
        ctx = context if context is not None else contextvars.copy_context()
        holder: list[asyncio.Task[Any]] = []
        cancelled_by_us = [False]

        def start() -> None:
            if shot.done():
                return  # cancelled before it could start
            task = _create_task(self.loop, _as_coroutine(fn, kwargs), ctx)
            holder.append(task)
            task.add_done_callback(lambda t: _transfer_task(t, shot, cancelled_by_us))

        def cancel_on_loop() -> None:
            cancelled_by_us[0] = True
            if holder:
                holder[0].cancel()

        try:
            self.loop.call_soon_threadsafe(start)
        except RuntimeError:
            raise HostLoopError("the asyncio loop this agent's async tools were registered from is closed") from None

        def cancel() -> None:
            try:
                self.loop.call_soon_threadsafe(cancel_on_loop)
            except RuntimeError:
                pass

        return cancel
