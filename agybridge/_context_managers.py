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

Shutdown while a context manager is held: an *idle* holder (entered, waiting for its
caller's exit, as a client held for the app's lifetime is) is exited once the real work in
flight has finished (or its grace ran out), last entered first, as a clean exit: no
exception reaches ``__aexit__``, and shutdown does not wait the grace for it. A holder still
entering or exiting is real work: it gets the grace, then its task is cancelled and
``__aexit__`` runs, in its own task, with that ``CancelledError``. Either way the caller's
later exit raises :class:`RuntimeShutdownError`. A held context dropped without being exited
is exited when it is garbage collected, with a :class:`ResourceWarning`. In a forked child,
contexts held by the parent are not inherited: their exit there does nothing.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from agybridge import _validate
from agybridge._backends import _asyncio, _trio
from agybridge._select import Oneshot
from agybridge.commands import Run
from agybridge.errors import CommandCancelledError, RuntimeShutdownError

if TYPE_CHECKING:
    from agybridge.runtime import PythonRuntime

__all__ = ["AsyncRemoteContext", "HeldCount", "RemoteContext", "RemoteContextSource", "release_idle"]

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
    """The holders that are idle, waiting for their caller's exit (written on the loop thread).

    A held context manager is an in-flight command, yet no caller waits behind it: the
    runtime subtracts this count when it decides whether a caller may spin for its answer,
    and shutdown exits these at once instead of giving them the grace (:func:`release_idle`).
    """

    __slots__ = ("count", "idle")

    def __init__(self) -> None:
        self.count = 0
        #: In the order they were entered: shutdown exits them last entered first.
        self.idle: list[_Holder] = []


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
        if holder.signal.set_result(_NO_EXCEPTION) and holder.exited is not None:
            await asyncio.wait((holder.exited,), timeout=max(deadline - loop.time(), 1.0))
    return max(deadline - loop.time(), 0.0)


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
            self.held.idle.append(self)
            try:
                exc_info = await _asyncio.await_oneshot(self.signal, None, _never, _nothing)
            except BaseException as exc:  # noqa: BLE001 - cancelled while held: shutdown or an abandoned exit
                cancelled = exc
                exc_info = (type(exc), exc, exc.__traceback__)
            finally:
                self.held.count -= 1
                self.held.idle.remove(self)
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


def _exit_command(runtime: PythonRuntime, holder: _Holder, exc_info: ExcInfo) -> Run | None:
    """Deliver the exit signal; the command that waits for the verdict, or None if the holder is gone."""
    if holder.signal.set_result(exc_info):
        return Run(_await_exit, (holder,), oneshot=runtime.core.Oneshot())
    return None


def _gone(runtime: PythonRuntime, holder: _Holder) -> BaseException:
    what = holder.__qualname__
    if not runtime.is_running:
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
    def __init__(
        self, runtime: PythonRuntime, source: RemoteContextSource[T], timeout: float | None, held: HeldCount
    ) -> None:
        if not (hasattr(type(source), "__aenter__") or callable(source)):
            raise TypeError(
                f"enter() needs an async context manager or a callable returning one, not {type(source).__name__}"
            )
        self._runtime = runtime
        self._timeout = None if timeout is None else _validate.seconds("timeout", timeout)
        core = runtime.core
        self._holder = _Holder(source, core.Oneshot(), core.Oneshot(), held)
        self._used = False
        self._pid = os.getpid()  # the process whose runtime loop holds it

    def _enter_command(self) -> Run:
        if self._used:
            raise RuntimeError(f"{self._holder.__qualname__} can be entered only once")
        self._used = True
        # The runtime's count as of now: one made before a fork and entered in the child counts
        # in the child's rebuilt runtime.
        self._runtime._here()
        self._holder.held = self._runtime._held
        return Run(self._holder, oneshot=self._holder.entered)

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
            value: T = self._runtime.send_command(self._enter_command(), self._timeout)
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
        if self._inherited():
            return False  # held by the parent's loop: nothing of it is here to exit
        cmd = _exit_command(self._runtime, holder, (exc_type, exc, tb))
        if cmd is None:
            raise _gone(self._runtime, holder)
        verdict: tuple[bool, BaseException | None] = self._runtime.send_command(cmd, self._timeout)
        return _verdict(holder, verdict, exc)


class AsyncRemoteContext(_RemoteContextBase[T]):
    """``async with runtime.aenter(make_cm) as value:`` from another asyncio loop or trio.

    Made by :meth:`PythonRuntime.aenter`. As :class:`RemoteContext`, awaiting instead of
    blocking. A trio caller's wait for the exit is shielded from its own cancel scope (trio
    cancellation is level-triggered: a cancelled body could otherwise never be cleaned up); it
    stays bounded by *timeout*.
    """

    async def __aenter__(self) -> T:
        """Enter the context manager on the runtime loop and return what ``__aenter__`` returned.

        Cancelling the await cancels the enter; the holder then exits the context manager if it was
        entered.

        :raises Exception: what making the context manager or its ``__aenter__`` raised.
        :raises OperationTimeoutError: the enter outlasted the timeout.
        :raises RuntimeShutdownError: the runtime is shut down.
        """
        holder = self._holder
        try:
            value: T = await self._runtime.asend_command(self._enter_command(), self._timeout)
        except BaseException as exc:
            holder.signal.set_result((type(exc), exc, exc.__traceback__))
            raise
        return value

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        """Run ``__aexit__`` in the holder task with the body's exception and await its verdict.

        :returns: True if ``__aexit__`` suppressed the body's exception.
        :raises Exception: what ``__aexit__`` raised.
        :raises OperationTimeoutError: the exit outlasted the timeout (the holder is cancelled).
        :raises RuntimeShutdownError: the runtime shut down while the context manager was held.
        """
        holder = self._holder
        if self._inherited():
            return False  # held by the parent's loop: nothing of it is here to exit
        cmd = _exit_command(self._runtime, holder, (exc_type, exc, tb))
        if cmd is None:
            raise _gone(self._runtime, holder)
        if _trio.in_trio_run():
            import trio

            with trio.CancelScope(shield=True):
                verdict = await self._wait(cmd)
        else:
            verdict = await self._wait(cmd)
        return _verdict(holder, verdict, exc)

    async def _wait(self, cmd: Run) -> tuple[bool, BaseException | None]:
        result: Awaitable[tuple[bool, BaseException | None]] = self._runtime.asend_command(cmd, self._timeout)
        return await result
