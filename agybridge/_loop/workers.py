"""Worker threads for sync tools, hooks and policies that never hold up the process's exit.

``concurrent.futures.ThreadPoolExecutor`` has two habits that hurt a service: when the
main thread finishes it joins its (non-daemon) workers *before* ``atexit`` runs, so one
hung tool keeps the process alive after ``shutdown()`` returned; and from that moment it
refuses new work everywhere ("cannot schedule new futures after shutdown"), which breaks a
non-daemon thread still chatting after the main thread returned. This pool's workers are
daemon threads that only the pool knows about: the interpreter exits past them (a tool
still running then is abandoned mid-call, like any daemon thread), and the pool takes work
until its runtime shuts it down.

It subclasses ``ThreadPoolExecutor`` only because ``loop.set_default_executor`` accepts
nothing else (3.11+); none of the base class's thread machinery is used.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from agybridge._backends import _seen
from agybridge._loop.signals import block_async_signals
from agybridge._origin import mark_worker_thread

__all__ = ["DaemonExecutor"]

T = TypeVar("T")

_Job = tuple["concurrent.futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


#: A pool grows to at most this many times its size while its workers are lent (see below).
LEND_FACTOR = 8


class DaemonExecutor(concurrent.futures.ThreadPoolExecutor):
    """Up to *max_workers* daemon threads, started on demand, fed by one queue.

    **Lent slots.** A sync tool that blocks in a nested ``runtime.chat()`` (an agent asking
    another agent) holds its worker while the nested chat's own tools need workers too: 16
    such chats would take all 16 workers and starve every tool, theirs and unrelated ones.
    So a worker that blocks in a send lends its slot (:meth:`lend`, called by the send path
    through :func:`~agybridge._origin.worker_pool`) and takes it back when the send returns
    (:meth:`reclaim`): while lent, the pool may start one more worker in its place. Growth is
    bounded by ``LEND_FACTOR * max_workers`` threads, which covers nesting several levels deep.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._guard = threading.Lock()
        self._closed = False
        self._workers: list[threading.Thread] = []
        self._lent = 0  # workers blocked in a send: their slots may be used by others
        self._hard_limit = max_workers * LEND_FACTOR

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        """Queue ``fn(*args, **kwargs)``; start a worker if none is idle and the limit allows."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._guard:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._jobs.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and self._may_grow_locked():
                try:
                    self._start_worker_locked()
                except RuntimeError:
                    # CPython 3.12.0-3.12.2 refuse new threads once the main thread has returned
                    # (gh-113964): the workers already running take the job, if there are any.
                    if not self._workers:
                        future.cancel()  # never run by a worker started later
                        raise
        return future

    def _may_grow_locked(self) -> bool:
        n = len(self._workers)
        return n < self._max_workers + self._lent and n < self._hard_limit

    def _start_worker_locked(self) -> None:
        n = len(self._workers)
        # An empty context: a worker must not keep its first submitter's variables;
        # every job brings its own context (the bridge runs them in a copy of it).
        thread = threading.Thread(
            target=contextvars.Context().run,
            args=(self._work,),
            name=f"{self._thread_name_prefix}_{n}",
            daemon=True,
        )
        thread.start()
        self._workers.append(thread)
        if n == 0:
            _seen.enable()  # blocking sends now check whether they are made on a worker

    def lend(self) -> None:
        """A worker of this pool blocks in a send: its slot may run other jobs meanwhile."""
        with self._guard:
            self._lent += 1
            if not self._closed and self._jobs.qsize() > 0 and self._may_grow_locked():
                try:
                    self._start_worker_locked()  # the jobs waiting behind the blocked worker
                except RuntimeError:
                    pass  # gh-113964 (see submit): the running workers take them

    def reclaim(self) -> None:
        """The worker's send returned: it takes its slot back."""
        with self._guard:
            self._lent -= 1

    def _work(self) -> None:
        mark_worker_thread(self)
        block_async_signals()  # signals to the process never land on a tool's thread
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                jobs.put(None)  # wake the next worker: they all leave
                return
            future, fn, args, kwargs = job
            del job
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - the future carries every outcome
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, fn, args, kwargs
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work; drop queued jobs if *cancel_futures*; join workers if *wait*."""
        with self._guard:
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is not None:
                        job[0].cancel()
            self._jobs.put(None)
            workers = list(self._workers)
        if wait:
            for thread in workers:
                if thread is not threading.current_thread():
                    thread.join()

    def join(self, timeout: float) -> None:
        """After :meth:`shutdown`: wait up to *timeout* in all for the workers to leave.

        Idle workers leave at once, so a runtime that shut down leaves no thread behind; a
        worker still inside a hung tool is abandoned (a daemon) once the time is up.
        """
        deadline = time.monotonic() + timeout
        for thread in list(self._workers):
            if thread is not threading.current_thread():
                thread.join(max(deadline - time.monotonic(), 0.0))
