"""``enter()`` / ``aenter()``: an async context manager held open on the runtime loop.

Entering and exiting an async context manager in two different tasks corrupts its cancel
scopes and task-bound state (anyio issue 381), so both happen in ONE task: the *holder*,
the task of one ``Run`` command. It enters the context manager, hands the value back
through that command's oneshot (the caller's ``with`` statement receives it), then waits
on the runtime loop for the exit signal, runs ``__aexit__`` with the body's exception, and
reports whether it suppressed it. The resource lives on the runtime loop in between, so
``run()`` calls made inside the body can use it.

The caller's exit is two steps: it delivers the body's exception through a thread-safe
oneshot (the *exit signal*, which reaches the holder even once shutdown has closed the
queue), then waits for the holder's verdict with an exit command (a ``Run`` like any
other: timeout, Ctrl-C and cancellation behave as for ``run()``). Giving up on that exit
command (its timeout, Ctrl-C, a cancelled ``await``) cancels the holder too, so
``__aexit__`` is interrupted rather than left running unobserved.

Shutdown while a context manager is held: the holder is an in-flight command, so it gets
the shutdown grace period, then its task is cancelled and ``__aexit__`` runs, in its own
task, with that ``CancelledError``. The caller's later exit then raises
:class:`RuntimeShutdownError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar

from agybridge import _validate
from agybridge._backends import _asyncio, shielded_under_trio
from agybridge._caller.send import Sender
from agybridge._select import Oneshot
from agybridge.commands import Run
from agybridge.errors import CommandCancelledError, RuntimeShutdownError

__all__ = ["AsyncRemoteContext", "HeldCount", "RemoteContext", "RemoteContextSource"]

T = TypeVar("T")

#: An async context manager, or a zero-argument callable that makes one on the runtime loop.
RemoteContextSource = AbstractAsyncContextManager[T] | Callable[[], AbstractAsyncContextManager[T]]

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]

_NO_EXCEPTION: ExcInfo = (None, None, None)


def _never() -> BaseException:  # the holder waits for its exit signal without a deadline
    raise AssertionError("unreachable")


def _nothing() -> None:
    pass


class HeldCount:
    """How many holders are idle, waiting for their caller's exit (written on the loop thread).

    A held context manager is an in-flight command, yet no caller waits behind it: the
    runtime subtracts this count when it decides whether a caller may spin for its answer.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class _Holder:
    """The one task that enters, holds and exits the context manager on the runtime loop."""

    def __init__(self, source: RemoteContextSource[Any], entered: Oneshot, signal: Oneshot, held: HeldCount) -> None:
        self.source = source
        self.held = held
        self.entered = entered  # the enter command's own oneshot: completed with the value
        self.signal = signal  # set by the caller with the body's (exc_type, exc, tb)
        self.task: asyncio.Task[Any] | None = None
        self.exited: asyncio.Future[tuple[bool, BaseException | None]] | None = None
        name = getattr(source, "__qualname__", None) or type(source).__qualname__
        self.__qualname__ = f"enter({name})"  # Run.describe() and timeout messages show it

    async def __call__(self) -> None:
        self.task = asyncio.current_task()
        self.exited = asyncio.get_running_loop().create_future()
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
            try:
                exc_info = await _asyncio.await_oneshot(self.signal, None, _never, _nothing)
            except BaseException as exc:  # noqa: BLE001 - cancelled while held: shutdown or an abandoned exit
                cancelled = exc
                exc_info = (type(exc), exc, exc.__traceback__)
            finally:
                self.held.count -= 1
        try:
            suppress = bool(await kind.__aexit__(cm, *exc_info))
        except BaseException as exc:
            self.exited.set_result((False, exc))
            raise
        self.exited.set_result((suppress, None))
        if cancelled is not None:
            raise cancelled  # the task ends as it was told to, whatever __aexit__ returned


async def _await_exit(holder: _Holder) -> tuple[bool, BaseException | None]:
    """The exit command's task: wait for the holder's verdict; if abandoned, cancel the holder."""
    exited = holder.exited
    assert exited is not None  # the exit signal was accepted, so the holder is past __aenter__
    try:
        return await asyncio.shield(exited)
    except asyncio.CancelledError:
        if holder.task is not None:
            holder.task.cancel()
        raise


def _exit_command(sender: Sender, holder: _Holder, exc_info: ExcInfo) -> Run | None:
    """Deliver the exit signal; the command that waits for the verdict, or None if the holder is gone."""
    if holder.signal.set_result(exc_info):
        return Run(_await_exit, (holder,), oneshot=sender.oneshot())
    return None


def _gone(sender: Sender, holder: _Holder) -> BaseException:
    what = holder.__qualname__
    if not sender.is_running():
        return RuntimeShutdownError(f"{what} was exited by the runtime's shutdown while the caller held it")
    return CommandCancelledError(f"{what} was cancelled on the runtime loop while the caller held it")


def _verdict(holder: _Holder, verdict: tuple[bool, BaseException | None], body_exc: BaseException | None) -> bool:
    suppress, error = verdict
    if isinstance(error, asyncio.CancelledError) and error is not body_exc:
        # Cancelled on the runtime loop by code other than this caller: report it as every
        # command's loop-side cancellation is reported, never as asyncio's own exception.
        raise CommandCancelledError(f"{holder.__qualname__}: __aexit__ was cancelled on the runtime loop") from error
    if error is not None and error is not body_exc:
        raise error
    return suppress  # __aexit__ re-raising the body's own exception is "not suppressed"


class _RemoteContextBase(Generic[T]):
    def __init__(self, sender: Sender, source: RemoteContextSource[T], timeout: float | None, held: HeldCount) -> None:
        if not (hasattr(type(source), "__aenter__") or callable(source)):
            raise TypeError(
                f"enter() needs an async context manager or a callable returning one, not {type(source).__name__}"
            )
        self._sender = sender
        self._timeout = None if timeout is None else _validate.call_timeout("timeout", timeout)
        self._holder = _Holder(source, sender.oneshot(), sender.oneshot(), held)
        self._used = False

    def _enter_command(self) -> Run:
        if self._used:
            raise RuntimeError(f"{self._holder.__qualname__} can be entered only once")
        self._used = True
        return Run(self._holder, oneshot=self._holder.entered)

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
        return value

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        """Run ``__aexit__`` in the holder task with the body's exception and wait for its verdict.

        :returns: True if ``__aexit__`` suppressed the body's exception.
        :raises Exception: what ``__aexit__`` raised.
        :raises OperationTimeoutError: the exit outlasted the timeout (the holder is cancelled).
        :raises RuntimeShutdownError: the runtime shut down while the context manager was held; it
            was exited in its task after the shutdown grace.
        """
        holder = self._holder
        cmd = _exit_command(self._sender, holder, (exc_type, exc, tb))
        if cmd is None:
            raise _gone(self._sender, holder)
        verdict: tuple[bool, BaseException | None] = self._sender.send(cmd, self._timeout)
        return _verdict(holder, verdict, exc)


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
        return value

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        """:meth:`RemoteContext.__exit__`, awaited; under trio the wait is shielded (see the class)."""
        holder = self._holder
        cmd = _exit_command(self._sender, holder, (exc_type, exc, tb))
        if cmd is None:
            raise _gone(self._sender, holder)
        verdict = await shielded_under_trio(self._wait(cmd))
        return _verdict(holder, verdict, exc)

    async def _wait(self, cmd: Run) -> tuple[bool, BaseException | None]:
        result: Awaitable[tuple[bool, BaseException | None]] = self._sender.asend(cmd, self._timeout)
        return await result
