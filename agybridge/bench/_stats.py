"""Samples, quantiles and the interleaved sampling that every scenario shares.

On a shared VM every design flips between a fast and a slow mode (frequency scaling, idle
states, neighbours). Sampling each contender in many short blocks, taken in turn, lets the
modes hit all of them alike; the figures compared are medians of the pooled samples.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BenchOptions", "Series", "Take", "interleave", "quantile", "repeat", "time_block"]

#: One block of samples: appends to the list it is given.
Take = Callable[[list[float]], None]


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile: no interpolation between two modes that never happen."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass
class Series:
    """Samples of one contender in one scenario, pooled over all its blocks."""

    scenario: str
    contender: str
    unit: str  # "s/op" or "ops/s"
    samples: list[float] = field(default_factory=list)

    def p50(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    def p99(self) -> float:
        return quantile(sorted(self.samples), 0.99)


@dataclass(frozen=True)
class BenchOptions:
    #: Many short blocks rather than few long ones: see the module docstring.
    rounds: int = 40
    block: int = 50
    throughput_total: int = 20_000
    threads: tuple[int, ...] = (1, 2, 4, 8, 16)
    depths: tuple[int, ...] = (1, 10, 100, 1000, 10_000)
    quick: bool = False


def time_block(fn: Callable[[], Any], n: int, out: list[float], gap: float = 0.0) -> None:
    """Time *n* calls of *fn*; *gap* idles before each one (the sporadic scenario, not a wait)."""
    perf = time.perf_counter
    sleep = time.sleep
    for _ in range(n):
        if gap:
            sleep(gap)
        started = perf()
        fn()
        out.append(perf() - started)


def repeat(take: Take, times: int) -> Take:
    def run(out: list[float]) -> None:
        for _ in range(times):
            take(out)

    return run


def interleave(rounds: int, contenders: list[tuple[Series, Take]], log: Callable[[str], None]) -> None:
    """Take one block from every contender per round, rotating who goes first."""
    for round_index in range(rounds):
        # Rotate so no contender always runs first (cold) or last.
        shift = round_index % len(contenders) if contenders else 0
        for series, take in contenders[shift:] + contenders[:shift]:
            take(series.samples)
        log(".")
