"""The four floors, measured in every run: the least any design pays on this machine.

Targets are ratios to these, taken in the same run, so they hold on any hardware:

- :class:`LockFloor`: one caller's latency. A token handed to a server thread and back
  through two preallocated ``_thread`` locks; no queue, no loop, nothing to run.
- :class:`ThroughputFloor`: many callers. Client threads put their own preallocated lock on
  a C ``queue.SimpleQueue``, one server thread takes it and releases it.
- :class:`AsyncioFloor`: a design that runs the command as a task on an asyncio loop thread.
  The caller ``call_soon_threadsafe``-s the creation of a task that releases a lock the caller
  waits on: one self-pipe wake-up, one Task, one lock hand-off.
- :class:`DesignFloor`: the least a loop-thread bridge that runs real coroutines pays: a
  deque, a coalesced ``eventfd`` wake-up read by an ``add_reader`` callback that runs each
  coroutine by hand, and the caller's lock. What agybridge's own design can reach (issue 23).
"""

from __future__ import annotations

import _thread
import asyncio
import collections
import functools
import os
import queue
import threading
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from agybridge.bench._hosts import LoopThread
from agybridge.bench._work import noop

__all__ = ["AsyncioFloor", "DesignFloor", "LockFloor", "ThroughputFloor"]


