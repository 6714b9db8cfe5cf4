"""Runtime round trips (pytest-benchmark): sync, from another asyncio loop, from trio."""

from __future__ import annotations

import asyncio
from typing import Any

from agybridge import PythonRuntime


async def noop() -> int:
    return 1


def test_sync_round_trip(benchmark: Any, runtime: PythonRuntime) -> None:
    assert benchmark(runtime.run, noop) == 1


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
