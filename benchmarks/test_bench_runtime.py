"""Runtime round trips (pytest-benchmark): sync, from another asyncio loop, from trio."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import pytest

from agybridge import PythonRuntime


async def noop() -> int:
    return 1


@pytest.mark.benchmark(group="sync round trip: run and the new calls")
def test_sync_round_trip(benchmark: Any, runtime: PythonRuntime) -> None:
    assert benchmark(runtime.run, noop) == 1


@pytest.mark.benchmark(group="sync round trip: run and the new calls")
def test_sync_round_trip_wrap(benchmark: Any, runtime: PythonRuntime) -> None:
    assert benchmark(runtime.wrap(noop)) == 1


@pytest.mark.benchmark(group="sync round trip: run and the new calls")
def test_sync_round_trip_submit(benchmark: Any, runtime: PythonRuntime) -> None:
    assert benchmark(lambda: runtime.submit(noop).result()) == 1


class Counter:
    async def chat(self, message: str) -> str:
        return message

    async def noop(self) -> int:
        return 1


@pytest.mark.benchmark(group="sync round trip: run and the new calls")
def test_sync_round_trip_agent_handle(benchmark: Any, runtime: PythonRuntime) -> None:
    runtime.register_agent("counter", Counter)
    handle = runtime.agent("counter", Counter)
    assert benchmark(handle.call, Counter.noop) == 1


def test_wrap_costs_no_more_than_run(benchmark: Any, runtime: PythonRuntime) -> None:
    """run() and wrap() interleaved call by call, so machine drift hits both alike.

    The ratio of their median round trips is recorded in the benchmark's extra_info (and
    printed with -s); it is reported, not asserted, as timings on shared CI machines are.
    """
    wrapped = runtime.wrap(noop)
    run = runtime.run

    def side_by_side() -> float:
        run_ns: list[int] = []
        wrap_ns: list[int] = []
        clock = time.perf_counter_ns
        for i in range(2000):
            # Alternate which goes first, so neither always follows the other's wake-up.
            first, second = (run_ns, wrap_ns) if i % 2 else (wrap_ns, run_ns)
            start = clock()
            run(noop) if first is run_ns else wrapped()
            middle = clock()
            run(noop) if second is run_ns else wrapped()
            first.append(middle - start)
            second.append(clock() - middle)
        ratio = statistics.median(wrap_ns) / statistics.median(run_ns)
        benchmark.extra_info["run p50 us"] = statistics.median(run_ns) / 1000
        benchmark.extra_info["wrap p50 us"] = statistics.median(wrap_ns) / 1000
        benchmark.extra_info["wrap/run p50 ratio"] = ratio
        print(f"\n[{runtime.implementation}] {benchmark.extra_info}")
        return ratio

    assert benchmark.pedantic(side_by_side, rounds=3, iterations=1) > 0


async def hundred_round_trips(runtime: PythonRuntime) -> int:
    """Awaited from an asyncio loop or a trio run alike: arun serves both."""
    total = 0
    for _ in range(100):
        total += await runtime.arun(noop)
    return total


def test_asyncio_round_trips_x100(benchmark: Any, runtime: PythonRuntime) -> None:
    assert benchmark.pedantic(lambda: asyncio.run(hundred_round_trips(runtime)), rounds=10, iterations=1) == 100


def test_trio_round_trips_x100(benchmark: Any, runtime: PythonRuntime) -> None:
    import trio

    assert benchmark.pedantic(lambda: trio.run(hundred_round_trips, runtime), rounds=10, iterations=1) == 100


def test_thousand_in_flight(benchmark: Any, runtime: PythonRuntime) -> None:
    async def yielding() -> int:
        await asyncio.sleep(0)
        return 1

    async def batch() -> int:
        return sum(await asyncio.gather(*(runtime.arun(yielding) for _ in range(1000))))

    assert benchmark.pedantic(lambda: asyncio.run(batch()), rounds=5, iterations=1) == 1000
