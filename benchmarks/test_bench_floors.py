"""The floors of ``agybridge bench`` (pytest-benchmark): what any design pays on this machine.

Compare the runtime benchmarks with these rather than with absolute figures from elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

from agybridge.bench import AsyncioFloor, LockFloor, ThroughputFloor


class Floor(Protocol):
    def call(self) -> None: ...

    def close(self) -> None: ...


@pytest.fixture(params=["lock", "throughput", "asyncio"])
def floor(request: pytest.FixtureRequest) -> Iterator[Floor]:
    kinds: dict[str, Callable[[], Floor]] = {"lock": LockFloor, "throughput": ThroughputFloor, "asyncio": AsyncioFloor}
    made = kinds[request.param]()
    yield made
    made.close()


def test_floor_round_trip(benchmark: Any, floor: Floor) -> None:
    assert benchmark(floor.call) is None
