"""Streaming N items across threads, side by side with the ways users write it today.

Run: ``agybridge bench --streams [--items N] [--rounds R]``, or
``python benchmarks/bench_streams.py [--items N] [--rounds R]`` (needs the bench extra:
janus, anyio, trio, synchronicity). Every contender moves the items of one async generator
on an event loop thread to a consumer on a plain thread, another asyncio loop or trio;
contenders run interleaved round by round so drift hits all alike, and the table shows
each one's median items per second and time to the first item, then the verdicts:

* per item, agybridge's stream costs at most a tenth of one sync round trip;
* it moves at least 5x the items per second of one round trip per item;
* it is ahead of the janus way.

The contenders other than agybridge's own: a janus queue fed by the generator (the
consumer reads ``sync_q``), an anyio memory object stream read through a blocking portal
(one ``portal.call`` per item), one ``run_coroutine_threadsafe`` per ``__anext__`` (how
synchronicity drives generators), and synchronicity's own generator support.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from agybridge import PythonRuntime, RuntimeConfig

__all__ = ["ITEMS", "ROUNDS", "Contender", "Result", "contenders", "main", "run_streams"]

Result = tuple[float, float]  # (seconds to the first item, seconds for all N)
Contender = Callable[["PythonRuntime", int], Result]


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


class _Clock:
    """Marks the first item; an async consumer restarts it once its own loop runs."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first = 0.0

    def begin(self) -> None:
        self.started = time.perf_counter()

    def __call__(self) -> None:
        if not self.first:
            self.first = time.perf_counter()


def _timed(consume: Callable[[Any], int], n: int) -> Result:
    clock = _Clock()
    count = consume(clock)
    total = time.perf_counter() - clock.started
    assert count == n, f"{count} items of {n}"
    return clock.first - clock.started, total


# -- thread consumers ------------------------------------------------------------------------


def thread_agybridge(runtime: PythonRuntime, n: int) -> Result:
    def consume(mark: Callable[[], None]) -> int:
        count = 0
        for _item in runtime.stream(numbers, n):
            mark()
            count += 1
        return count

    return _timed(consume, n)


async def _open(n: int) -> AsyncIterator[int]:
    return numbers(n).__aiter__()


async def _step(items: AsyncIterator[int]) -> tuple[bool, int]:
    try:
        return True, await items.__anext__()
    except StopAsyncIteration:
        return False, 0


def thread_run_per_item(runtime: PythonRuntime, n: int) -> Result:
    """One agybridge round trip per item: the baseline the targets are set against."""

    def consume(mark: Callable[[], None]) -> int:
        items = runtime.run(_open, n)
        count = 0
        while True:
            more, _item = runtime.run(_step, items)
            if not more:
                return count
            mark()
            count += 1

    return _timed(consume, n)


def thread_run_coroutine_threadsafe(runtime: PythonRuntime, n: int) -> Result:
    loop = runtime.loop

    def consume(mark: Callable[[], None]) -> int:
        items = asyncio.run_coroutine_threadsafe(_open(n), loop).result()
        count = 0
        while True:
            more, _item = asyncio.run_coroutine_threadsafe(_step(items), loop).result()
            if not more:
                return count
            mark()
            count += 1

    return _timed(consume, n)


def thread_janus(runtime: PythonRuntime, n: int) -> Result:
    import janus

    done = object()

    async def start() -> Any:
        queue: janus.Queue[Any] = janus.Queue(maxsize=64)

        async def feed() -> None:
            async for item in numbers(n):
                await queue.async_q.put(item)
            await queue.async_q.put(done)

        task = asyncio.get_running_loop().create_task(feed())
        return queue, task

    def consume(mark: Callable[[], None]) -> int:
        queue, _task = runtime.run(start)
        count = 0
        while queue.sync_q.get() is not done:
            mark()
            count += 1
        runtime.run(queue.aclose)
        return count

    return _timed(consume, n)


class AnyioPortal:
    """A blocking portal (its own event loop thread), opened once per benchmark run."""

    def __init__(self) -> None:
        import anyio.from_thread

        self._cm = anyio.from_thread.start_blocking_portal()
        self.portal = self._cm.__enter__()

    def close(self) -> None:
        self._cm.__exit__(None, None, None)

    def __call__(self, runtime: PythonRuntime, n: int) -> Result:
        import anyio

        async def start() -> Any:
            send, receive = anyio.create_memory_object_stream[int](64)

            async def feed() -> None:
                async with send:
                    async for item in numbers(n):
                        await send.send(item)

            return receive, feed

        def consume(mark: Callable[[], None]) -> int:
            receive, feed = self.portal.call(start)
            self.portal.start_task_soon(feed)
            count = 0
            while True:
                try:
                    self.portal.call(receive.receive)
                except anyio.EndOfStream:
                    return count
                mark()
                count += 1

        return _timed(consume, n)


