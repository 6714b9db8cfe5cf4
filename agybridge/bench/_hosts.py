"""Threads that host event loops for the bench: the peers' loop thread and the callers' loops."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from agybridge.bench._stats import Take

__all__ = ["HostLoop", "LoopThread", "async_take", "uvloop_available"]


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


class LoopThread:
    """A plain event loop running forever in its own thread: what the peers' users run."""

    def __init__(self, use_uvloop: bool = False, name: str = "bench-plain-loop") -> None:
        if use_uvloop:
            import uvloop

            self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def submit(self, coro: Any, timeout: float = 600) -> Any:
        """Run *coro* on this loop and wait for its result (harness plumbing, not measured)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class HostLoop:
    """A caller's event loop (asyncio or trio) on its own thread, running submitted bodies."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.jobs: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._main, name=f"bench-{kind}-host", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        if self.kind == "asyncio":

            async def next_job_asyncio() -> Any:
                return await asyncio.get_running_loop().run_in_executor(None, self.jobs.get)

            asyncio.run(self._serve(next_job_asyncio))
        else:
            import trio

            async def next_job_trio() -> Any:
                return await trio.to_thread.run_sync(self.jobs.get)

            trio.run(self._serve, next_job_trio)

    async def _serve(self, next_job: Callable[[], Any]) -> None:
        while True:
            job = await next_job()
            if job is None:
                return
            body, done = job
            try:
                await body()
            finally:
                done.set()

    def run(self, body: Callable[[], Any]) -> None:
        done = threading.Event()
        self.jobs.put((body, done))
        if not done.wait(600):
            raise RuntimeError(f"{self.kind} host did not finish a benchmark block")

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=10)


def async_take(host: HostLoop, call: Callable[[], Any], block: int) -> Take:
    """A block of *block* awaited calls, timed one by one inside the host's running loop."""

    def take(out: list[float]) -> None:
        async def body() -> None:
            perf = time.perf_counter
            for _ in range(block):
                started = perf()
                await call()
                out.append(perf() - started)

        host.run(body)

    return take
