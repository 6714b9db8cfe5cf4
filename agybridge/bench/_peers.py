"""The peer bridges: the ways people call an async function from a plain thread today.

Each peer is measured in the mode its users get. asgiref's ``async_to_sync`` and asyncer's
``syncify`` have two: from a plain thread they run every call on a new event loop; from a
worker thread that a loop spawned (``sync_to_async``, ``anyio.to_thread``) they call back into
that loop. Both modes get a row; targets name the one they compare with. fsspec's
``fsspec.asyn.sync`` runs on fsspec's own IO loop thread (``fsspec.asyn.get_loop()``), as it does
for pandas, dask and every fsspec filesystem.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from agybridge.bench._hosts import LoopThread
from agybridge.bench._stats import Take, time_block
from agybridge.bench._work import noop

__all__ = [
    "ASYNC_TO_SYNC",
    "ASYNC_TO_SYNC_IN_WORKER",
    "FSSPEC_SYNC",
    "RCT",
    "SYNCHRONICITY",
    "JanusBridge",
    "Peer",
    "peers",
]

RCT = "run_coroutine_threadsafe"
ASYNC_TO_SYNC = "asgiref async_to_sync (plain thread)"
ASYNC_TO_SYNC_IN_WORKER = "asgiref async_to_sync (sync_to_async thread)"
SYNCIFY = "asyncer syncify (plain thread)"
SYNCIFY_IN_WORKER = "asyncer syncify (anyio worker thread)"
SYNCHRONICITY = "synchronicity blocking call"
PORTAL = "anyio portal.call"
FSSPEC_SYNC = "fsspec.asyn.sync"


@dataclass
class Peer:
    """A peer bridge: *take(block, gap)* makes one block of timed calls."""

    name: str
    take: Callable[[int, float], Take]
    close: Callable[[], None] = lambda: None


def _plain(call: Callable[[], Any]) -> Callable[[int, float], Take]:
    """Calls made from the bench's own (plain) thread."""
    return lambda block, gap: lambda out: time_block(call, block, out, gap)


def _rct(plain: LoopThread) -> Peer:
    loop = plain.loop
    return Peer(RCT, _plain(lambda: asyncio.run_coroutine_threadsafe(noop(), loop).result()))


def _portal() -> Peer:
    from anyio.from_thread import start_blocking_portal

    manager = start_blocking_portal("asyncio")
    portal = manager.__enter__()

    def close() -> None:
        manager.__exit__(None, None, None)

    return Peer(PORTAL, _plain(lambda: portal.call(noop)), close)


def _synchronicity() -> Peer:
    from synchronicity import Synchronizer

    synchronizer = Synchronizer()
    blocking = synchronizer.create_blocking(noop)
    return Peer(SYNCHRONICITY, _plain(blocking), getattr(synchronizer, "_close_loop", lambda: None))


def _fsspec() -> Peer:
    """``fsspec.asyn.sync(loop, coro_fn)`` on fsspec's IO loop, the loop its filesystems use.

    That loop is fsspec's, started on first use and left running (a daemon thread, as in
    fsspec's users' processes): the bench does not stop it.
    """
    from fsspec.asyn import get_loop, sync

    loop = get_loop()
    return Peer(FSSPEC_SYNC, _plain(functools.partial(sync, loop, noop)))


def _asgiref(plain: LoopThread) -> list[Peer]:
    from asgiref.sync import async_to_sync, sync_to_async

    call = async_to_sync(noop)

    def in_worker(block: int, gap: float) -> Take:
        def take(out: list[float]) -> None:
            worker_block = sync_to_async(time_block, thread_sensitive=False)
            plain.submit(worker_block(call, block, out, gap))

        return take

    return [Peer(ASYNC_TO_SYNC, _plain(call)), Peer(ASYNC_TO_SYNC_IN_WORKER, in_worker)]


def _asyncer(plain: LoopThread) -> list[Peer]:
    import anyio.to_thread
    from asyncer import syncify

    from_plain_thread = syncify(noop, raise_sync_error=False)
    from_worker = syncify(noop)

    def in_worker(block: int, gap: float) -> Take:
        def take(out: list[float]) -> None:
            plain.submit(anyio.to_thread.run_sync(functools.partial(time_block, from_worker, block, out, gap)))

        return take

    return [Peer(SYNCIFY, _plain(from_plain_thread)), Peer(SYNCIFY_IN_WORKER, in_worker)]


def peers(plain: LoopThread, log: Callable[[str], None]) -> list[Peer]:
    """Every peer whose library is installed; the missing ones are named in the log."""
    found: list[Peer] = [_rct(plain)]
    makers: list[tuple[str, Callable[[], Peer | list[Peer]]]] = [
        ("anyio", _portal),
        ("synchronicity", _synchronicity),
        ("fsspec", _fsspec),
        ("asgiref", lambda: _asgiref(plain)),
        ("asyncer", lambda: _asyncer(plain)),
    ]
    for library, make in makers:
        try:
            made = make()
        except ImportError:
            log(f"({library} not installed: left out) ")
            continue
        found.extend(made if isinstance(made, list) else [made])
    return found


class JanusBridge:
    """A janus-queue bridge: threads put (fn, reply lock) items, a loop task runs them."""

    def __init__(self, plain: LoopThread) -> None:
        import janus

        self.queue: Any = plain.submit(self._make_queue(janus))
        self.task = asyncio.run_coroutine_threadsafe(self._consume(), plain.loop)

    @staticmethod
    async def _make_queue(janus: ModuleType) -> Any:
        return janus.Queue()

    async def _consume(self) -> None:
        while True:
            item = await self.queue.async_q.get()
            if item is None:
                return
            fn, box, lock = item
            box.append(await fn())
            lock.release()

    def call(self, fn: Callable[[], Any]) -> Any:
        import _thread

        lock = _thread.allocate_lock()
        lock.acquire()
        box: list[Any] = []
        self.queue.sync_q.put((fn, box, lock))
        lock.acquire()
        return box[0]

    def close(self) -> None:
        self.queue.sync_q.put(None)
        self.task.result(timeout=10)
