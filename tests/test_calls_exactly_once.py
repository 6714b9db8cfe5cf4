"""Exactly-once across the new calls at once: wrap, submit, enter and agent handles, with cancels and timeouts."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import itertools
import random
import threading
from collections import Counter
from typing import Any

from conftest import settled

from agybridge import CommandCancelledError, OperationTimeoutError, PythonRuntime


class Tally:
    """Each command id, counted where it ran and where its caller saw its outcome."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ran: Counter[int] = Counter()
        self.seen: Counter[str] = Counter()

    def run(self, key: int) -> None:
        with self.lock:
            self.ran[key] += 1

    def saw(self, outcome: str, times: int = 1) -> None:
        with self.lock:
            self.seen[outcome] += times


class Worker:
    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    async def chat(self, message: str) -> str:
        return message

    async def work(self, key: int, pause: float) -> int:
        self.tally.run(key)
        if pause:
            await asyncio.sleep(pause)
        return key


class Resource:
    def __init__(self) -> None:
        self.open = 0

    async def __aenter__(self) -> Resource:
        self.open += 1
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0)
        self.open -= 1


def test_every_new_call_has_exactly_one_outcome_under_mixed_load(runtime: PythonRuntime) -> None:
    tally = Tally()
    runtime.register_agent("w", lambda: Worker(tally))
    keys = itertools.count()
    resource = Resource()

    async def work(key: int, pause: float) -> int:
        tally.run(key)
        if pause:
            await asyncio.sleep(pause)
        return key

    quick = runtime.wrap(work)
    tight = runtime.wrap(work, timeout=0.01)
    handle = runtime.agent("w", Worker)
    tight_handle = runtime.agent("w", Worker, timeout=0.01)

    def thread_mix(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(60):
            key = next(keys)
            pause = rng.choice((0.0, 0.0, 0.001, 0.05))
            kind = rng.randrange(6)
            try:
                if kind == 0:
                    assert quick(key, pause) == key
                elif kind == 1:
                    tight(key, pause)
                elif kind == 2:
                    assert handle.call(Worker.work, key, pause) == key
                elif kind == 3:
                    tight_handle.work(key, pause)
                elif kind == 4:
                    future = runtime.submit(work, key, pause)
                    if rng.random() < 0.5 and future.cancel():
                        tally.saw("cancelled")
                        continue
                    assert future.result(10) == key
                else:
                    with runtime.enter(resource) as held:  # two commands: enter, run (an exit is no command)
                        assert held is resource and runtime.run(work, key, 0.0) == key
                    tally.saw("result", 1)
                tally.saw("result")
            except OperationTimeoutError:
                tally.saw("timed_out")
            except CommandCancelledError:
                tally.saw("cancelled")

    async def aio_mix() -> None:
        rng = random.Random(99)
        for _ in range(60):
            key = next(keys)
            make: Any = rng.choice((quick.aio, handle.aio.work))
            task = asyncio.ensure_future(make(key, rng.choice((0.0, 0.05))))
            if rng.random() < 0.5:
                await asyncio.sleep(rng.choice((0.0, 0.001)))
                task.cancel()
            try:
                await task
                tally.saw("aio result")
            except asyncio.CancelledError:
                tally.saw("aio cancelled")

    with cf.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(thread_mix, seed) for seed in range(5)]
        futures.append(pool.submit(lambda: asyncio.run(aio_mix())))
        for future in futures:
            future.result(60)

    metrics = settled(runtime)
    assert metrics.in_flight == 0 and metrics.queued == 0
    assert metrics.submitted == metrics.finished
    assert max(tally.ran.values()) == 1, "a command ran twice"
    assert resource.open == 0, "a held context manager was not exited"
    # Each outcome a thread caller saw is exactly the one the runtime counted.
    seen = tally.seen
    thread_commands = seen["result"] + seen["timed_out"] + seen["cancelled"]
    aio_commands = metrics.submitted - thread_commands - 1  # less the registration
    assert 0 <= aio_commands <= 60  # an asyncio task cancelled before its first step never submits
    assert metrics.timed_out == seen["timed_out"] and metrics.failed == 0 and metrics.shut_down == 0
    assert metrics.completed + metrics.cancelled == thread_commands - seen["timed_out"] + aio_commands + 1
    assert metrics.completed >= seen["result"] + seen["aio result"] + 1
    assert metrics.cancelled >= seen["cancelled"]
    assert metrics.cancelled - seen["cancelled"] <= seen["aio cancelled"]
