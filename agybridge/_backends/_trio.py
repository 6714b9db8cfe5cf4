"""Everything trio-specific, in one place (as anyio keeps ``_backends/_trio.py``).

trio is imported lazily, from ``sys.modules`` or at first use in a trio run, so that a
process that never uses trio never pays for importing it.
"""

from __future__ import annotations

import contextvars
import sys
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agybridge._backends import _seen
from agybridge._backends._common import Abort, OnTimeout
from agybridge._select import CommandQueue, Oneshot
from agybridge.errors import HostLoopError

__all__ = ["TrioHost", "await_oneshot", "checkpoint_if_cancelled", "current_token", "in_trio_run", "shielded"]


def in_trio_run() -> bool:
    """True inside a trio run (without importing trio when nobody did)."""
    trio = sys.modules.get("trio")
    return trio is not None and bool(trio.lowlevel.in_trio_run())


def current_token() -> Any:
    """The current trio run's token (call only inside a run)."""
    import trio

    return trio.lowlevel.current_trio_token()


async def shielded(awaitable: Awaitable[Any]) -> Any:
    """Await *awaitable* in a cancel scope shielded from the caller's."""
    import trio

    with trio.CancelScope(shield=True):
        return await awaitable


class _RunBatcher:
    """The completions bound for one trio run: one ``run_sync_soon`` per batch, not per command.

    A oneshot completed on the runtime thread queues its waiter's reschedule; only the
    idle-to-armed push calls ``TrioToken.run_sync_soon``, whose callback then runs every
    reschedule that arrived meanwhile (the queue coalesces as the runtime's own does).
    """

    __slots__ = ("__weakref__", "_queue", "_token")

    def __init__(self, token: Any) -> None:
        self._token = token
        self._queue = CommandQueue(self._schedule)

    def _schedule(self) -> None:
        import trio

        try:
            self._token.run_sync_soon(self._run_all)
        except trio.RunFinishedError:
            pass  # the run is over: nobody is waiting any more

    def _run_all(self) -> None:
        queue = self._queue
        while True:
            batch = queue.drain()
            if not batch:
                return
            for reschedule in batch:
                reschedule()

    def wake_soon(self, reschedule: Callable[[], None]) -> Callable[[Oneshot], None]:
        push = self._queue.push

        def wake(_shot: Oneshot) -> None:
            push(reschedule)

        return wake


_BATCHERS: weakref.WeakKeyDictionary[Any, _RunBatcher] = weakref.WeakKeyDictionary()


def _batcher_of(token: Any) -> _RunBatcher:
    """This run's batcher, made on its first await (on the run's own thread, so no race)."""
    batcher = _BATCHERS.get(token)
    if batcher is None:
        batcher = _BATCHERS[token] = _RunBatcher(token)
    return batcher


def _is_idle() -> bool:
    """Whether no other trio task is runnable now (a spin would delay nobody).

    ``current_statistics().tasks_runnable`` is the public answer, but it builds two attrs
    objects per call (about 3 us, a tenth of a round trip); the length of the run queue it
    reports is read directly where trio's internals are as expected, and through the public
    call otherwise.
    """
    try:
        return not _run_module().GLOBAL_RUN_CONTEXT.runner.runq
    except AttributeError:
        import trio

        return bool(trio.lowlevel.current_statistics().tasks_runnable == 0)


def _run_module() -> Any:
    import trio._core._run  # trio's scheduler; imported by then (we run inside trio.run)

    return trio._core._run


