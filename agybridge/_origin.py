"""Who code runs for: the runtime that owns a thread, and the caller behind a command.

Two facts travel with code that runs on behalf of someone else, and both wings read them:

* **The owner.** A runtime's loop thread and the worker threads it starts run that
  runtime's callbacks; :func:`current_owner` names it there (so ``BRIDGE_STATE`` finds that
  runtime's registry and its core makes the oneshots), and :func:`run_as_owner` carries the
  name into a worker.
* **The caller.** The caller of a command is recorded in the command's context (one
  context variable, set before the command is submitted), so every tool call the command
  causes, in any task the agent spawns, finds it. A *thread-sensitive* sync tool runs on
  that caller's thread: a blocked sync caller serves its own tool calls while it waits (as
  asgiref's ``CurrentThreadExecutor`` does for Django); an asyncio or trio caller gets the
  call scheduled on its loop's thread. A caller that stopped waiting fails the call with
  :class:`CallerGoneError` instead of it running elsewhere. A *blocking* caller also names
  the loop it blocks, so a tool call that needs that loop fails at once (a deadlock).

The send path (:mod:`agybridge._caller.send`) records callers; the loop's callbacks
(:mod:`agybridge._loop.callbacks`) read them. Nothing here imports either wing.
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol

from agybridge._backends import _seen, current_scheduler, host_key
from agybridge.errors import CallerGoneError

__all__ = [
    "INTERRUPTS",
    "BlockingCaller",
    "Caller",
    "LendsSlots",
    "LoopCaller",
    "Sent",
    "Work",
    "current_caller",
    "current_owner",
    "host_key",
    "mark_worker_thread",
    "note_thread_sensitive",
    "on_a_runtime_loop",
    "run_as_owner",
    "set_caller",
    "thread_sensitive_seen",
    "worker_pool",
]

#: The caller of the command whose context this is (unset: nobody needs to know).
_CALLER: ContextVar[Caller | None] = ContextVar("agybridge_caller", default=None)

#: Becomes True for good once any thread-sensitive tool or state exists; until then the
#: callers skip the per-chat look-up entirely.
_thread_sensitive = False

# What runs on each loop thread: callbacks made there (tools, hooks) find their runtime.
_on_thread = threading.local()


class Sent(Protocol):
    """What a caller object needs of the command it waits for."""

    @property
    def oneshot(self) -> Any: ...

    def describe(self) -> str: ...


def current_owner() -> Any:
    """The owner (the runtime) of the loop thread this is called on, or None elsewhere."""
    return getattr(_on_thread, "owner", None)


def set_thread_owner(owner: Any) -> None:
    """Name *owner* as the runtime of the calling thread (its loop thread, for its lifetime)."""
    _on_thread.owner = owner
    _on_thread.runs_a_runtime = owner is not None
    _on_thread.runtime_pid = os.getpid()


def on_a_runtime_loop() -> bool:
    """Whether this thread is some runtime's loop thread (never a place for a caller's tools).

    In a child forked from a runtime thread, that thread is a plain caller: its loop is the
    parent's and does not run there.
    """
    return (
        bool(getattr(_on_thread, "runs_a_runtime", False)) and getattr(_on_thread, "runtime_pid", None) == os.getpid()
    )


def run_as_owner(owner: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)`` in a worker thread as *owner*'s: :func:`current_owner` names it meanwhile.

    A sync tool, hook or policy runs in a worker thread, yet it is still a callback of that
    runtime (looking up ``BRIDGE_STATE`` must find the runtime's own registry there too).
    """
    previous = getattr(_on_thread, "owner", None)
    _on_thread.owner = owner
    try:
        return fn(*args)
    finally:
        _on_thread.owner = previous


class LendsSlots(Protocol):
    """A worker pool whose worker may lend its slot while it blocks in a send (see workers.py)."""

    def lend(self) -> None: ...

    def reclaim(self) -> None: ...


def mark_worker_thread(pool: LendsSlots) -> None:
    """Name *pool* as the pool the calling (worker) thread belongs to, for its lifetime."""
    _on_thread.pool = pool
    _on_thread.pool_pid = os.getpid()


