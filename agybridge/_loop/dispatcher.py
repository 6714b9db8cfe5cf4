"""The consumer side of the command queue; runs on the runtime loop thread only.

The dispatcher drains the :class:`~agybridge.CommandQueue` in batches and runs every
command as its own task, so commands never wait behind each other. It keeps the map of
active commands, aborts the ones their callers gave up on, and accounts every outcome
exactly once. Which coroutine runs a command is not its business: the handler for each
command type is given to it.

Every method here runs on the loop thread, except :meth:`Dispatcher.submit`,
:meth:`Dispatcher.metrics`, :meth:`Dispatcher.in_flight` and :meth:`Dispatcher.fail_queued`
after the loop is gone.

Admission (check the bound, count the command in) is one step under a small lock, so
``max_in_flight`` is a hard bound. Outcomes are counted without it: they have one writer
(the loop thread, or a caller once the loop is gone), and "in flight" is derived as
submitted minus finished, so a :meth:`Dispatcher.metrics` snapshot always adds up
(``submitted == finished + in_flight``) and a stale read can only overstate what is in
flight, never let a burst past the bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agybridge._backends._asyncio import has_ready_work, start_task
from agybridge._backends._carrier import HandRunner, can_run_by_hand
from agybridge._select import CommandQueue
from agybridge.commands import PyCommand
from agybridge.errors import (
    ChatTimeoutError,
    OperationTimeoutError,
    RuntimeDiedError,
    RuntimeShutdownError,
)

__all__ = ["Dispatcher", "Handler", "RuntimeMetrics"]

#: Drains one wake-up may do back to back while every command finishes in its eager start.
_DRAIN_ROUNDS = 4

#: Runs one command on the loop: returns what the dispatcher awaits for its result (a
#: coroutine, or any awaitable; raising at once is an outcome too).
Handler = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class RuntimeMetrics:
    """Counters of one runtime, read with :meth:`PythonRuntime.metrics`.

    An immutable snapshot, taken on any thread without a round trip to the runtime loop.
    ``submitted`` counts commands the runtime accepted (refused sends are not counted); each ends
    in exactly one of ``completed`` (a result), ``failed`` (an exception), ``timed_out``,
    ``cancelled`` or ``shut_down`` (failed with ``RuntimeShutdownError``), or is still
    ``in_flight`` (about ``queued`` of those have not reached the loop yet). Every snapshot adds
    up: ``submitted == finished + in_flight``. ``wakeups`` counts the times a submit had to wake
    the runtime loop; bursts share one. A context manager held open by
    :meth:`PythonRuntime.enter` counts as in flight until it is exited.
    """

    submitted: int
    completed: int
    failed: int
    timed_out: int
    cancelled: int
    shut_down: int
    in_flight: int
    wakeups: int
    queued: int = 0

    @property
    def finished(self) -> int:
        """Commands that reached an outcome."""
        return self.completed + self.failed + self.timed_out + self.cancelled + self.shut_down


class Dispatcher:
    """Runs each drained command as a task and accounts its outcome exactly once.

    *handlers* maps a command type to the coroutine function that executes it. *loop_spin*
    is how long an idle loop polls the queue before sleeping (``RuntimeConfig.loop_spin``).
    It serves whichever loop first calls :meth:`on_wake`.
    """

    def __init__(
        self, queue: CommandQueue, handlers: Mapping[type[PyCommand], Handler], loop_spin: float = 0.0
    ) -> None:
        self._queue = queue
        self._handlers = dict(handlers)
        self._loop_spin = loop_spin
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Runs each command's first step by hand in a carrier Task (None where the loop cannot).
        self._runner: HandRunner | None = None
        self._active: dict[PyCommand, asyncio.Task[Any]] = {}
        # Admission and the submitted count live in the queue (one compiled call per send);
        # the outcome counters below have one writer (the loop thread, or a caller once
        # the loop is gone), and each outcome is reported to the queue once counted.
        self._finished_one = queue.finished_one
        self._n_completed = 0
        self._n_failed = 0
        self._n_timed_out = 0
        self._n_cancelled = 0
        self._n_shut_down = 0

    # -- any thread -------------------------------------------------------------------------

    def in_flight(self) -> int:
        """Commands accepted and not finished: queued, drained or running."""
        in_flight: int = self._queue.in_flight
        return in_flight

    def submit(self, cmd: PyCommand, limit: int | None = None) -> int:
        """Claim, admit and push *cmd* in one compiled step (``CommandQueue.submit``).

        Returns -1 (admitted), -2 (*cmd* was sent before), -3 (its oneshot is already done),
        or the count in flight when *limit* refused it. Checking the bound and counting the
        command in are one step under the queue's lock, so no burst of callers can
        overshoot *limit*; a refusal touches nothing else: the loop never hears of it.
        Raises ``QueueClosedError`` once the queue is closed.
        """
        code: int = self._queue.submit(cmd, -1 if limit is None else limit)
        return code

    def metrics(self) -> RuntimeMetrics:
        """A snapshot that adds up: outcomes first, then submitted (every finished command
        was submitted before), in flight the difference; ``queued`` is read beside it."""
        queued = len(self._queue)
        completed, failed, timed_out = self._n_completed, self._n_failed, self._n_timed_out
        cancelled, shut_down = self._n_cancelled, self._n_shut_down
        submitted = self._queue.submitted
        in_flight = submitted - (completed + failed + timed_out + cancelled + shut_down)
        return RuntimeMetrics(
            submitted=submitted,
            completed=completed,
            failed=failed,
            timed_out=timed_out,
            cancelled=cancelled,
            shut_down=shut_down,
            in_flight=in_flight,
            wakeups=self._queue.wakeups,
            queued=min(queued, in_flight),
        )

    # -- loop thread ------------------------------------------------------------------------

    def on_readable(self) -> None:
        """The queue's descriptor is readable (a push woke the idle loop): ack it, then drain.

        The wake-up is consumed before the first drain, so a push that lands after the
        drain that finds the queue empty writes the descriptor again: nothing is stranded.
        """
        self._queue.ack()
        self.on_wake()

    def on_wake(self) -> None:
        """Drain the queue and start every command, until a drain comes back empty.

        Scheduled by the queue's wake-up (one per idle->busy transition). While started
        tasks are still pending, the next drain waits for the next loop iteration (after
        those tasks took their first step), which picks up pushes that arrived meanwhile
        without another wake-up. When every command finished inside its first step (run
        by hand in the carrier task), there is nothing to wait for: draining again at once saves the loop a
        whole iteration (a selector poll) per sporadic command. The rounds in one call are
        bounded, so a steady stream of pushes cannot starve the loop's other callbacks.
        """
        loop = self._loop
        if loop is None:
            loop = self._serve(asyncio.get_running_loop())
        spin = self._loop_spin
        if spin and has_ready_work(loop):
            spin = 0.0  # other callbacks are waiting: do not hold the loop for a push
        for _round in range(_DRAIN_ROUNDS):
            batch = self._queue.drain(spin)
            if not batch:
                return  # the queue marked us idle: the next push wakes us again
            pending = False
            for cmd in batch:
                pending = self._start(loop, cmd, self._runner) or pending
            if pending:
                break
            spin = 0.0
        loop.call_soon(self.on_wake)

    def _serve(self, loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
        self._loop = loop
        self._runner = HandRunner(loop) if can_run_by_hand(loop) else None
        return loop

    def _start(self, loop: asyncio.AbstractEventLoop, cmd: PyCommand, runner: HandRunner | None) -> bool:
        """Start *cmd*; True if it is still running afterwards.

        With a *runner* (from a plain callback), its first step runs by hand in the carrier
        task: a body that never suspends completes here and never becomes a Task of its own;
        one that suspends goes on as the carrier. Without one (from inside a task, or on a
        loop the runner cannot serve), it starts as its own task, eagerly where possible.
        """
        if cmd.oneshot.done():
            self.account(cmd)  # cancelled or timed out while still queued
            return False
        if runner is not None:
            task = runner.start(self._execute(cmd), cmd.context)
            if task is None:
                return False
        else:
            task = start_task(loop, self._execute(cmd), cmd.context)
            if task.done():
                return False
        self._active[cmd] = task
        return True

    async def _execute(self, cmd: PyCommand) -> None:
        shot = cmd.oneshot
        try:
            handler = self._handlers.get(type(cmd))
            if handler is None:
                raise TypeError(f"this runtime has no handler for {cmd.describe()} commands")
            result = await handler(cmd)
        except asyncio.CancelledError:
            # Cancelled by the caller (who already completed the oneshot), by shutdown (which
            # did too), or by code on the loop: report that as the command's cancellation.
            shot.cancel()
        except BaseException as exc:  # noqa: BLE001 - every outcome goes to the caller
            shot.set_exception(exc)
        else:
            if shot.set_result(result):
                self._n_completed += 1  # the common case, counted without inspecting the oneshot
                self._finished_one()
                if self._active:
                    self._active.pop(cmd, None)
                return
        self._active.pop(cmd, None)
        self.account(cmd)

    def abort(self, cmd: PyCommand) -> None:
        """The caller completed *cmd* (cancel or timeout): cancel its task if it runs."""
        task = self._active.get(cmd)
        if task is not None:
            self._cancel(cmd, task)

    def notify_finished(self, cmd: PyCommand, shot: Any) -> None:
        """Complete *shot* once *cmd*'s task has ended: at once if none runs (never started,
        or done), else from the task's done callbacks, after those added before (the reaping)."""
        task = self._active.get(cmd)
        if task is None or task.done():
            shot.set_result(None)
        else:
            task.add_done_callback(lambda _task: shot.set_result(None))

    def _cancel(self, cmd: PyCommand, task: asyncio.Task[Any]) -> None:
        # A task cancelled before its first step never runs its coroutine, so _execute's
        # clean-up never happens; the done callback reaps such a command instead.
        task.add_done_callback(lambda _task: self._reap(cmd))
        task.cancel()

    def _reap(self, cmd: PyCommand) -> None:
        if self._active.pop(cmd, None) is not None:  # _execute did not get to clean up
            cmd.oneshot.cancel()
            self.account(cmd)

    def reap_all(self) -> None:
        """Account every command whose task never finished (the loop is closing)."""
        if self._runner is not None:
            self._runner.retire()  # the idle carrier ends with the loop, never left pending
        for cmd in list(self._active):
            self._reap(cmd)

    def account(self, cmd: PyCommand) -> None:
        """Count the outcome the oneshot holds; called once per command."""
        shot = cmd.oneshot
        exc = None if shot.cancelled() else shot.exception(0)
        if shot.cancelled():
            self._n_cancelled += 1
        elif exc is None:
            self._n_completed += 1
        elif isinstance(exc, (OperationTimeoutError, ChatTimeoutError)):
            self._n_timed_out += 1
        elif isinstance(exc, RuntimeShutdownError):
            self._n_shut_down += 1
        else:
            self._n_failed += 1
        self._finished_one()  # after the outcome: a stale read overstates in_flight, never under

    def fail_queued(self, leftovers: list[PyCommand]) -> None:
        """Fail commands the closed queue handed back: they never reached the loop."""
        for cmd in leftovers:
            cmd.oneshot.set_exception(
                RuntimeShutdownError(f"{cmd.describe()} was still queued when the runtime shut down")
            )
            self.account(cmd)

    def run_leftovers(self, leftovers: list[PyCommand]) -> None:
        """For shutdown: start the commands the queue held when it closed.

        They were accepted before the shutdown began, so they run within its grace like
        the commands already running (:meth:`stop_all` waits for them too); only those
        that outlast it fail with ``RuntimeShutdownError``.
        """
        loop = asyncio.get_running_loop()
        for cmd in leftovers:
            self._start(loop, cmd, None)  # inside the shutdown's task: each as a task of its own

    def fail_for_death(self, leftovers: list[PyCommand], cause: BaseException | None, reason: str) -> None:
        """The loop died: fail the queued *leftovers* and every active command.

        Leftovers are counted here; active commands are counted when the closing loop
        cancels their tasks (or :meth:`reap_all` reaps them).
        """
        message = f"the runtime thread died ({reason}); the command was not completed"
        for cmd in leftovers + list(self._active):
            error = RuntimeDiedError(message)
            error.__cause__ = cause
            cmd.oneshot.set_exception(error)
        for cmd in leftovers:
            self.account(cmd)

    def set_handlers(self, handlers: Mapping[type[PyCommand], Handler]) -> None:
        """Replace the handlers (loop thread only): a forked child's replay puts back the plain ones."""
        self._handlers.update(handlers)

    def active_tasks(self) -> list[asyncio.Task[Any]]:
        """The tasks of the commands running now (a snapshot)."""
        return list(self._active.values())

    async def stop_all(self, grace: float) -> None:
        """For shutdown: let active commands finish within *grace*, then fail and cancel the rest."""
        active = list(self._active.values())
        if active and grace > 0:
            await asyncio.wait(active, timeout=grace)
        for cmd, task in list(self._active.items()):
            cmd.oneshot.set_exception(
                RuntimeShutdownError(f"{cmd.describe()} was cancelled by shutdown after a {grace} s grace period")
            )
            self._cancel(cmd, task)
        remaining = list(self._active.values())
        if remaining:
            await asyncio.wait(remaining, timeout=1.0)
