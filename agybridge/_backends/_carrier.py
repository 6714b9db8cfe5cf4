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

After a body that finished by hand, the carrier is retired (let go to finish, as the body's own
Task would; the next body gets a fresh one) if the body did anything to it that a later body
could notice: kept a reference to it, strong or weak (``sys.getrefcount`` or
``weakref.getweakrefcount`` grew, as when it is put in a ``WeakSet`` of tasks), cancelled it,
added a done callback, renamed it or closed its coroutine. So what a body that never suspended
sees as ``current_task()`` is, from its point of view, a Task of its own. What it cannot be
made to be, and is documented on the guarantees page: ``get_context()`` of the carrier is its
own (empty) context, not the command's (the body runs in the command's context all the same);
``get_coro()`` is the carrier's coroutine; an attribute a body sets on the task object (C Tasks
take them, yet expose no ``__dict__`` to check) stays for the bodies after it; and before
3.14 the idle carrier is taken out of ``asyncio.all_tasks()``, while 3.14+ (which lists native
tasks where unregistering has no effect) lists it as one pending task. An adopted body resumes
one loop iteration later than its own Task would have (the carrier's wake-up).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import weakref
from collections.abc import Coroutine, Generator
from typing import Any

from agybridge._backends._asyncio import EagerStartLoop, start_task

__all__ = ["HandRunner", "can_run_by_hand"]

_enter_task = getattr(asyncio.tasks, "_enter_task", None)
_leave_task = getattr(asyncio.tasks, "_leave_task", None)
_getrefcount = sys.getrefcount
_getweakrefcount = weakref.getweakrefcount
# Before 3.14 asyncio keeps its tasks in a weak set: an idle carrier is taken out of it, so
# asyncio.all_tasks() does not list it (3.14 keeps native tasks in a list of its own, where
# unregistering does nothing: there the idle carrier is listed).
_unregister_task = getattr(asyncio.tasks, "_unregister_task", None) if sys.version_info < (3, 14) else None
_register_task = getattr(asyncio.tasks, "_register_task", None)
# 3.13+: uncancel() back to zero withdraws a cancel requested in the same step.
_UNCANCEL_WITHDRAWS = sys.version_info >= (3, 13)
# 3.11+: a Task counts the cancels requested (cancelling(), uncancel()).
_COUNTS_CANCELS = sys.version_info >= (3, 11)


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

    __slots__ = ("_coro", "_ctx", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any, ctx: contextvars.Context) -> None:
        self._coro, self._yielded, self._ctx = coro, yielded, ctx

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, run = self._coro, self._ctx.run
        send, throw = coro.send, coro.throw
        yielded, self._yielded = self._yielded, None
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
    """What a carrier parks on: a wake-up future, and the body it is handed (None: retired).

    It also keeps what a body could change on its carrier (its coroutine, its name), to
    tell after the body whether the carrier is still as it was.
    """

    __slots__ = ("body", "coro", "handoff", "name")

    def __init__(self, handoff: asyncio.Future[None]) -> None:
        self.handoff = handoff
        self.body: _Adopted | None = None
        self.coro: Coroutine[Any, Any, Any] | None = None
        self.name = ""


async def _carry(slot: _Slot) -> Any:
    """A carrier's coroutine: park until a body is handed over (or the carrier is retired)."""
    try:
        await slot.handoff
    except asyncio.CancelledError as exc:
        if slot.body is None:
            raise  # cancelled while idle: it carries nothing, so it simply ends cancelled
        # Cancelled after the body's hand-run step, before the carrier took it over (or by
        # the body itself in that step). Requested again, now that this step is about to hand
        # the Task what the body waits on, so the Task's own step deals with it as for any
        # task: it cancels that future (or future-like object) once its wake-up is attached,
        # else throws into the body. Unless (3.13+) uncancel() took the cancel back meanwhile,
        # which withdraws it from a Task too.
        carrier = asyncio.current_task()
        assert carrier is not None
        if not (_UNCANCEL_WITHDRAWS and carrier.cancelling() == 0):  # type: ignore[attr-defined,unused-ignore]
            carrier.cancel(exc.args[0] if exc.args else None)
            if _COUNTS_CANCELS:
                carrier.uncancel()  # type: ignore[attr-defined,unused-ignore]  # one request, counted once
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
        slot.coro = coro = _carry(slot)
        # Started eagerly: parked on its handoff before anything can cancel it.
        carrier = start_task(self._loop, coro, contextvars.Context())
        slot.name = carrier.get_name()  # made once: later get_name() calls return this object
        if _unregister_task is not None:
            _unregister_task(carrier)  # idle, it is nobody's task: all_tasks() does not list it
        self._carrier, self._slot = carrier, slot
        return carrier, slot

    def start(self, coro: Coroutine[Any, Any, Any], ctx: contextvars.Context) -> asyncio.Task[Any] | None:
        """Run *coro*'s first step now, in *ctx*; the carrier Task now running it, or None if done.

        Called inside another task's step (where no task can be entered), it starts *coro* as
        a task of its own instead, eagerly where it can.

        *coro* must not raise (the dispatcher's bodies complete their oneshot with every
        outcome); if it does, the exception propagates from this call.
        """
        carrier, slot = self._carrier, self._slot
        if carrier is None or slot is None or slot.handoff.done():
            carrier, slot = self._fresh()  # the first, or the last one was cancelled while idle
        loop = self._loop
        # Counted through the attribute both times: a load from an attribute is always a new
        # reference, while 3.14 may pass a local on by a borrowed one in one place and not in
        # another (an exception handler), which would tell a difference where there is none.
        refs, weakrefs = _getrefcount(self._carrier), _getweakrefcount(carrier)
        try:
            _enter_task(loop, carrier)  # type: ignore[misc]
        except RuntimeError:  # called inside another task's step, where none can be entered
            task = start_task(loop, coro, ctx)  # so it starts as a task of its own
            return None if task.done() else task
        try:
            yielded = ctx.run(coro.send, None)
        except StopIteration:
            _leave_task(loop, carrier)  # type: ignore[misc]
            # (After leaving: the loop's current-task slot holds a reference of its own.)
            if (
                _getrefcount(self._carrier) != refs  # kept it
                or _getweakrefcount(carrier) != weakrefs  # kept it weakly (a WeakSet of tasks)
                or slot.handoff.done()  # cancelled it
                or carrier._callbacks  # watches it
                or carrier.get_name() is not slot.name  # renamed it
                or slot.coro.cr_frame is None  # type: ignore[union-attr]  # closed its coroutine
            ):
                self.retire()  # the task the body saw was its own: the next body gets another
            return None
        except BaseException:
            _leave_task(loop, carrier)  # type: ignore[misc]
            self.retire()
            raise
        _leave_task(loop, carrier)  # type: ignore[misc]
        self._carrier = self._slot = None  # the next body gets a fresh carrier
        if _unregister_task is not None:
            _register_task(carrier)  # type: ignore[misc]  # the body's own task now: listed again
        slot.body = _Adopted(coro, yielded, ctx)
        if not slot.handoff.done():  # (done: the body cancelled its own task in that step)
            slot.handoff.set_result(None)
        return carrier

    def retire(self) -> None:
        """Let the idle carrier finish (the loop is closing, or a body claimed it)."""
        carrier, slot = self._carrier, self._slot
        self._carrier = self._slot = None
        if carrier is not None and _unregister_task is not None:
            _register_task(carrier)  # type: ignore[misc]  # it ends as a listed task does
        if slot is not None and not slot.handoff.done():
            slot.handoff.set_result(None)
