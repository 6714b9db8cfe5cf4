"""The floors of ``agybridge bench`` (pytest-benchmark): what any design pays on this machine.

Compare the runtime benchmarks with these rather than with absolute figures from elsewhere.
The design floor is also checked for behaviour here: it is the bar agybridge is held to, so it
must be a real bridge (coroutines that suspend, that raise, many callers, the pipe fallback),
not a shortcut that only works for ``noop``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

from agybridge.bench import AsyncioFloor, DesignFloor, LockFloor, ThroughputFloor
from agybridge.bench._hosts import uvloop_available


class Floor(Protocol):
    def call(self) -> Any: ...

    def close(self) -> None: ...


@pytest.fixture(params=["lock", "throughput", "asyncio", "design"])
def floor(request: pytest.FixtureRequest) -> Iterator[Floor]:
    kinds: dict[str, Callable[[], Floor]] = {
        "lock": LockFloor,
        "throughput": ThroughputFloor,
        "asyncio": AsyncioFloor,
        "design": DesignFloor,
    }
    made = kinds[request.param]()
    yield made
    made.close()


def test_floor_round_trip(benchmark: Any, floor: Floor) -> None:
    assert benchmark(floor.call) in (None, 1)


# -- the design floor's behaviour ------------------------------------------------------------


async def _at_once() -> str:
    return "at once"


async def _suspends() -> str:
    await asyncio.sleep(0)  # a bare yield
    await asyncio.sleep(0.001)  # a future the Task must wait on
    return "after suspending"


async def _raises_at_once() -> None:
    raise ValueError("at once")


async def _raises_later() -> None:
    await asyncio.sleep(0)
    raise KeyError("later")


async def _current_task_after_suspending() -> bool:
    await asyncio.sleep(0)
    return asyncio.current_task() is not None


async def _catches_a_cancelled_future() -> str:
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    loop.call_soon(future.cancel)
    try:
        await future
    except asyncio.CancelledError:
        return "caught"
    return "not cancelled"


def _loop_kinds() -> list[bool]:
    return [False, True] if uvloop_available() else [False]


@pytest.fixture(params=_loop_kinds(), ids=lambda uv: "uvloop" if uv else "asyncio")
def design(request: pytest.FixtureRequest) -> Iterator[DesignFloor]:
    made = DesignFloor(use_uvloop=request.param)
    yield made
    made.close()


def test_design_floor_runs_coroutines_that_finish_at_once_and_that_suspend(design: DesignFloor) -> None:
    assert design.call(_at_once) == "at once"
    assert design.call(_suspends) == "after suspending"
    assert design.call(_current_task_after_suspending) is True  # resumed inside a real Task
    assert design.call(_catches_a_cancelled_future) == "caught"  # a throw() reaches the coroutine


def test_design_floor_hands_errors_to_the_caller(design: DesignFloor) -> None:
    with pytest.raises(ValueError, match="at once"):
        design.call(_raises_at_once)
    with pytest.raises(KeyError, match="later"):
        design.call(_raises_later)
    assert design.call(_at_once) == "at once"  # the error does not stay behind in the reply


def test_design_floor_loses_no_wake_up_under_many_callers(design: DesignFloor) -> None:
    """Eight threads, mixed commands: every call returns (a lost wake-up would strand one)."""
    results: list[str] = []
    errors: list[BaseException] = []

    def caller(index: int) -> None:
        try:
            for i in range(300):
                results.append(design.call(_suspends if (i + index) % 10 == 0 else _at_once))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=50)
    assert not any(thread.is_alive() for thread in threads), "a caller was never woken"
    assert errors == []
    assert len(results) == 8 * 300
    assert results.count("after suspending") == 8 * 30


def test_design_floor_falls_back_to_a_pipe_without_eventfd(monkeypatch: pytest.MonkeyPatch) -> None:
    if hasattr(os, "eventfd"):
        monkeypatch.delattr(os, "eventfd")
    piped = DesignFloor()
    try:
        assert piped.read_fd != piped.write_fd
        assert [piped.call(_at_once) for _ in range(50)] == ["at once"] * 50
        assert piped.call(_suspends) == "after suspending"
    finally:
        piped.close()