class Synchronicity:
    """synchronicity's generator support (its own loop thread)."""

    def __init__(self) -> None:
        from synchronicity import Synchronizer

        # Any: synchronicity's private close is untyped where synchronicity is installed.
        self.synchronizer: Any = Synchronizer()
        self.numbers = self.synchronizer.wrap(numbers)

    def close(self) -> None:
        self.synchronizer._close_loop()

    def thread(self, runtime: PythonRuntime, n: int) -> Result:
        def consume(mark: Callable[[], None]) -> int:
            count = 0
            for _item in self.numbers(n):
                mark()
                count += 1
            return count

        return _timed(consume, n)

    def asyncio(self, runtime: PythonRuntime, n: int) -> Result:
        async def consume_async(mark: Any) -> int:
            mark.begin()
            count = 0
            async for _item in self.numbers.aio(n):
                mark()
                count += 1
            return count

        return _timed(lambda mark: asyncio.run(consume_async(mark)), n)


# -- asyncio and trio consumers -------------------------------------------------------------


async def _async_agybridge(runtime: PythonRuntime, n: int, mark: Any) -> int:
    mark.begin()
    count = 0
    async for _item in runtime.astream(numbers, n):
        mark()
        count += 1
    return count


async def _async_run_per_item(runtime: PythonRuntime, n: int, mark: Any) -> int:
    mark.begin()
    items = await runtime.arun(_open, n)
    count = 0
    while True:
        more, _item = await runtime.arun(_step, items)
        if not more:
            return count
        mark()
        count += 1


def asyncio_agybridge(runtime: PythonRuntime, n: int) -> Result:
    return _timed(lambda mark: asyncio.run(_async_agybridge(runtime, n, mark)), n)


def asyncio_run_per_item(runtime: PythonRuntime, n: int) -> Result:
    return _timed(lambda mark: asyncio.run(_async_run_per_item(runtime, n, mark)), n)


def asyncio_run_coroutine_threadsafe(runtime: PythonRuntime, n: int) -> Result:
    loop = runtime.loop

    async def consume(mark: Any) -> int:
        mark.begin()
        items = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_open(n), loop))
        count = 0
        while True:
            more, _item = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_step(items), loop))
            if not more:
                return count
            mark()
            count += 1

    return _timed(lambda mark: asyncio.run(consume(mark)), n)


def trio_agybridge(runtime: PythonRuntime, n: int) -> Result:
    import trio

    return _timed(lambda mark: trio.run(_async_agybridge, runtime, n, mark), n)


def trio_run_per_item(runtime: PythonRuntime, n: int) -> Result:
    import trio

    return _timed(lambda mark: trio.run(_async_run_per_item, runtime, n, mark), n)


def trio_run_coroutine_threadsafe(runtime: PythonRuntime, n: int) -> Result:
    import trio

    loop = runtime.loop

    async def consume(mark: Any) -> int:
        mark.begin()
        items = await trio.to_thread.run_sync(asyncio.run_coroutine_threadsafe(_open(n), loop).result)
        count = 0
        while True:
            future = asyncio.run_coroutine_threadsafe(_step(items), loop)
            more, _item = await trio.to_thread.run_sync(future.result)
            if not more:
                return count
            mark()
            count += 1

    return _timed(lambda mark: trio.run(consume, mark), n)


# -- the run ---------------------------------------------------------------------------------