class LockFloor:
    """Two threads handing a token back and forth through two ``_thread`` locks."""

    def __init__(self) -> None:
        self.request = _thread.allocate_lock()
        self.request.acquire()
        self.reply = _thread.allocate_lock()
        self.reply.acquire()
        self.stop = False
        self.thread = threading.Thread(target=self._serve, name="bench-lock-floor", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            self.request.acquire()
            if self.stop:
                return
            self.reply.release()

    def call(self) -> None:
        self.request.release()
        self.reply.acquire()

    def close(self) -> None:
        self.stop = True
        self.request.release()
        self.thread.join(timeout=10)


class ThroughputFloor:
    """One server thread draining a ``queue.SimpleQueue`` of reply locks, releasing each."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[_thread.LockType | None] = queue.SimpleQueue()
        self.local = threading.local()
        self.thread = threading.Thread(target=self._serve, name="bench-throughput-floor", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        get = self.queue.get
        while True:
            reply = get()
            if reply is None:
                return
            reply.release()

    def call(self) -> None:
        reply: _thread.LockType | None = getattr(self.local, "reply", None)
        if reply is None:
            reply = self.local.reply = _thread.allocate_lock()
            reply.acquire()
        self.queue.put(reply)
        reply.acquire()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=10)


async def _release(lock: _thread.LockType) -> None:
    lock.release()


class AsyncioFloor:
    """A task created through ``call_soon_threadsafe`` on a loop thread releases the caller's lock."""

    def __init__(self, use_uvloop: bool = False) -> None:
        self.host = LoopThread(use_uvloop, name="bench-asyncio-floor")
        self.reply = _thread.allocate_lock()
        self.reply.acquire()

    def call(self) -> None:
        loop = self.host.loop
        loop.call_soon_threadsafe(loop.create_task, _release(self.reply))
        self.reply.acquire()

    def close(self) -> None:
        self.host.close()


class _Reply:
    """One caller thread's preallocated reply: a lock created held (wake = release) and a slot."""

    __slots__ = ("error", "lock", "value")

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.lock.acquire()
        self.value: Any = None
        self.error: BaseException | None = None


def _done(reply: _Reply, value: Any, error: BaseException | None) -> None:
    reply.value, reply.error = value, error
    reply.lock.release()


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Go on driving a coroutine that already took its first step by hand.

    The value it yielded (a future it waits on, or ``None`` for a bare yield) goes up to the
    Task as if the Task had taken that step; what the Task sends or throws goes back down.
    """
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - the Task's cancellation and errors go down
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], yielded: Any, reply: _Reply) -> None:
    """The Task body of a coroutine that suspended in its first step."""
    try:
        value = await _resume(coro, yielded)
    except BaseException as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
        _done(reply, None, exc)
    else:
        _done(reply, value, None)


class DesignFloor:
    """The design floor (issue 23): what a forty-line loop-thread bridge reaches on this machine.

    - a bare asyncio loop thread: nothing runs on it but this floor;
    - callers append ``(coroutine, reply)`` to a ``collections.deque`` (thread-safe, no lock);
    - the caller writes the ``eventfd`` only when it flips ``armed`` from False to True: one
      wake-up per batch, not per command (libuv's ``uv_async_send``). The reader clears the
      flag *before* it drains, so an item appended while it drains either is drained or arms a
      new wake-up; never stranded (``../shared/anchors.md``, "Coalesced wake-ups");
    - the ``eventfd`` is registered with ``loop.add_reader``: no self-pipe ``socket.send`` and
      no ``call_soon_threadsafe`` Handle per command; a pipe where ``os.eventfd`` is missing;
    - the reader runs each coroutine by hand (``coro.send(None)``): one that finishes without
      suspending is completed right there, never becoming a Task (a Task's first step waits a
      loop iteration); one that suspends goes on as a Task that resumes it (:func:`_resume`);
    - the caller waits on its own preallocated ``_thread`` lock, one per caller thread.
    """

    def __init__(self, use_uvloop: bool = False) -> None:
        self.host = LoopThread(use_uvloop, name="bench-design-floor")
        self.loop = self.host.loop
        self.queue: collections.deque[tuple[Coroutine[Any, Any, Any], _Reply]] = collections.deque()
        self.armed = False
        self.local = threading.local()
        # The loop only holds weak references to tasks: the suspended ones are kept here.
        self.tasks: set[asyncio.Task[None]] = set()
        if hasattr(os, "eventfd"):
            self.read_fd = self.write_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.wake: Callable[[], object] = functools.partial(os.eventfd_write, self.write_fd, 1)
            self.clear: Callable[[], object] = functools.partial(os.eventfd_read, self.read_fd)
        else:  # pragma: no cover - platforms without eventfd (macOS, Windows)
            self.read_fd, self.write_fd = os.pipe()
            os.set_blocking(self.read_fd, False)
            os.set_blocking(self.write_fd, False)
            self.wake = functools.partial(os.write, self.write_fd, b"\0")
            self.clear = functools.partial(os.read, self.read_fd, 4096)
        self.host.submit(self._register())

    async def _register(self) -> None:
        self.loop.add_reader(self.read_fd, self._drain)

    def _drain(self) -> None:
        """The reader callback: consume the wake-up, disarm, then run everything queued."""
        try:
            self.clear()
        except BlockingIOError:  # a wake-up already consumed by an earlier callback
            pass
        self.armed = False  # before draining: a later append arms (and writes) again
        queue, loop = self.queue, self.loop
        while queue:
            coro, reply = queue.popleft()
            try:
                yielded = coro.send(None)
            except StopIteration as stop:
                _done(reply, stop.value, None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
                _done(reply, None, exc)
            else:
                task = loop.create_task(_finish(coro, yielded, reply))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    def call(self, fn: Callable[[], Coroutine[Any, Any, Any]] = noop) -> Any:
        """Run ``fn()`` on the loop thread and wait for its result: append, maybe write, wait."""
        reply: _Reply | None = getattr(self.local, "reply", None)
        if reply is None:
            reply = self.local.reply = _Reply()
        self.queue.append((fn(), reply))
        if not self.armed:
            self.armed = True
            self.wake()
        reply.lock.acquire()
        if reply.error is not None:
            error, reply.error = reply.error, None
            raise error
        return reply.value

    def close(self) -> None:
        async def unregister() -> None:
            self.loop.remove_reader(self.read_fd)

        self.host.submit(unregister())
        self.host.close()
        os.close(self.read_fd)
        if self.write_fd != self.read_fd:
            os.close(self.write_fd)