async def await_oneshot(
    shot: Oneshot, timeout: float | None, on_timeout: OnTimeout, abort: Abort, spin: float = 0.0
) -> Any:
    """Wait for *shot* in the current trio task, woken by ``TrioToken.run_sync_soon``.

    See :func:`agybridge._backends.await_oneshot` for the exactly-once rule; the trio
    specifics are in the comments below.
    """
    import trio

    # The checkpoint every trio call owes (a schedule point and a cancel point) is taken
    # first, while the runtime works on the command, not after the answer is in: a
    # scheduler pass costs about as much as the rest of a round trip, and this way the two
    # overlap. Cancelled there, the command is withdrawn as for a cancel while waiting.
    try:
        await trio.lowlevel.checkpoint()
    except BaseException:
        if shot.cancel():
            abort()
        raise
    if spin and not shot.done() and _is_idle():
        shot.wait(spin, spin)
    if shot.done():
        return shot.result(0)

    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()
    waiting = [True]  # only touched on the trio thread
    deadline = trio.current_time() + timeout if timeout is not None else float("inf")

    def reschedule() -> None:
        if waiting[0]:
            waiting[0] = False
            trio.lowlevel.reschedule(task)

    wake = _batcher_of(token).wake_soon(reschedule)

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


def _noop() -> None:
    pass


async def checkpoint_if_cancelled() -> None:
    """trio's rule for a call in a cancelled scope: raise ``Cancelled`` before doing anything."""
    import trio

    await trio.lowlevel.checkpoint_if_cancelled()


@dataclass(frozen=True)
class TrioHost:
    """Runs async tools as trio system tasks in the host's trio run."""

    token: Any  # trio.lowlevel.TrioToken

    def __post_init__(self) -> None:
        _seen.enable()  # blocking callers may now block this loop: they start checking

    def describe(self) -> str:
        """Names the run in messages."""
        return f"trio run {self.token!r}"

    def gone(self) -> str | None:
        """``"has finished"`` once the run takes no more callbacks, else None."""
        import trio

        try:
            self.token.run_sync_soon(_noop)
        except trio.RunFinishedError:
            return "has finished"
        return None

    def spawn(
        self,
        fn: Callable[..., Awaitable[Any]],
        kwargs: Mapping[str, Any],
        shot: Oneshot,
        context: contextvars.Context | None = None,
    ) -> Callable[[], None]:
        """Start ``fn(**kwargs)`` in the host's trio run in *context*, completing *shot*; return a canceller.

        A system task starts in the run's initial context, not the caller's, so the tool's
        context is given explicitly. A run that has finished, or is ending, fails the call
        with :class:`HostLoopError` (an exception escaping a ``run_sync_soon`` callback
        would crash the host's own ``trio.run`` with ``TrioInternalError``).
        """
        import trio

        ctx = context if context is not None else contextvars.copy_context()
        scopes: list[trio.CancelScope] = []
        cancelled_by_us = [False]
        ended = "the trio run this agent's async tools were registered from ended while the tool was running"

        async def runner() -> None:
            try:
                with trio.CancelScope() as scope:
                    scopes.append(scope)
                    if shot.done():
                        return
                    try:
                        result = await fn(**kwargs)
                    except Exception as exc:  # noqa: BLE001 - a system task must never raise
                        shot.set_exception(exc)
                        return
                    shot.set_result(result)
            finally:
                # Still pending: cancelled, by us (the call was withdrawn) or by the run ending.
                if cancelled_by_us[0]:
                    shot.cancel()
                else:
                    shot.set_exception(HostLoopError(ended))

        def start() -> None:
            if shot.done():
                return
            try:
                trio.lowlevel.spawn_system_task(runner, context=ctx)
            except RuntimeError:  # "Nursery is closed to new arrivals": the run is ending
                shot.set_exception(
                    HostLoopError("the trio run this agent's async tools were registered from is ending")
                )

        try:
            self.token.run_sync_soon(start)
        except trio.RunFinishedError:
            raise HostLoopError("the trio run this agent's async tools were registered from has finished") from None

        def cancel_in_trio() -> None:
            cancelled_by_us[0] = True
            if scopes:
                scopes[0].cancel()

        def cancel() -> None:
            try:
                self.token.run_sync_soon(cancel_in_trio)
            except trio.RunFinishedError:
                pass

        return cancel
