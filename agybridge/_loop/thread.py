"""The runtime's one thread and its event loop: start, run, close, death, fork, exit.

This module knows nothing of commands. It owns the thread's life as a small state machine
(new -> running -> stopping -> closed, or -> died from any running state) and tells its
owner, through the callbacks it was given, when the loop died or is about to close, so
the owner can fail or reap what was in flight. Everything here that touches the loop runs
on the loop thread, except ``start``, ``begin_stop``, ``call_soon_threadsafe`` and the
read-only properties, which any thread may call.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from agybridge._backends._asyncio import new_runtime_loop
from agybridge._loop.signals import block_async_signals
from agybridge._loop.workers import DaemonExecutor
from agybridge._origin import set_thread_owner
from agybridge._select import Oneshot
from agybridge.errors import ForkedRuntimeError, RuntimeDiedError, RuntimeShutdownError

__all__ = ["CLOSED", "DIED", "NEW", "RUNNING", "STOPPING", "LoopThread"]

logger = logging.getLogger("agybridge")

NEW, RUNNING, STOPPING, CLOSED, DIED = "new", "running", "stopping", "closed", "died"

# Every live loop thread, for the atexit hook.
_LIVE: weakref.WeakSet[LoopThread] = weakref.WeakSet()
# Bumped in every forked child: a loop thread made before the fork compares its own copy.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _stop_all_at_exit() -> None:
    """Shut down every runtime a script forgot, so the interpreter exits promptly."""
    for loop_thread in list(_LIVE):
        try:
            loop_thread.run_exit_hook()
        except Exception:
            logger.exception("error while shutting down %r at exit", loop_thread)


class LoopThread:
    """One daemon thread running one asyncio loop, with a default executor for sync work.

    *owner* is what :func:`current_owner` returns on the thread. *on_death(cause, reason)*
    runs on the loop thread when the loop stopped without an orderly shutdown;
    *on_closing()* runs there after every remaining task was cancelled and given time to
    end, just before async generators are shut down and the loop is closed. *on_loop(loop)*
    runs on the thread once the loop exists, before it runs. *on_exit()*
    runs from ``atexit`` while the thread is still live. *stopped* is the oneshot completed
    when the thread ends (made by the owner, from the owner's core).
    """

    def __init__(
        self,
        *,
        name: str,
        use_uvloop: bool,
        worker_threads: int,
        close_grace: float,
        owner: Any,
        on_death: Callable[[BaseException | None, str], None],
        on_closing: Callable[[], None],
        on_exit: Callable[[], None],
        on_loop: Callable[[asyncio.AbstractEventLoop], None] | None = None,
        stopped: Oneshot,
    ) -> None:
        self.name = name
        self._use_uvloop = use_uvloop
        self._worker_threads = worker_threads
        self._close_grace = close_grace
        self._owner = owner
        self._on_death = on_death
        self._on_closing = on_closing
        self._on_exit = on_exit
        self._on_loop = on_loop
        self._lifecycle = threading.Lock()
        self._state = NEW
        self._death: BaseException | None = None
        self._death_reason = ""
        self._generation = _fork_generation
        self._pid = os.getpid()  # a fork made in C runs no at-fork hook: the pid tells it too
        self._thread: threading.Thread | None = None
        self._ident: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: DaemonExecutor | None = None
        #: Completed (with None) when the thread has finished; any thread may wait on it.
        self.stopped = stopped

    def __repr__(self) -> str:
        return f"<LoopThread {self.name!r} {self.state}>"

    # -- read from any thread --------------------------------------------------------------

    @property
    def state(self) -> str:
        """``new``, ``running``, ``stopping``, ``closed`` or ``died``."""
        return self._state

    @property
    def forked(self) -> bool:
        """True in a forked child of the process that made this loop thread."""
        return self._generation != _fork_generation or self._pid != os.getpid()

    def belongs_to(self, pid: int) -> None:
        """Count as made in process *pid*: a runtime with ``after_fork="error"`` refuses in a child."""
        self._pid = pid

    @property
    def is_running(self) -> bool:
        """True between a successful start and the beginning of shutdown (or death)."""
        return self._state == RUNNING and self._generation == _fork_generation

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop, once started (after shutdown it is the closed loop)."""
        return self._loop

    @property
    def started(self) -> bool:
        """True once the thread was started (it may have finished since)."""
        return self._thread is not None

    def is_current(self) -> bool:
        """True when called on this loop's own thread."""
        return self._ident is not None and threading.get_ident() == self._ident

    def check_fork(self) -> None:
        """Raise :class:`ForkedRuntimeError` in a forked child; the thread is not there."""
        if self.forked:
            raise ForkedRuntimeError(
                f"this PythonRuntime was started in a parent process (pid {self._pid}) and its thread does "
                f"not exist in this forked child (pid {os.getpid()}); it has after_fork='error', so it does "
                "not restart here: create a new PythonRuntime in the child, or use after_fork='restart'"
            )

    def closed_error(self) -> RuntimeShutdownError:
        """The error a refused caller gets: shut down, or died (naming why)."""
        if self._state == DIED:
            error: RuntimeShutdownError = RuntimeDiedError(
                f"the runtime thread died ({self._death_reason}); create a new PythonRuntime"
            )
            error.__cause__ = self._death
            return error
        return RuntimeShutdownError("the runtime is shut down; it accepts no further commands")

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> bool:
        """Schedule ``fn(*args)`` on the loop; False when there is no open loop to run it."""
        loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            return False  # the loop is closed
        return True

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread and its loop unless running; raise if it can never run again."""
        self.check_fork()
        if self._state == RUNNING:
            return
        with self._lifecycle:
            if self._state == RUNNING:
                return
            if self._state != NEW:
                raise self.closed_error()
            ready = threading.Event()
            failure: list[BaseException] = []
            # An empty context: the thread must not inherit its creator's context variables
            # (free-threaded 3.14 copies them into new threads); each command carries its own.
            thread = threading.Thread(
                target=contextvars.Context().run, args=(self._main, ready, failure), name=self.name, daemon=True
            )
            thread.start()
            ready.wait()
            if failure:
                self._state = DIED
                self._death, self._death_reason = failure[0], f"it failed to start: {failure[0]!r}"
                raise RuntimeDiedError(f"the runtime thread failed to start: {failure[0]!r}") from failure[0]
            self._thread = thread
            self._state = RUNNING
            _LIVE.add(self)

    def begin_stop(self, in_lock: Callable[[str], None]) -> str:
        """Move to ``stopping`` (or ``closed`` if never started); return the previous state.

        ``in_lock(previous)`` runs under the lifecycle lock, so that refusing new work (the
        owner closes its queue there) and the state change are one atomic step. A forked
        child's copy just becomes ``closed``: its thread does not exist.
        """
        with self._lifecycle:
            previous = self._state
            if self.forked:
                self._state = CLOSED
                return CLOSED
            if previous in (NEW, RUNNING):
                in_lock(previous)
                self._state = CLOSED if previous == NEW else STOPPING
            return previous

    def disown(self) -> str:
        """In a forked child, on this copy of the parent's loop thread: never act here again.

        Returns the parent's state at the fork. If the fork was made on the runtime thread its
        loop may run on in the child, and its end must not report a death or close anything.
        """
        state = self._state
        self._on_death = lambda _cause, _reason: None
        self._on_closing = self._on_exit = lambda: None
        self._state = CLOSED
        return state

    def end_as(self, other: LoopThread, state: str) -> None:
        """A new, never started thread ends as the parent's had (shut down, or dead, at the fork)."""
        self.begin_stop(lambda _previous: None)
        if state == DIED:
            with self._lifecycle:
                self._state = DIED
                self._death, self._death_reason = other._death, other._death_reason

    def finish_stop(self) -> None:
        """On the loop thread, at the end of an orderly shutdown: mark closed, stop the loop."""
        with self._lifecycle:
            self._state = CLOSED
        _LIVE.discard(self)
        assert self._loop is not None
        self._loop.stop()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to finish; True if it did (or never started)."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return thread is None
        thread.join(timeout)
        return not thread.is_alive()

    def run_exit_hook(self) -> None:
        """Called at interpreter exit for a live loop thread (see :func:`_stop_all_at_exit`)."""
        if self._state in (CLOSED, DIED) or self.forked or sys.is_finalizing():
            return  # nothing to do, or too late to block: the daemon thread dies with us
        self._on_exit()

    # -- the thread itself ------------------------------------------------------------------

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        if self._use_uvloop:
            try:
                import uvloop
            except ImportError:
                pass
            else:
                loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
                return loop
        return new_runtime_loop()

    def _main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            block_async_signals()  # Ctrl-C and a server's signals go to a thread that acts on them
            set_thread_owner(self._owner)
            loop = self._new_loop()
            asyncio.set_event_loop(loop)
            # Daemon workers: a tool still running never holds the process's exit.
            self._executor = DaemonExecutor(self._worker_threads, "agy-bridge-worker")
            loop.set_default_executor(self._executor)
            if self._on_loop is not None:
                self._on_loop(loop)  # on this thread, before the loop runs
            self._loop = loop
            self._ident = threading.get_ident()
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            failure.append(exc)
            ready.set()
            return
        ready.set()
        cause: BaseException | None = None
        try:
            loop.run_forever()
        except BaseException as exc:  # noqa: BLE001 - the thread is dying: record why
            cause = exc
        finally:
            try:
                if cause is not None or self._state not in (STOPPING, CLOSED):
                    self._die(cause)
                self._close_loop(loop)
            finally:
                set_thread_owner(None)
                self.stopped.set_result(None)

    def _die(self, cause: BaseException | None) -> None:
        """The loop stopped without an orderly shutdown: record why and tell the owner."""
        reason = repr(cause) if cause is not None else "its event loop was stopped (loop.stop()) outside shutdown()"
        with self._lifecycle:
            self._state = DIED
            self._death, self._death_reason = cause, reason
        _LIVE.discard(self)
        logger.error("the agybridge runtime thread died: %s", reason, exc_info=cause)
        self._on_death(cause, reason)

    def _close_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending and not loop.is_running():
                loop.run_until_complete(asyncio.wait(pending, timeout=max(self._close_grace, 0.5)))
            self._on_closing()
            loop.run_until_complete(loop.shutdown_asyncgens())
        except BaseException:
            logger.exception("error while closing the runtime loop")
        finally:
            if self._executor is not None:
                # Never wait for a hung tool thread; queued tool calls are dropped. Idle
                # workers leave at once: wait a moment for them, so no thread is left behind.
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor.join(timeout=1.0)
            asyncio.set_event_loop(None)
            loop.close()