def worker_pool() -> LendsSlots | None:
    """The runtime worker pool this thread belongs to, or None (not a worker thread).

    A thread that forked is the only thread of its child, and no pool's: the mark it copied
    names a pool of the parent, whose workers do not exist there.
    """
    pool: LendsSlots | None = getattr(_on_thread, "pool", None)
    if pool is not None and getattr(_on_thread, "pool_pid", None) != os.getpid():
        return None
    return pool


def note_thread_sensitive() -> None:
    """A thread-sensitive tool or state was made: chats start looking for them."""
    global _thread_sensitive
    _thread_sensitive = True
    _seen.enable()


def thread_sensitive_seen() -> bool:
    """Whether any thread-sensitive tool or state was ever made in this process."""
    return _thread_sensitive


def current_caller() -> Caller | None:
    """The caller recorded in the current (command's) context, or None."""
    return _CALLER.get()


def set_caller(ctx: contextvars.Context, caller: Caller | None) -> None:
    """Record *caller* in *ctx*, the context a command (or a callback) runs in."""
    ctx.run(_CALLER.set, caller)


#: What a blocked sync caller does not swallow when it runs a tool for its command: Ctrl-C
#: and ``sys.exit()`` leave the caller's call as they would while it waits.
INTERRUPTS = (KeyboardInterrupt, SystemExit)


def _unchanged(exc: BaseException) -> BaseException:
    return exc


class Work:
    """One thread-sensitive tool call, to be run on the caller's thread.

    *convert* turns what the tool raised into what the tool call fails with (the loop's
    containment: a ``SystemExit`` must not cross the bridge as it is); an interrupt on a
    blocked sync caller's thread is not converted but re-raised there (see :meth:`run`).
    """

    __slots__ = ("convert", "ctx", "fn", "shot")

    def __init__(
        self,
        fn: Callable[[], Any],
        ctx: contextvars.Context,
        shot: Any,
        convert: Callable[[BaseException], BaseException] = _unchanged,
    ) -> None:
        self.fn = fn
        self.ctx = ctx
        self.shot = shot
        self.convert = convert

    def run(self, caller_shot: Any, *, reraise: bool) -> None:
        """Run the call (on the caller's thread) unless it was withdrawn or its caller left.

        With *reraise* (a blocked sync caller), a ``KeyboardInterrupt`` or ``SystemExit`` is
        raised on, uncompleted: the caller leaves its call as it would while waiting, and
        cancels its command (and so this tool call) on the loop; the agent never gets a
        ``ToolError`` it could swallow.
        """
        if self.shot.done():
            return  # the tool call was cancelled before it started
        if caller_shot.done():
            self.shot.set_exception(CallerGoneError("the caller stopped waiting before its tool call could run"))
            return
        try:
            result = self.ctx.run(self.fn)
        except BaseException as exc:
            if reraise and isinstance(exc, INTERRUPTS):
                raise
            self.shot.set_exception(self.convert(exc))
        else:
            self.shot.set_result(result)


class Caller:
    """Base of the caller kinds; ``blocked_host`` is the loop a blocking caller holds up."""

    blocked_host: object | None = None
    shot: Any

    def post(self, work: Work) -> None:
        """Run *work* on the caller's thread, or fail it with :class:`CallerGoneError`."""
        raise NotImplementedError

    def gone(self) -> BaseException | None:
        """The error for a call that can no longer reach this caller, or None."""
        raise NotImplementedError


