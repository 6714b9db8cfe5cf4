"""``enter()`` / ``aenter()``: an async context manager held open on the runtime loop.

Entering and exiting an async context manager in two different tasks corrupts its cancel
scopes and task-bound state (anyio issue 381), so both happen in ONE task: the *holder*,
the task of one ``Run`` command. It enters the context manager, hands the value back
through that command's oneshot (the caller's ``with`` statement receives it), then waits
on the runtime loop for the exit signal, runs ``__aexit__`` with the body's exception, and
reports whether it suppressed it. The resource lives on the runtime loop in between, so
``run()`` calls made inside the body can use it.

The caller's exit is two steps, and neither goes through the command queue, so an exit is
never refused (not by ``max_in_flight``, not by a shutdown that closed the queue): it
delivers the body's exception through a thread-safe oneshot (the *exit signal*), then waits
for the holder's *verdict*, another thread-safe oneshot, bounded by the timeout. Giving up
on that wait (its timeout, Ctrl-C, a cancelled ``await``) cancels the holder task on the
loop, so ``__aexit__`` is interrupted rather than left running unobserved.

If the holder was cancelled on the loop before the caller's exit (its own task group
cancels it when a child fails, or shutdown's grace ran out), the signal cannot be
delivered; the caller still waits for the verdict, so an exception ``__aexit__`` raised
(the task group's ``ExceptionGroup``) reaches the caller's ``with`` with its own type.

Shutdown while a context manager is held: an *idle* holder (entered, waiting for its
caller's exit, as a client held for the app's lifetime is) is exited once the real work in
flight has finished (or its grace ran out), last entered first, as a clean exit: no
exception reaches ``__aexit__``, and shutdown does not wait the grace for it. A holder still
entering or exiting is real work: it gets the grace, then its task is cancelled and
``__aexit__`` runs, in its own task, with that ``CancelledError``. Either way the caller's
later exit raises :class:`RuntimeShutdownError`. A held context dropped without being exited
is exited when it is garbage collected, with a :class:`ResourceWarning`. In a forked child,
contexts held by the parent are not inherited: their exit there does nothing.

This module is the caller's side; the holder itself runs on the runtime loop and lives in
:mod:`agybridge._loop.holder`, made through the send path (``Sender.make_holder``).
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Generic, TypeVar

from agybridge import _validate
from agybridge._backends import await_oneshot, shielded_under_trio
from agybridge._caller.send import HeldContext, Sender
from agybridge.commands import Run
from agybridge.errors import CommandCancelledError, DeadlockError, OperationTimeoutError, RuntimeShutdownError

__all__ = ["AsyncRemoteContext", "RemoteContext", "RemoteContextSource"]

T = TypeVar("T")

#: An async context manager, or a zero-argument callable that makes one on the runtime loop.
RemoteContextSource = AbstractAsyncContextManager[T] | Callable[[], AbstractAsyncContextManager[T]]

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]

_NO_EXCEPTION: ExcInfo = (None, None, None)


Verdict = tuple[bool, BaseException | None]


def _gone(sender: Sender, holder: HeldContext) -> BaseException:
    what = holder.__qualname__
    if not sender.is_running():
        return RuntimeShutdownError(f"{what} was exited by the runtime's shutdown while the caller held it")
    return CommandCancelledError(f"{what} was cancelled on the runtime loop while the caller held it")


def _verdict(
    sender: Sender, holder: HeldContext, verdict: Verdict, body_exc: BaseException | None, delivered: bool
) -> bool:
    suppress, error = verdict
    if error is not None and error is not body_exc and not isinstance(error, asyncio.CancelledError):
        raise error  # __aexit__'s own error: a task group's ExceptionGroup keeps its type
    if not delivered:
        raise _gone(sender, holder)  # cancelled on the loop before the caller's exit reached it
    if isinstance(error, asyncio.CancelledError) and error is not body_exc:
        # Cancelled on the runtime loop by code other than this caller: report it as every
        # command's loop-side cancellation is reported, never as asyncio's own exception.
        raise CommandCancelledError(f"{holder.__qualname__}: __aexit__ was cancelled on the runtime loop") from error
    return suppress  # __aexit__ re-raising the body's own exception is "not suppressed"


class _RemoteContextBase(Generic[T]):
    def __init__(self, sender: Sender, source: RemoteContextSource[T], timeout: float | None) -> None:
        if not (hasattr(type(source), "__aenter__") or callable(source)):
            raise TypeError(
                f"enter() needs an async context manager or a callable returning one, not {type(source).__name__}"
            )
        self._sender = sender
        self._timeout = None if timeout is None else _validate.call_timeout("timeout", timeout)
        self._holder: HeldContext = sender.make_holder(source)
        self._used = False
        self._pid = os.getpid()  # the process whose runtime loop holds it
        self._entered = False
        self._exited = False
        self._cmd: Run | None = None

    def _enter_command(self) -> Run:
        if self._used:
            raise RuntimeError(f"{self._holder.__qualname__} can be entered only once")
        self._used = True
        # The runtime's parts as of now: one made before a fork and entered in the child counts
        # in the child's rebuilt runtime.
        self._sender.here()
        self._holder.held = self._sender.held
        self._cmd = Run(self._holder, oneshot=self._holder.entered)
        return self._cmd

    def _inherited(self) -> bool:
        """True in a forked child: the context is held on the parent's loop, not here."""
        return self._pid != os.getpid()

    def __del__(self) -> None:
        # Dropped while held: exit it now, cleanly, and say so, as an unclosed file does.
        holder = getattr(self, "_holder", None)
        if holder is None or self._inherited() or not holder.entered.done() or holder.signal.done():
            return
        if holder.signal.set_result(_NO_EXCEPTION):
            warnings.warn(
                f"{holder.__qualname__} was held on the runtime loop and dropped without being exited; it "
                "is exited now. Exit it with 'with' / 'async with', or keep it for the app's lifetime "
                "(shutdown exits it)",
                ResourceWarning,
                stacklevel=2,
            )

    def _begin_exit(self, exc_info: ExcInfo) -> bool:
        """Check the exit is legal, then deliver the body's exception; True if the holder got it."""
        what = self._holder.__qualname__
        if not self._entered:
            raise RuntimeError(f"{what} was exited before it was entered (or its enter failed)")
        if self._exited:
            raise RuntimeError(f"{what} was already exited")
        self._exited = True
        return bool(self._holder.signal.set_result(exc_info))

    def _abort_holder(self) -> None:
        """The caller gave up waiting for the verdict: cancel the holder task on the loop."""
        if self._cmd is not None:
            self._sender.abort(self._cmd)

    def _exit_timeout(self, limit: float) -> OperationTimeoutError:
        return OperationTimeoutError(f"the exit of {self._holder.__qualname__} did not complete within {limit} s")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._holder.__qualname__}>"


