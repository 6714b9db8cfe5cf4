"""Everything trio-specific, in one place (as anyio keeps ``_backends/_trio.py``).

trio is imported lazily, from ``sys.modules`` or at first use in a trio run, so that a
process that never uses trio never pays for importing it.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agybridge._backends._common import Abort, OnTimeout
from agybridge._select import Oneshot
from agybridge.errors import HostLoopError

__all__ = ["TrioHost", "await_oneshot", "in_trio_run"]


def in_trio_run() -> bool:
    """True inside a trio run (without importing trio when nobody did)."""
    trio = sys.modules.get("trio")
    return trio is not None and bool(trio.lowlevel.in_trio_run())


def _is_idle() -> bool:
    import trio

    return bool(trio.lowlevel.current_statistics().tasks_runnable == 0)


async def await_oneshot(
    shot: Oneshot, timeout: float | None, on_timeout: OnTimeout, abort: Abort, spin: float = 0.0
) -> Any:
    """Wait for *shot* in the current trio task, woken by ``TrioToken.run_sync_soon``.

    See :func:`agybridge._backends.await_oneshot` for the exactly-once rule; the trio
    specifics are in the comments below.
    """
    import trio

    if spin and not shot.done() and _is_idle():
        shot.wait(spin, spin)
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


@dataclass(frozen=True)
class TrioHost:
    """Runs async tools as trio system tasks in the host's trio run."""

    token: Any  # trio.lowlevel.TrioToken

    def spawn(self, fn: Callable[..., Awaitable[Any]], kwargs: Mapping[str, Any], shot: Oneshot) -> Callable[[], None]:
        """Start ``fn(**kwargs)`` in the host's trio run, completing *shot*; return a canceller."""
        import trio

        scopes: list[trio.CancelScope] = []

        async def runner() -> None:
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
            if scope.cancelled_caught:
                shot.cancel()

        try:
            self.token.run_sync_soon(trio.lowlevel.spawn_system_task, runner)
        except trio.RunFinishedError:
            raise HostLoopError("the trio run this agent's async tools were registered from has finished") from None

        def cancel_in_trio() -> None:
            if scopes:
                scopes[0].cancel()

        def cancel() -> None:
            try:
                self.token.run_sync_soon(cancel_in_trio)
            except trio.RunFinishedError:
                pass

        return cancel
