"""Hot-path micro benchmarks (pytest-benchmark), compiled core vs pure twin.

Run: ``pytest benchmarks/ --benchmark-only`` (add ``--benchmark-group-by=func`` to put the
two implementations side by side). ``python -m agybridge bench`` runs the comparison
against the stdlib and library alternatives.
"""

from __future__ import annotations

import _thread
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest


class Completer:
    """A helper thread that completes whatever oneshot it is handed (cross-thread wake)."""

    def __init__(self) -> None:
        self.request = _thread.allocate_lock()
        self.request.acquire()
        self.shot: Any = None
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            self.request.acquire()
            if self.stop:
                return
            self.shot.set_result(1)

    def complete(self, shot: Any) -> None:
        self.shot = shot
        self.request.release()

    def close(self) -> None:
        self.stop = True
        self.request.release()
        self.thread.join(timeout=10)


@pytest.fixture
def completer() -> Iterator[Completer]:
    helper = Completer()
    yield helper
    helper.close()


def test_oneshot_complete_and_cross_thread_wait(benchmark: Any, core: ModuleType, completer: Completer) -> None:
    def round_trip() -> Any:
        shot = core.Oneshot()
        completer.complete(shot)
        return shot.result(10)

    assert benchmark(round_trip) == 1


def test_oneshot_same_thread_cycle(benchmark: Any, core: ModuleType) -> None:
    def cycle() -> Any:
        shot = core.Oneshot()
        shot.set_result(1)
        return shot.result()

    assert benchmark(cycle) == 1


def test_queue_push_drain_one_producer(benchmark: Any, core: ModuleType) -> None:
    queue = core.CommandQueue(lambda: None)

    def burst() -> int:
        for i in range(100):
            queue.push(i)
        return len(queue.drain())

    assert benchmark(burst) == 100


def _parallel(threads: int, work: Callable[[int], None]) -> Callable[[], None]:
    def run() -> None:
        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    return run


def test_queue_push_drain_eight_producers(benchmark: Any, core: ModuleType) -> None:
    queue = core.CommandQueue(lambda: None)
    per_producer = 2000
    drained: list[int] = []

    def producer(_index: int) -> None:
        for i in range(per_producer):
            queue.push(i)
        drained.append(len(queue.drain()))

    def run() -> int:
        drained.clear()
        _parallel(8, producer)()
        return sum(drained) + len(queue.drain())

    assert benchmark.pedantic(run, rounds=10, iterations=1) == 8 * per_producer


@pytest.mark.parametrize("readers", [1, 4, 8])
@pytest.mark.parametrize("hit", [True, False], ids=["hit", "miss"])
def test_registry_get(benchmark: Any, core: ModuleType, readers: int, hit: bool) -> None:
    registry = core.AgentRegistry()
    for i in range(256):
        registry.insert(f"agent-{i}", i)
    key = "agent-17" if hit else "nobody"
    lookup = registry.get if hit else registry.find
    per_reader = 20_000 // readers

    def reader(_index: int) -> None:
        for _ in range(per_reader):
            lookup(key)

    benchmark.pedantic(_parallel(readers, reader), rounds=10, iterations=1)


def test_channel_put_take_batch(benchmark: Any, core: ModuleType) -> None:
    channel = core.Channel(100)

    def batch() -> int:
        for i in range(100):
            channel.put(i)
        return len(channel.take())

    assert benchmark(batch) == 100