class RemoteContext(_RemoteContextBase[T]):
    """``with runtime.enter(make_cm) as value:`` from plain threads (blocking).

    Made by :meth:`PythonRuntime.enter`. ``__aenter__`` and ``__aexit__`` run in one task on the
    runtime loop (the holder); the body's exception is passed to ``__aexit__``. *timeout* bounds
    the enter and the exit round trip each (default: the operation timeout). Single use; enter
    and exit it on the same thread, never the runtime's own (:class:`DeadlockError`).
    """

    def __enter__(self) -> T:
        """Enter the context manager on the runtime loop and return what ``__aenter__`` returned.

        :raises Exception: what making the context manager or its ``__aenter__`` raised.
        :raises OperationTimeoutError: the enter outlasted the timeout (the holder is cancelled and
            exits the context manager if it was entered).
        :raises DeadlockError: called on the runtime's own thread.
        :raises RuntimeShutdownError: the runtime is shut down.
        """
        holder = self._holder
        try:
            value: T = self._sender.send(self._enter_command(), self._timeout)
        except BaseException as exc:
            # The enter failed or was given up. If the value got in just before (a Ctrl-C
            # landing after the result), nobody will exit it: tell the holder to exit now.
            holder.signal.set_result((type(exc), exc, exc.__traceback__))
            raise
        self._entered = True
        return value

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        """Run ``__aexit__`` in the holder task with the body's exception and wait for its verdict.

        :returns: True if ``__aexit__`` suppressed the body's exception.
        :raises Exception: what ``__aexit__`` raised, with its own type (an ``ExceptionGroup`` of a
            task group whose child failed), also when that cancelled the holder before this exit.
        :raises OperationTimeoutError: the exit outlasted the timeout (the holder is cancelled).
        :raises RuntimeError: exited before it was entered, or a second time.
        :raises DeadlockError: called on the runtime's own thread.
        :raises RuntimeShutdownError: the runtime shut down while the context manager was held; it
            was exited in its task after the shutdown grace.
        """
        sender = self._sender
        if self._inherited():
            return False  # held by the parent's loop: nothing of it is here to exit
        if sender.on_loop_thread():
            raise DeadlockError(
                f"{self._holder.__qualname__} was exited on the runtime's own thread, where waiting for "
                "its __aexit__ can never finish; use 'async with runtime.aenter(...)' there"
            )
        delivered = self._begin_exit((exc_type, exc, tb))
        shot = self._holder.verdict
        limit = sender.limit(self._timeout)
        try:
            if not shot.wait(limit, 0.0) and shot.set_exception(self._exit_timeout(limit)):
                self._abort_holder()
        except Exception:
            raise
        except BaseException:
            if shot.cancel():  # Ctrl-C while waiting: __aexit__ must not run on unobserved
                self._abort_holder()
            raise
        verdict: Verdict = shot.result(0)
        return _verdict(sender, self._holder, verdict, exc, delivered)


class AsyncRemoteContext(_RemoteContextBase[T]):
    """``async with runtime.aenter(make_cm) as value:`` from another asyncio loop or trio.

    Made by :meth:`PythonRuntime.aenter`. As :class:`RemoteContext`, awaiting instead of
    blocking. A trio caller's wait for the exit is shielded from its own cancel scope (trio
    cancellation is level-triggered: a cancelled body could otherwise never be cleaned up); it
    stays bounded by *timeout*.
    """

    async def __aenter__(self) -> T:
        """:meth:`RemoteContext.__enter__`, awaited; cancelling the await cancels the enter (the holder
        then exits the context manager if it was entered)."""
        holder = self._holder
        try:
            value: T = await self._sender.asend(self._enter_command(), self._timeout)
        except BaseException as exc:
            holder.signal.set_result((type(exc), exc, exc.__traceback__))
            raise
        self._entered = True
        return value

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        """:meth:`RemoteContext.__exit__`, awaited; under trio the wait is shielded (see the class)."""
        if self._inherited():
            return False  # held by the parent's loop: nothing of it is here to exit
        delivered = self._begin_exit((exc_type, exc, tb))
        verdict = await shielded_under_trio(self._wait())
        return _verdict(self._sender, self._holder, verdict, exc, delivered)

    async def _wait(self) -> Verdict:
        limit = self._sender.limit(self._timeout)
        verdict: Verdict = await await_oneshot(
            self._holder.verdict, limit, lambda: self._exit_timeout(limit), self._abort_holder
        )
        return verdict
