"""The holder of a context manager held open by ``enter()`` / ``aenter()``: runs on the runtime loop.

Entering and exiting an async context manager in two different tasks corrupts its cancel
scopes and task-bound state (anyio issue 381), so both happen in ONE task: the holder, the
task of one ``Run`` command. It enters the context manager, hands the value back through that
command's oneshot, waits on the runtime loop for the exit signal, runs ``__aexit__`` with the
body's exception and hands back its verdict. The caller's faces are in
:mod:`agybridge._caller.context_managers`; they reach a holder only through the send path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

from agybridge._backends import _asyncio
from agybridge._select import Oneshot

__all__ = ["HeldCount", "Holder", "release_idle"]

#: An async context manager, or a zero-argument callable that makes one on the runtime loop.
Source = AbstractAsyncContextManager[Any] | Callable[[], AbstractAsyncContextManager[Any]]

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]

_NO_EXCEPTION: ExcInfo = (None, None, None)


def _never() -> BaseException:  # the holder waits for its exit signal without a deadline
    raise AssertionError("unreachable")


def _nothing() -> None:
    pass


class HeldCount:
    """The holders that are idle, waiting for their caller's exit (written on the loop thread).

    A held context manager is an in-flight command, yet no caller waits behind it: the send
    path subtracts this count when it decides whether a caller may spin for its answer, and
    shutdown exits these at once instead of giving them the grace (:func:`release_idle`).
    """

    __slots__ = ("count", "idle")

    def __init__(self) -> None:
        self.count = 0
        #: In the order they were entered: shutdown exits them last entered first.
        self.idle: list[Holder] = []

    def forget(self) -> None:
        """In a forked child: the parent's holders are not here (their loop is gone)."""
        self.count = 0
        self.idle = []


async def release_idle(held: HeldCount, active: Callable[[], list[asyncio.Task[Any]]], grace: float) -> float:
    """At shutdown: exit idle held contexts cleanly once the real work is done; the grace left.

    A context held for the app's lifetime (an HTTP client, a database pool) is idle: nobody will
    exit it, so waiting the grace for it only delays the exit, and cancelling it would make its
    ``__aexit__`` see a ``CancelledError``. The real work in flight (*active* minus the idle
    holders) may still use those resources, so it goes first, within *grace*; then each idle
    context is exited as if its caller had left the ``with`` block normally, last entered first
    (each bounded by what is left of the grace, at least 1 s). Returns the grace left for
    :meth:`Dispatcher.stop_all`, which then deals with whatever is still running.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    if not held.idle:
        return grace
    idle_tasks = {holder.task for holder in held.idle}
    real = [task for task in active() if task not in idle_tasks]
    if real and grace > 0:
        await asyncio.wait(real, timeout=grace)
    for holder in reversed(list(held.idle)):
        if holder.signal.set_result(_NO_EXCEPTION) and holder.task is not None:
            await asyncio.wait((holder.task,), timeout=max(deadline - loop.time(), 1.0))
    return max(deadline - loop.time(), 0.0)


class Holder:
    """The one task that enters, holds and exits the context manager on the runtime loop."""

    def __init__(self, source: Source, entered: Oneshot, signal: Oneshot, verdict: Oneshot, held: HeldCount) -> None:
        self.source = source
        self.held = held
        self.entered = entered  # the enter command's own oneshot: completed with the value
        self.signal = signal  # set by the caller with the body's (exc_type, exc, tb)
        self.verdict = verdict  # set here with (suppressed, what __aexit__ raised or None)
        self.task: asyncio.Task[Any] | None = None
        name = getattr(source, "__qualname__", None) or type(source).__qualname__
        self.__qualname__ = f"enter({name})"  # Run.describe() and timeout messages show it

    async def __call__(self) -> None:
        self.task = asyncio.current_task()
        source = self.source
        # Made here, on the runtime loop, so whatever it binds to a loop binds to this one.
        cm: Any = source if hasattr(type(source), "__aenter__") else source()  # type: ignore[operator]
        kind: Any = type(cm)
        if not (hasattr(kind, "__aenter__") and hasattr(kind, "__aexit__")):
            raise TypeError(f"enter() needs an async context manager, not {kind.__name__} {cm!r}")
        value = await kind.__aenter__(cm)
        # From here on __aexit__ must run in this task, whatever happens.
        cancelled: BaseException | None = None
        if not self.entered.set_result(value):
            exc_info = _NO_EXCEPTION  # the caller gave up while we entered: exit at once
        else:
            self.held.count += 1
            self.held.idle.append(self)
            try:
                exc_info = await _asyncio.await_oneshot(self.signal, None, _never, _nothing)
            except BaseException as exc:  # noqa: BLE001 - cancelled while held: its task group, shutdown, an abandoned exit
                cancelled = exc
                exc_info = (type(exc), exc, exc.__traceback__)
            finally:
                self.held.count -= 1
                self.held.idle.remove(self)
        try:
            suppress = bool(await kind.__aexit__(cm, *exc_info))
        except BaseException as exc:
            self.verdict.set_result((False, exc))
            raise
        self.verdict.set_result((suppress, None))
        if cancelled is not None:
            raise cancelled  # the task ends as it was told to, whatever __aexit__ returned
