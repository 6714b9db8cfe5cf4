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

import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from agybridge._backends._asyncio import bounded
from agybridge._select import Oneshot
from agybridge.errors import DeadlockError, OperationTimeoutError

__all__ = ["CommandFuture", "Deadline"]

T = TypeVar("T")


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
