"""Commands that need no Task get none: their bodies run by hand, inside a carrier Task.

The dispatcher could start every command as a Task of its own (eagerly, so one that never
suspends is done inside the dispatcher's callback). Making and retiring that Task is the
largest single cost of a round trip on the loop side (on 3.10/3.11 a Task's birth registers
it in asyncio's weak set of all tasks, in Python). The design floor instead runs each body by
hand (``coro.send(None)``) and makes a Task only for one that suspends.

Running by hand alone would break what agent code may rely on: ``asyncio.current_task()``
would be None in the first step, and a body that enters an anyio cancel scope (httpx and the
openai client do) or an ``asyncio.timeout()`` before its first suspension and leaves it
after would fail, because both check that they exit in the task they entered. So a
:class:`HandRunner` keeps one **carrier**: a real Task of the runtime loop, made ahead and
parked on a private future. A body runs by hand with the carrier entered as the loop's
current task, in the command's own context:

- if the body finishes without suspending, it completed inside the dispatcher's callback,
  and the carrier stays parked, ready for the next body (no Task was made or retired);
- if it suspends, the carrier *adopts* it: the carrier wakes (one loop iteration later) and
  drives the body to its end, step by step in the body's context, and a new carrier is made
  for the next command. The Task the body saw as ``current_task()`` in its first step is the
  Task it goes on in, so cancel scopes, ``asyncio.timeout`` and ``uncancel`` hold, and
  cancelling that Task (the dispatcher's abort) cancels the body.

A carrier is never shared across bodies in a way one of them can see: after a body that
finished by hand, the carrier is retired (let go to finish, as a body's own Task would) if
the body kept a reference to it (``sys.getrefcount`` grew), asked to cancel it, or added a
done callback to it; the next body gets a fresh one. What a body that never suspended sees
as ``current_task()`` is therefore a Task that, from its point of view, was its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine, Generator
from typing import Any

from agybridge._backends._asyncio import EagerStartLoop, start_task

__all__ = ["HandRunner", "can_run_by_hand"]

_enter_task = getattr(asyncio.tasks, "_enter_task", None)
_leave_task = getattr(asyncio.tasks, "_leave_task", None)
_getrefcount = sys.getrefcount
_Future = asyncio.Future


def can_run_by_hand(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether *loop* can take hand-run bodies: the carrier must start eagerly (3.12+'s
    ``eager_start`` on any loop, or the runtime's :class:`EagerStartLoop` before), so that it
    is parked before its first use, and asyncio must expose the current-task switch."""
    if _enter_task is None or _leave_task is None:
        return False
    return sys.version_info >= (3, 12) or type(loop) is EagerStartLoop


class _Adopted:
    """A body that suspended in its hand-run step, as the carrier awaits it.

    ``__await__`` resumes the body where it stopped: it first hands the Task the value the
    body yielded (the future it waits on), then passes every value or exception the Task
    sends in on to the body, each step in the body's own context, until the body returns.
    """

    __slots__ = ("_coro", "_ctx", "_yielded", "cancelled_early")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any, ctx: contextvars.Context) -> None:
        self._coro, self._yielded, self._ctx = coro, yielded, ctx
        #: Set when the carrier was cancelled after the hand-run step, before it adopted the body.
        self.cancelled_early: BaseException | None = None

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, run = self._coro, self._ctx.run
        send, throw = coro.send, coro.throw
        yielded, self._yielded = self._yielded, None
        early = self.cancelled_early
        # As Task.cancel() does: cancel the future the body waits on if it can, else throw.
        if early is not None and not (isinstance(yielded, _Future) and yielded.cancel(*early.args)):
            try:
                yielded = run(throw, early)
            except StopIteration as stop:
                return stop.value
        while True:
            try:
                value = yield yielded
            except BaseException as exc:  # noqa: BLE001 - every exception the Task throws goes to the body
                try:
                    yielded = run(throw, exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = run(send, value)
                except StopIteration as stop:
                    return stop.value


class _Slot:
    """What a carrier parks on: a wake-up future, and the body it is handed (None: retired)."""

    __slots__ = ("body", "handoff")

    def __init__(self, handoff: asyncio.Future[None]) -> None:
        self.handoff = handoff
        self.body: _Adopted | None = None


async def _carry(slot: _Slot) -> Any:
    """A carrier's coroutine: park until a body is handed over (or the carrier is retired)."""
    try:
        await slot.handoff
    except asyncio.CancelledError as exc:
        if slot.body is None:
            raise  # cancelled while idle: it carries nothing, so it simply ends cancelled
        # Cancelled after the body's hand-run step, before the carrier took it over (or by
        # the body itself in that step): the body is cancelled at the await it stopped at.
        slot.body.cancelled_early = exc
    body = slot.body
    if body is None:
        return None  # retired without a body
    return await body


class HandRunner:
    """Runs command bodies by hand inside a carrier Task (see the module's docstring).

    One per runtime loop, used on the loop thread only, from plain callbacks (never from
    inside another task's step: a task cannot be entered while another one runs).
    """

    __slots__ = ("_carrier", "_loop", "_slot")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._carrier: asyncio.Task[Any] | None = None
        self._slot: _Slot | None = None

    def _fresh(self) -> tuple[asyncio.Task[Any], _Slot]:
        slot = _Slot(self._loop.create_future())
        # Started eagerly: parked on its handoff before anything can cancel it.
        carrier = start_task(self._loop, _carry(slot), contextvars.Context())
        self._carrier, self._slot = carrier, slot
        return carrier, slot

    def start(self, coro: Coroutine[Any, Any, Any], ctx: contextvars.Context) -> asyncio.Task[Any] | None:
        """Run *coro*'s first step now, in *ctx*; the carrier Task now running it, or None if done.

        *coro* must not raise (the dispatcher's bodies complete their oneshot with every
        outcome); if it does, the exception propagates from this call.
        """
        carrier, slot = self._carrier, self._slot
        if carrier is None or slot is None or slot.handoff.done():
            carrier, slot = self._fresh()  # the first, or the last one was cancelled while idle
        loop = self._loop
        refs = _getrefcount(carrier)
        _enter_task(loop, carrier)  # type: ignore[misc]
        try:
            yielded = ctx.run(coro.send, None)
        except StopIteration:
            _leave_task(loop, carrier)  # type: ignore[misc]
            # (After leaving: the loop's current-task slot holds a reference of its own.)
            if _getrefcount(carrier) != refs or slot.handoff.done() or carrier._callbacks:
                self.retire()  # the body kept, cancelled or watched its task: it was its own
            return None
        except BaseException:
            _leave_task(loop, carrier)  # type: ignore[misc]
            self.retire()
            raise
        _leave_task(loop, carrier)  # type: ignore[misc]
        self._carrier = self._slot = None  # the next body gets a fresh carrier
        slot.body = _Adopted(coro, yielded, ctx)
        if not slot.handoff.done():  # (done: the body cancelled its own task in that step)
            slot.handoff.set_result(None)
        return carrier

    def retire(self) -> None:
        """Let the idle carrier finish (the loop is closing, or a body claimed it)."""
        slot = self._slot
        self._carrier = self._slot = None
        if slot is not None and not slot.handoff.done():
            slot.handoff.set_result(None)
