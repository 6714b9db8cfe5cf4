"""The scenarios: each builds its contenders, then samples them interleaved in short blocks."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from agybridge import PythonRuntime
from agybridge.bench._contenders import cores, runtimes
from agybridge.bench._floors import AsyncioFloor, DesignFloor, LockFloor, ThroughputFloor
from agybridge.bench._hosts import HostLoop, LoopThread, async_take, uvloop_available
from agybridge.bench._peers import RCT, JanusBridge, peers
from agybridge.bench._stats import BenchOptions, Series, Take, interleave, repeat, time_block
from agybridge.bench._work import noop, yield_once

__all__ = [
    "ASYNCIO",
    "ASYNCIO_FLOOR",
    "ASYNCIO_FLOOR_UVLOOP",
    "DESIGN_FLOOR",
    "DESIGN_FLOOR_UVLOOP",
    "FLOORS",
    "LOCK_FLOOR",
    "MICRO",
    "SCENARIOS",
    "SPACED",
    "SPACING",
    "SYNC",
    "THROUGHPUT_FLOOR",
    "TRIO",
]

#: Idle time before each call of the sporadic scenario.
SPACING = 0.001
SYNC = "sync round trip"
SPACED = "sync round trip, 1 ms apart"
ASYNCIO = "asyncio round trip"
TRIO = "trio round trip"
LOCK_FLOOR = "lock floor"
ASYNCIO_FLOOR = "asyncio floor"
ASYNCIO_FLOOR_UVLOOP = "asyncio floor (uvloop)"
THROUGHPUT_FLOOR = "throughput floor"
DESIGN_FLOOR = "design floor"
DESIGN_FLOOR_UVLOOP = "design floor (uvloop)"
#: Every floor's row name: the report gives each agybridge figure as a ratio to each of these.
FLOORS = (LOCK_FLOOR, DESIGN_FLOOR, DESIGN_FLOOR_UVLOOP, ASYNCIO_FLOOR, ASYNCIO_FLOOR_UVLOOP, THROUGHPUT_FLOOR)
MICRO = (
    "micro oneshot create+set+result",
    "micro queue push (+drain per 16)",
    "micro registry get (hit)",
    "micro registry find (miss)",
)

Log = Callable[[str], None]


class _Contenders:
    """The series of one scenario and the block each one takes per round."""

    def __init__(self) -> None:
        self.results: list[Series] = []
        self.takes: list[tuple[Series, Take]] = []

    def add(self, scenario: str, contender: str, take: Take, unit: str = "s/op") -> None:
        series = Series(scenario, contender, unit)
        self.results.append(series)
        self.takes.append((series, take))


def _sync_take(call: Callable[[], Any], block: int, gap: float = 0.0) -> Take:
    return lambda out: time_block(call, block, out, gap)


def round_trips(options: BenchOptions, log: Log) -> list[Series]:
    """One caller at a time: back to back and 1 ms apart from a plain thread, then from loops."""
    plain = LoopThread()
    lock_floor = LockFloor()
    design_floor = DesignFloor()
    loop_floors: list[tuple[str, AsyncioFloor | DesignFloor]] = [
        (DESIGN_FLOOR, design_floor),
        (ASYNCIO_FLOOR, AsyncioFloor()),
    ]
    if uvloop_available():
        loop_floors.insert(1, (DESIGN_FLOOR_UVLOOP, DesignFloor(use_uvloop=True)))
        loop_floors.append((ASYNCIO_FLOOR_UVLOOP, AsyncioFloor(use_uvloop=True)))
    bridges = peers(plain, log)
    asyncio_host = HostLoop("asyncio")
    trio_host: HostLoop | None = None
    try:
        import trio

        trio_host = HostLoop("trio")
    except ImportError:
        log("(trio not installed: trio scenario left out) ")
    block = options.block
    spaced_block = max(1, block // 4)
    try:
        with runtimes(log) as started:
            for _, rt in started:  # warm every path once
                for _ in range(200):
                    rt.run(noop)
            contenders = _Contenders()
            for scenario, size, gap in ((SYNC, block, 0.0), (SPACED, spaced_block, SPACING)):
                # Sporadic calls: every thread has gone idle in between, so each round trip
                # pays the full wake-ups that back-to-back calls partly avoid.
                contenders.add(scenario, LOCK_FLOOR, _sync_take(lock_floor.call, size, gap))
                for name, floor in loop_floors:
                    contenders.add(scenario, name, _sync_take(floor.call, size, gap))
                for name, rt in started:
                    contenders.add(scenario, name, _sync_take(functools.partial(rt.run, noop), size, gap))
                for bridge in bridges:
                    contenders.add(scenario, bridge.name, bridge.take(size, gap))

            # The floors are plain-thread callers here too: what the loop caller's bridge adds
            # on top of the least one round trip costs, measured in the same blocks.
            contenders.add(ASYNCIO, LOCK_FLOOR, _sync_take(lock_floor.call, block))
            contenders.add(ASYNCIO, DESIGN_FLOOR, _sync_take(design_floor.call, block))
            for name, rt in started:
                contenders.add(ASYNCIO, name, async_take(asyncio_host, functools.partial(rt.arun, noop), block))
            contenders.add(
                ASYNCIO,
                f"wrap_future({RCT})",
                async_take(
                    asyncio_host,
                    lambda: asyncio.wrap_future(asyncio.run_coroutine_threadsafe(noop(), plain.loop)),
                    block,
                ),
            )
            if trio_host is not None:
                import trio

                contenders.add(TRIO, LOCK_FLOOR, _sync_take(lock_floor.call, block))
                contenders.add(TRIO, DESIGN_FLOOR, _sync_take(design_floor.call, block))
                for name, rt in started:
                    contenders.add(TRIO, name, async_take(trio_host, functools.partial(rt.arun, noop), block))
                contenders.add(
                    TRIO,
                    "to_thread.run_sync(future.result)",
                    async_take(
                        trio_host,
                        lambda: trio.to_thread.run_sync(asyncio.run_coroutine_threadsafe(noop(), plain.loop).result),
                        block,
                    ),
                )
            interleave(options.rounds, contenders.takes, log)
    finally:
        asyncio_host.close()
        if trio_host is not None:
            trio_host.close()
        for bridge in bridges:
            bridge.close()
        for _, floor in loop_floors:
            floor.close()
        lock_floor.close()
        plain.close()
    return _ordered(contenders.results)


def _ordered(results: list[Series]) -> list[Series]:
    """Group the series by scenario, in the order the scenarios first appear."""
    order: dict[str, int] = {}
    for series in results:
        order.setdefault(series.scenario, len(order))
    return sorted(results, key=lambda s: order[s.scenario])


def _closed_loop(call: Callable[[], Any], threads: int, per_thread: int) -> Take:
    """N threads each send their share of the commands and wait for each result."""

    def take(out: list[float]) -> None:
        start = threading.Barrier(threads + 1)

        def worker() -> None:
            start.wait()
            for _ in range(per_thread):
                call()

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        for w in workers:
            w.start()
        start.wait()
        began = time.perf_counter()
        for w in workers:
            w.join()
        out.append(threads * per_thread / (time.perf_counter() - began))

    return take


def throughput(options: BenchOptions, log: Log) -> list[Series]:
    plain = LoopThread()
    floor = ThroughputFloor()
    design_floor = DesignFloor()
    janus_bridge: JanusBridge | None = None
    try:
        janus_bridge = JanusBridge(plain)
    except ImportError:
        log("(janus not installed: janus design left out) ")
    contenders = _Contenders()
    try:
        with runtimes(log) as started:
            for threads in options.threads:
                scenario = f"throughput {threads} threads"

                def add(name: str, call: Callable[[], Any], scenario: str = scenario, threads: int = threads) -> None:
                    take = _closed_loop(call, threads, max(1, options.throughput_total // threads))
                    contenders.add(scenario, name, take, "ops/s")

                add(THROUGHPUT_FLOOR, floor.call)
                add(DESIGN_FLOOR, design_floor.call)
                for name, rt in started:
                    add(name, functools.partial(rt.run, noop))
                add(RCT, lambda: asyncio.run_coroutine_threadsafe(noop(), plain.loop).result())
                if janus_bridge is not None:
                    add("janus queue", functools.partial(janus_bridge.call, noop))
            interleave(max(1, options.rounds // 8), contenders.takes, log)
    finally:
        if janus_bridge is not None:
            janus_bridge.close()
        design_floor.close()
        floor.close()
        plain.close()
    return contenders.results


def scaling(options: BenchOptions, log: Log) -> list[Series]:
    """Amortized cost per command with N commands in flight at once (asyncio host)."""
    host = HostLoop("asyncio")
    contenders = _Contenders()
    try:
        with runtimes(log) as started:
            for depth in options.depths:
                for name, rt in started:

                    def take(out: list[float], rt: PythonRuntime = rt, depth: int = depth) -> None:
                        async def body() -> None:
                            began = time.perf_counter()
                            await asyncio.gather(*(rt.arun(yield_once) for _ in range(depth)))
                            out.append((time.perf_counter() - began) / depth)

                        for _ in range(max(1, 2000 // depth)):
                            host.run(body)

                    contenders.add(f"in flight {depth}", name, take)
            interleave(max(1, options.rounds // 5), contenders.takes, log)
    finally:
        host.close()
    return contenders.results


def micro(options: BenchOptions, log: Log) -> list[Series]:
    """Hot-path primitives, compiled vs twin, seconds per operation on one thread."""
    contenders = _Contenders()
    n = 2000
    for name, core in cores():

        def oneshot_cycle(out: list[float], core: ModuleType = core) -> None:
            oneshot = core.Oneshot
            began = time.perf_counter()
            for _ in range(n):
                shot = oneshot()
                shot.set_result(1)
                shot.result()
            out.append((time.perf_counter() - began) / n)

        def queue_cycle(out: list[float], core: ModuleType = core) -> None:
            queue = core.CommandQueue(lambda: None)
            began = time.perf_counter()
            for i in range(n):
                queue.push(i)
                if i % 16 == 15:
                    queue.drain()
            queue.drain()
            out.append((time.perf_counter() - began) / n)

        def registry_get(out: list[float], core: ModuleType = core, hit: bool = True) -> None:
            registry = core.AgentRegistry()
            for i in range(64):
                registry.insert(f"agent-{i}", i)
            key = "agent-7" if hit else "nobody"
            get = registry.get if hit else registry.find
            began = time.perf_counter()
            for _ in range(n):
                get(key)
            out.append((time.perf_counter() - began) / n)

        takes: tuple[Take, ...] = (
            oneshot_cycle,
            queue_cycle,
            registry_get,
            functools.partial(registry_get, core=core, hit=False),
        )
        for scenario, take in zip(MICRO, takes):
            contenders.add(scenario, name, repeat(take, 5))
    interleave(options.rounds, contenders.takes, log)
    return contenders.results


SCENARIOS: tuple[tuple[str, Callable[[BenchOptions, Log], list[Series]]], ...] = (
    ("round trips", round_trips),
    ("throughput", throughput),
    ("scaling", scaling),
    ("micro", micro),
)
