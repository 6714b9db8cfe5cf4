"""The three floors, measured in every run: the least any design pays on this machine.

Targets are ratios to these, taken in the same run, so they hold on any hardware:

- :class:`LockFloor`: one caller's latency. A token handed to a server thread and back
  through two preallocated ``_thread`` locks; no queue, no loop, nothing to run.
- :class:`ThroughputFloor`: many callers. Client threads put their own preallocated lock on
  a C ``queue.SimpleQueue``, one server thread takes it and releases it.
- :class:`AsyncioFloor`: a design that runs the command as a task on an asyncio loop thread.
  The caller ``call_soon_threadsafe``-s the creation of a task that releases a lock the caller
  waits on: one self-pipe wake-up, one Task, one lock hand-off.
"""

from __future__ import annotations

import _thread
import queue
import threading

from agybridge.bench._hosts import LoopThread

__all__ = ["AsyncioFloor", "LockFloor", "ThroughputFloor"]


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