def sync_round_trip(runtime: PythonRuntime, calls: int = 2000) -> float:
    """Median seconds of one ``runtime.run`` round trip (batches of 100)."""

    async def noop() -> int:
        return 1

    samples = []
    for _ in range(calls // 100):
        started = time.perf_counter()
        for _ in range(100):
            runtime.run(noop)
        samples.append((time.perf_counter() - started) / 100)
    return statistics.median(samples)


def contenders(runtime: PythonRuntime) -> tuple[dict[str, dict[str, Contender]], list[Any]]:
    """Consumer kind -> contender name -> function, and what to close afterwards."""
    closers: list[Any] = []
    portal = AnyioPortal()
    closers.append(portal)
    table: dict[str, dict[str, Contender]] = {
        "thread": {
            "agybridge stream": thread_agybridge,
            "agybridge run() per item": thread_run_per_item,
            "run_coroutine_threadsafe per item": thread_run_coroutine_threadsafe,
            "janus queue": thread_janus,
            "anyio stream via portal": portal,
        },
        "asyncio": {
            "agybridge stream": asyncio_agybridge,
            "agybridge arun() per item": asyncio_run_per_item,
            "run_coroutine_threadsafe per item": asyncio_run_coroutine_threadsafe,
        },
        "trio": {
            "agybridge stream": trio_agybridge,
            "agybridge arun() per item": trio_run_per_item,
            "run_coroutine_threadsafe + to_thread": trio_run_coroutine_threadsafe,
        },
    }
    try:
        sync = Synchronicity()
    except ImportError:
        pass
    else:
        closers.append(sync)
        table["thread"]["synchronicity generator"] = sync.thread
        table["asyncio"]["synchronicity .aio generator"] = sync.asyncio
    return table, closers


ITEMS = 10_000
ROUNDS = 3


def main(argv: list[str] | None = None) -> int:
    """The script's entry point: exit status 1 when a verdict fails."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=ITEMS, help=f"items per stream (default {ITEMS:,})")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"interleaved rounds (default {ROUNDS})")
    args = parser.parse_args(argv)
    return 0 if run_streams(args.items, args.rounds) else 1


def run_streams(n: int, rounds: int) -> bool:
    """Print the table and the verdicts of one interleaved run; True when every verdict passes.

    The runtime keeps ``RuntimeConfig``'s default loop (uvloop when it is installed), as this
    benchmark always has, so runs before and after a change compare; the header names it.
    """
    if n < 2 or rounds < 1:
        raise ValueError(f"streams need at least 2 items and 1 round, not {n} items and {rounds} rounds")
    with PythonRuntime(RuntimeConfig(inter_agent_delay=0)) as runtime:
        table, closers = contenders(runtime)
        results: dict[tuple[str, str], list[Result]] = {}
        round_trips = []
        try:
            for _round in range(rounds):
                round_trips.append(sync_round_trip(runtime))
                for kind, entries in table.items():
                    for name, run in entries.items():
                        results.setdefault((kind, name), []).append(run(runtime, n))
        finally:
            for closer in closers:
                closer.close()
        rt = statistics.median(round_trips)
        print(
            f"streams: {n} items per stream, {rounds} interleaved rounds, core '{runtime.implementation}', "
            f"loop {'uvloop' if type(runtime.loop).__module__.startswith('uvloop') else 'asyncio'}, "
            f"Python {sys.version.split()[0]}; one sync round trip {rt * 1e6:.1f} us"
        )
        print(f"{'consumer':9} {'contender':38} {'items/s':>12} {'us/item*':>9} {'first item':>12}")
        rates: dict[tuple[str, str], float] = {}
        flowing: dict[tuple[str, str], float] = {}
        for (kind, name), samples in results.items():
            total = statistics.median(s[1] for s in samples)
            first = statistics.median(s[0] for s in samples)
            rates[kind, name] = n / total
            # Once the stream flows: the items after the first, over the time after it.
            flowing[kind, name] = statistics.median((s[1] - s[0]) / max(n - 1, 1) for s in samples)
            print(f"{kind:9} {name:38} {n / total:12,.0f} {flowing[kind, name] * 1e6:9.2f} {first * 1e6:9.0f} us")
        ok = True
        checks = []
        for kind in table:
            per_item = flowing[kind, "agybridge stream"]
            checks.append(
                (
                    f"{kind}: {per_item * 1e6:.2f} us per item once flowing <= a tenth of a sync round trip "
                    f"({rt * 1e5:.2f} us)",
                    per_item <= rt / 10,
                )
            )
        baselines = {"thread": "agybridge run() per item"}
        for kind in table:
            baseline = baselines.get(kind, "agybridge arun() per item")
            ratio = rates[kind, "agybridge stream"] / rates[kind, baseline]
            checks.append((f"{kind}: {ratio:.1f}x the items/s of one round trip per item (target >= 5x)", ratio >= 5))
        janus_ratio = rates["thread", "agybridge stream"] / rates["thread", "janus queue"]
        checks.append((f"thread: {janus_ratio:.2f}x the items/s of the janus way (target > 1x)", janus_ratio > 1))
        print("* once the stream flows: the time after the first item over the items after it")
        for text, passed in checks:
            ok = ok and passed
            print(f"{'PASS' if passed else 'FAIL'}  {text}")
    return ok
