"""The targets, as ratios of figures measured in the same run, and their verdicts.

A target compares a *numerator* series with a *denominator* series (p50s unless it says p99):
latency targets say ``ours / floor <= limit``, speed-ups say ``theirs / ours >= limit``. A
verdict says met, or missed by how much (the ratio's distance from the limit, in percent).

The limits are issue 23's point 6 (compiled core unless the target names the twin), plus the
earlier targets that it does not replace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agybridge.bench._contenders import COMPILED, PURE, UVLOOP
from agybridge.bench._peers import ASYNC_TO_SYNC, ASYNC_TO_SYNC_IN_WORKER, FSSPEC_SYNC, RCT, SYNCHRONICITY
from agybridge.bench._scenarios import (
    ASYNCIO,
    ASYNCIO_FLOOR,
    DESIGN_FLOOR,
    LOCK_FLOOR,
    MICRO,
    SPACED,
    SYNC,
    THROUGHPUT_FLOOR,
    TRIO,
)
from agybridge.bench._stats import Series

__all__ = ["PEER_SPEEDUPS", "TARGETS", "UVLOOP_CHECKS", "Target", "evaluate"]


@dataclass(frozen=True)
class Target:
    text: str
    scenario: str
    numerator: str
    denominator: str
    limit: float
    at_least: bool = False  # the ratio must be >= limit (else <= limit)
    denominator_scenario: str | None = None  # defaults to *scenario*
    stat: str = "p50"


def _floor_targets() -> list[Target]:
    return [
        Target("sync round trip p50 <= 1.0x lock floor", SYNC, COMPILED, LOCK_FLOOR, 1.0),
        Target("sync round trip p50 <= 1.3x design floor", SYNC, COMPILED, DESIGN_FLOOR, 1.3),
        Target("sporadic sync round trip p50 <= 0.6x asyncio floor", SPACED, COMPILED, ASYNCIO_FLOOR, 0.6),
        Target("sporadic sync round trip p50 <= 1.3x design floor", SPACED, COMPILED, DESIGN_FLOOR, 1.3),
        Target(
            "sporadic sync round trip p99 <= 1.5x design floor p99", SPACED, COMPILED, DESIGN_FLOOR, 1.5, stat="p99"
        ),
        Target(
            "sporadic sync round trip p99 <= 1.5x asyncio floor p99", SPACED, COMPILED, ASYNCIO_FLOOR, 1.5, stat="p99"
        ),
        Target("asyncio-loop caller p50 <= 1.5x lock floor", ASYNCIO, COMPILED, LOCK_FLOOR, 1.5),
        Target("trio caller p50 <= 1.5x lock floor", TRIO, COMPILED, LOCK_FLOOR, 1.5),
        Target(
            "8-thread throughput >= 0.7x throughput floor",
            "throughput 8 threads",
            COMPILED,
            THROUGHPUT_FLOOR,
            0.7,
            at_least=True,
        ),
        Target(
            "per-command cost at 10,000 in flight <= 1.0x at 1",
            "in flight 10000",
            COMPILED,
            COMPILED,
            1.0,
            denominator_scenario="in flight 1",
        ),
        Target("pure twin sync round trip p50 <= 2.0x lock floor", SYNC, PURE, LOCK_FLOOR, 2.0),
        Target("pure twin sporadic sync round trip p50 <= 1.0x asyncio floor", SPACED, PURE, ASYNCIO_FLOOR, 1.0),
    ] + [Target(f"compiled >= 2x the twin: {s}", s, PURE, COMPILED, 2.0, at_least=True) for s in MICRO]


#: Speed-ups over the peers: (peer, back to back, 1 ms apart). asgiref's limits hold for both
#: of its modes (from a plain thread, and from a ``sync_to_async`` worker thread).
PEER_SPEEDUPS: tuple[tuple[str, float, float], ...] = (
    (ASYNC_TO_SYNC, 10.0, 5.0),
    (ASYNC_TO_SYNC_IN_WORKER, 10.0, 5.0),
    (SYNCHRONICITY, 3.0, 3.0),
    (RCT, 2.5, 2.5),
    (FSSPEC_SYNC, 2.5, 2.5),
)


def _peer_targets() -> list[Target]:
    targets: list[Target] = []
    for scenario, when, sporadic in ((SYNC, "back to back", False), (SPACED, "1 ms apart", True)):
        for peer, back_to_back_limit, sporadic_limit in PEER_SPEEDUPS:
            limit = sporadic_limit if sporadic else back_to_back_limit
            targets.append(Target(f"{when}: >= {limit:g}x faster than {peer}", scenario, peer, COMPILED, limit, True))
    return targets


TARGETS: list[Target] = _floor_targets() + _peer_targets()

#: Not targets: does uvloop speed the runtime up? (ratio stock / uvloop, > 1 means it wins)
UVLOOP_CHECKS: list[Target] = [
    Target(f"{scenario}: stock / uvloop", scenario, COMPILED, UVLOOP, 1.0, at_least=True)
    for scenario in (SYNC, SPACED, ASYNCIO, TRIO, "in flight 1", "in flight 10000")
] + [
    Target(f"{scenario}: uvloop / stock", scenario, UVLOOP, COMPILED, 1.0, at_least=True)
    for scenario in ("throughput 1 threads", "throughput 8 threads")
]


def _find(results: list[Series], scenario: str, contender: str) -> Series | None:
    for series in results:
        if series.scenario == scenario and series.contender == contender and series.samples:
            return series
    return None


def evaluate(results: list[Series], targets: list[Target]) -> list[dict[str, Any]]:
    verdicts: list[dict[str, Any]] = []
    for target in targets:
        top = _find(results, target.scenario, target.numerator)
        bottom = _find(results, target.denominator_scenario or target.scenario, target.denominator)
        verdict: dict[str, Any] = {"target": target.text, "limit": target.limit, "at_least": target.at_least}
        if top is None or bottom is None:
            verdicts.append({**verdict, "ratio": None, "met": None, "missed_by": None})
            continue
        ratio = getattr(top, target.stat)() / getattr(bottom, target.stat)()
        met = ratio >= target.limit if target.at_least else ratio <= target.limit
        missed_by = None if met else abs(ratio / target.limit - 1)
        verdicts.append({**verdict, "ratio": ratio, "met": met, "missed_by": missed_by})
    return verdicts