class BlockingCaller(Caller):
    """A sync caller blocked in ``send_command``; it runs posted work while it waits.

    *abort* (given the command) asks the loop to cancel the command's task: an interrupt
    while waiting or while running a posted tool call cancels the command first, then the
    tool calls, so the agent sees its call cancelled.
    """

    def __init__(
        self,
        cmd: Sent,
        blocked_host: object | None,
        serves: bool,
        abort: Callable[[Any], object] | None = None,
        pool: LendsSlots | None = None,
    ) -> None:
        self.shot = cmd.oneshot
        self._pool = pool  # a worker thread's pool: its slot is lent while this caller waits
        self.label = cmd.describe()
        self.blocked_host = blocked_host
        self.thread = threading.current_thread().name
        self._cmd = cmd
        self._abort = abort
        self._inbox: queue.SimpleQueue[Work | None] | None = queue.SimpleQueue() if serves else None
        self._lock = threading.Lock()
        self._closed = False
        self._current: Work | None = None

    def gone(self) -> BaseException | None:
        if self._closed or self.shot.done():
            return CallerGoneError(
                f"the thread {self.thread!r} that sent {self.label} stopped waiting (it timed out, was "
                "interrupted or got its answer), so its thread-sensitive tool call cannot run there"
            )
        return None

    def post(self, work: Work) -> None:
        with self._lock:
            error = self.gone() if self._inbox is not None else CallerGoneError("this caller serves no tool calls")
            if error is None and self._inbox is not None:
                self._inbox.put(work)
                return
        work.shot.set_exception(error)

    def wait(self, limit: float, spin: float) -> bool:
        """Wait for the command's outcome (True) or *limit* seconds (False), serving posted work.

        On a worker thread of a runtime, the worker's pool slot is lent for the wait: a sync
        tool blocked in a nested ``chat()`` never starves the tools that chat needs.
        """
        pool = self._pool
        if pool is not None:
            pool.lend()
        try:
            if self._inbox is None:
                return bool(self.shot.wait(limit, spin))
            return self._serve(self._inbox, limit)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self.interrupted()
            raise
        finally:
            self._close()
            if pool is not None:
                pool.reclaim()

    def interrupted(self) -> None:
        """Ctrl-C (or another signal handler's exception) on this thread: cancel the command on
        the loop, exactly once, before the tool call it interrupted (if any)."""
        if self.shot.cancel() and self._abort is not None:
            self._abort(self._cmd)
        current = self._current
        if current is not None:
            current.shot.cancel()

    def _serve(self, inbox: queue.SimpleQueue[Work | None], limit: float) -> bool:
        # The oneshot's completion and a posted call both arrive in the inbox, so one blocking
        # get() wakes for either; the fast path (no thread-sensitive tool) never gets here.
        self.shot.add_done_callback(lambda _shot: inbox.put(None))
        deadline = time.monotonic() + limit
        while True:
            remaining = min(deadline - time.monotonic(), threading.TIMEOUT_MAX)
            if remaining <= 0:
                return bool(self.shot.done())
            try:
                work = inbox.get(timeout=remaining)
            except queue.Empty:
                return bool(self.shot.done())
            if work is None:
                return True
            self._current = work
            work.run(self.shot, reraise=True)
            self._current = None

    def _close(self) -> None:
        with self._lock:
            self._closed = True
        if self._inbox is None:
            return
        interrupted = self.shot.cancelled()
        while True:
            try:
                work = self._inbox.get_nowait()
            except queue.Empty:
                return
            if work is None:
                continue
            if interrupted:
                work.shot.cancel()  # the command was cancelled: so are its waiting tool calls
            else:
                work.shot.set_exception(self.gone())


class LoopCaller(Caller):
    """An asyncio or trio caller awaiting the command: tool calls run on its loop's thread."""

    def __init__(self, cmd: Sent) -> None:
        self.shot = cmd.oneshot
        self.label = cmd.describe()
        self._schedule, self._where = current_scheduler()

    def gone(self) -> BaseException | None:
        if self.shot.done():
            return CallerGoneError(
                f"the {self._where} task that sent {self.label} stopped waiting (cancelled, timed out or "
                "answered), so its thread-sensitive tool call cannot run there"
            )
        return None

    def post(self, work: Work) -> None:
        error = self.gone()
        if error is None:
            try:
                self._schedule(lambda: work.run(self.shot, reraise=False))
                return
            except RuntimeError:  # the loop is closed / the run finished (RunFinishedError)
                error = CallerGoneError(f"the {self._where} that sent {self.label} is gone")
        work.shot.set_exception(error)
