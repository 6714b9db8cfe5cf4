"""``submit()``: a command whose outcome is a :class:`concurrent.futures.Future`.

The future is chained to the command's :class:`~agybridge.Oneshot` by a done callback, so
no thread is parked per future; ``concurrent.futures.wait``/``as_completed`` and
``asyncio.wrap_future`` work on it as on any executor's future.

The exactly-once rule is the oneshot's: whoever completes the oneshot first decides the
command's outcome, and the future only mirrors it. The future stays PENDING until then
(it never enters RUNNING, because a ``concurrent.futures.Future`` can only be cancelled
while pending), and :meth:`CommandFuture.cancel` first tries to cancel the oneshot: if
that wins, the task on the runtime loop is aborted and the future is cancelled; if a
result (or error) got there first, the cancel loses, returns False and leaves the result.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from agybridge._backends._asyncio import bounded
from agybridge._fork import process_lock
from agybridge._select import Oneshot
from agybridge.errors import DeadlockError, OperationTimeoutError

__all__ = ["CommandFuture", "Deadline"]

T = TypeVar("T")


_LOGGER = logging.getLogger("concurrent.futures")  # where concurrent.futures logs a failing callback

_Callbacks = tuple[concurrent.futures.Future[Any], list[Callable[[Any], object]]]


class _CallbackThread:
    """The one daemon thread that runs the done callbacks of futures completed on a runtime loop.

    A callback running on the runtime loop would stall every agent for as long as it takes;
    here it delays only the callbacks queued behind it. Started on first use (and again in a
    forked child, where the parent's thread does not exist); at interpreter exit, callbacks
    already queued get up to :data:`EXIT_DRAIN` seconds to run.

    Its lock and queue are this process's own: a child of a fork made while the parent's
    thread held them (they are held for a few instructions per callback) would otherwise wait
    forever on its first callback, so a child makes new ones, once, on first use (under
    :func:`~agybridge._fork.process_lock`, so its racing threads agree); the parent's queued
    callbacks are not the child's to run.
    """

    EXIT_DRAIN = 1.0

    def __init__(self) -> None:
        self._pid = -1
        self._here()
        atexit.register(self.drain, self.EXIT_DRAIN)

    def _here(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        with process_lock("future-callbacks"):
            if self._pid == pid:
                return  # another thread of this child made them
            self._jobs: queue.SimpleQueue[_Callbacks] = queue.SimpleQueue()
            self._lock = threading.Lock()
            self._thread: threading.Thread | None = None
            self._pending = 0
            self._idle = threading.Condition(self._lock)
            self._pid = pid

    def run(self, future: concurrent.futures.Future[Any], callbacks: list[Callable[[Any], object]]) -> None:
        self._here()
        with self._lock:
            self._pending += 1
            thread = self._thread
            if thread is None or not thread.is_alive():
                thread = self._thread = threading.Thread(
                    target=self._work, name="agy-bridge-future-callbacks", daemon=True
                )
                thread.start()
        self._jobs.put((future, callbacks))

    def _work(self) -> None:
        while True:
            future, callbacks = self._jobs.get()
            for callback in callbacks:
                try:
                    callback(future)
                except BaseException:  # even Ctrl-C's: logged as concurrent.futures does, the thread goes on
                    _LOGGER.exception("exception calling callback for %r", future)
            del future, callbacks
            with self._lock:
                self._pending -= 1
                if not self._pending:
                    self._idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for the queued callbacks to run; True if they all did."""
        self._here()
        with self._lock:
            return self._idle.wait_for(lambda: not self._pending, timeout)


_CALLBACKS = _CallbackThread()


class CommandFuture(concurrent.futures.Future[T]):
    """The future of one submitted command; ``cancel()`` cancels the command's task.

    Made by :meth:`PythonRuntime.submit` and :meth:`Wrapped.submit`. A
    :class:`concurrent.futures.Future`: ``concurrent.futures.wait``, ``as_completed``, done
    callbacks and :func:`asyncio.wrap_future` work on it, from any thread. It stays pending until
    the command's outcome is in (it never enters RUNNING, so it can be cancelled until then) and
    mirrors that outcome exactly once.

    Waiting in :meth:`result` or :meth:`exception` is interrupted by Ctrl-C (or another signal
    handler's exception) as a blocking ``run()`` is, and that cancels the command too. A plain
    ``TimeoutError`` from ``result(timeout)`` only stops waiting, as for any
    ``concurrent.futures.Future``; the command keeps its own operation timeout.

    **Where done callbacks run.** Never on the runtime loop (a slow callback there would stall
    every agent): when the loop completes the future, its callbacks run, in order, on one daemon
    thread of the process (``agy-bridge-future-callbacks``), after the future's waiters were
    woken. A callback added to a future already done runs at once on the adding thread (on the
    runtime's own thread, it goes to that daemon thread too), and a future a caller completes
    (:meth:`cancel`) runs its callbacks on that caller's thread, as every
    ``concurrent.futures.Future`` does. A callback that raises is logged, never propagated.
    """

    def __init__(self, shot: Oneshot, abort: Callable[[], object], on_loop_thread: Callable[[], bool]) -> None:
        super().__init__()
        self._shot = shot
        self._abort = abort
        self._on_loop_thread = on_loop_thread
        shot.add_done_callback(self._mirror)

    def _mirror(self, shot: Oneshot) -> None:
        # Runs once, on the thread that completed the oneshot.
        if shot.cancelled():
            super().cancel()
            self.set_running_or_notify_cancel()  # tells wait()/as_completed() waiters
        elif self.set_running_or_notify_cancel():
            exc = shot.exception(0)
            if exc is None:
                self.set_result(shot.result(0))
            else:
                self.set_exception(exc)

    def _invoke_callbacks(self) -> None:
        # concurrent.futures runs the callbacks on the completing thread: not on the loop.
        if self._on_loop_thread():
            callbacks = list(self._done_callbacks)  # type: ignore[attr-defined]
            if callbacks:
                _CALLBACKS.run(self, callbacks)
            return
        super()._invoke_callbacks()  # type: ignore[misc]

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        """Call ``fn(future)`` once the future is done; see the class for the thread it runs on."""
        if self.done() and self._on_loop_thread():
            _CALLBACKS.run(self, [fn])
            return
        super().add_done_callback(fn)

    def cancel(self) -> bool:
        """Cancel the command unless its outcome is already decided.

        If the command has no outcome yet, its task is cancelled on the runtime loop (a command still
        queued never starts). Callable from any thread or loop; never blocks.

        :returns: True if the command is (now or already) cancelled, False if its result or error won.
        """
        if self._shot.cancel():
            self._abort()  # _mirror has already cancelled this future, on this thread
            return True
        return self._shot.cancelled()  # cancelled before (True), or a result won (False)

    def result(self, timeout: float | None = None) -> T:
        """The command's result, waiting up to *timeout* seconds.

        Call it from any thread but the runtime's own while the command is pending (on the runtime
        loop, ``await asyncio.wrap_future(future)`` instead).

        :param timeout: seconds to wait; None waits until the outcome is in.
        :returns: what the submitted function returned.
        :raises Exception: the command's exception (the function's own, or one of :meth:`PythonRuntime.run`'s).
        :raises concurrent.futures.CancelledError: the command was cancelled.
        :raises TimeoutError: *timeout* passed first (the command keeps running).
        :raises DeadlockError: called on the runtime's own thread while the command is pending.
        """
        self._check_not_on_loop()
        try:
            return super().result(timeout)
        except Exception:
            raise
        except BaseException:
            self.cancel()  # Ctrl-C while waiting: the command must not keep running
            raise

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The command's exception, or None after a result; waits like :meth:`result`.

        :param timeout: seconds to wait; None waits until the outcome is in.
        :raises concurrent.futures.CancelledError: the command was cancelled.
        :raises TimeoutError: *timeout* passed first.
        :raises DeadlockError: called on the runtime's own thread while the command is pending.
        """
        self._check_not_on_loop()
        try:
            return super().exception(timeout)
        except Exception:
            raise
        except BaseException:
            self.cancel()
            raise

    def _check_not_on_loop(self) -> None:
        if not self.done() and self._on_loop_thread():
            raise DeadlockError(
                "waiting for a submitted command's future on the runtime's own thread can never "
                "finish; await asyncio.wrap_future(future) there, or wait from another thread"
            )


class Deadline:
    """``fn`` bounded on the runtime loop by *limit* seconds (the command's operation timeout).

    A future has no blocked caller to time it out, so the deadline is kept where the work
    runs: past it the command fails with :class:`OperationTimeoutError`, as a timed-out
    ``run()`` does, and its task is cancelled. ``__qualname__`` names *fn*, so messages and
    ``Run.describe()`` show the user's function.
    """

    __slots__ = ("__qualname__", "fn", "limit")

    def __init__(self, fn: Callable[..., Awaitable[Any]], limit: float) -> None:
        self.fn = fn
        self.limit = limit
        self.__qualname__ = getattr(fn, "__qualname__", None) or repr(fn)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        awaitable = self.fn(*args, **kwargs)
        if not isinstance(awaitable, Awaitable):
            raise TypeError(
                f"submit() expects a coroutine function, but {self.__qualname__} returned "
                f"{type(awaitable).__name__} {awaitable!r}, which is not awaitable"
            )
        limit = self.limit
        return await bounded(
            awaitable,
            limit,
            lambda: OperationTimeoutError(
                f"Run({self.__qualname__}) did not complete within the {limit} s operation timeout"
            ),
        )
