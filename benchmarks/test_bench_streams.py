"""Streams (pytest-benchmark): N items from the runtime loop to a thread, asyncio and trio.

agybridge's stream next to the ways users write it today (see bench_streams.py, which
prints the side-by-side table with its verdicts from one interleaved run).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from bench_streams import (
    AnyioPortal,
    Contender,
    Synchronicity,
    asyncio_agybridge,
    asyncio_run_coroutine_threadsafe,
    asyncio_run_per_item,
    thread_agybridge,
    thread_janus,
    thread_run_coroutine_threadsafe,
    thread_run_per_item,
    trio_agybridge,
    trio_run_per_item,
)

from agybridge import PythonRuntime

N = 2_000

CONTENDERS: dict[str, Contender] = {
    "thread-agybridge": thread_agybridge,
    "thread-run-per-item": thread_run_per_item,
    "thread-run_coroutine_threadsafe": thread_run_coroutine_threadsafe,
    "thread-janus": thread_janus,
    "asyncio-agybridge": asyncio_agybridge,
    "asyncio-arun-per-item": asyncio_run_per_item,
    "asyncio-run_coroutine_threadsafe": asyncio_run_coroutine_threadsafe,
    "trio-agybridge": trio_agybridge,
    "trio-arun-per-item": trio_run_per_item,
}


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[dict[str, Contender]]:
    """Contenders with a loop thread of their own: an anyio blocking portal, synchronicity."""
    pytest.importorskip("synchronicity")
    portal = AnyioPortal()
    sync = Synchronicity()
    yield {"anyio-portal": portal, "synchronicity": sync.thread, "synchronicity-aio": sync.asyncio}
    portal.close()
    sync.close()


@pytest.mark.parametrize("name", list(CONTENDERS))
def test_stream_items(benchmark: Any, runtime: PythonRuntime, name: str) -> None:
    first, total = benchmark.pedantic(CONTENDERS[name], args=(runtime, N), rounds=3, iterations=1)
    assert 0 < first <= total


@pytest.mark.parametrize("name", ["anyio-portal", "synchronicity", "synchronicity-aio"])
def test_stream_items_elsewhere(
    benchmark: Any, runtime: PythonRuntime, elsewhere: dict[str, Contender], name: str
) -> None:
    first, total = benchmark.pedantic(elsewhere[name], args=(runtime, N), rounds=3, iterations=1)
    assert 0 < first <= total
