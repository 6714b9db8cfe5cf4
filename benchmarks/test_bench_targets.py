"""The bench's verdicts: a ratio of two series from one run, met or missed by how much."""

from __future__ import annotations

import pytest

from agybridge.bench import TARGETS, Series, Target, evaluate
from agybridge.bench._report import floor_ratios, format_floor_ratios


def series(contender: str, *samples: float) -> Series:
    return Series("sync round trip", contender, "s/op", list(samples))


RESULTS = [series("floor", 10.0, 10.0, 30.0), series("ours", 12.0, 13.0, 14.0), series("theirs", 40.0, 40.0, 40.0)]


def test_latency_target_met_and_missed() -> None:
    met, missed = evaluate(
        RESULTS,
        [
            Target("ours <= 1.5x floor", "sync round trip", "ours", "floor", 1.5),
            Target("ours <= 1.25x floor", "sync round trip", "ours", "floor", 1.25),
        ],
    )
    assert met["met"] is True and met["ratio"] == pytest.approx(1.3) and met["missed_by"] is None
    assert missed["met"] is False and missed["missed_by"] == pytest.approx(1.3 / 1.25 - 1)


def test_speed_up_target_uses_the_peer_over_ours() -> None:
    (verdict,) = evaluate(RESULTS, [Target("4x faster", "sync round trip", "theirs", "ours", 4.0, at_least=True)])
    assert verdict["ratio"] == pytest.approx(40 / 13)
    assert verdict["met"] is False and verdict["missed_by"] == pytest.approx(1 - (40 / 13) / 4)


def test_missing_series_is_not_applicable() -> None:
    (verdict,) = evaluate(RESULTS, [Target("absent", "sync round trip", "nobody", "floor", 1.0)])
    assert verdict["ratio"] is None and verdict["met"] is None


# -- the targets themselves: issue 23's point 6, exactly -------------------------------------

COMPILED, PURE = "agybridge", "agybridge-pure"
SYNC, SPACED = "sync round trip", "sync round trip, 1 ms apart"

#: (scenario, numerator, denominator, limit, at_least, stat) of every target issue 23 sets.
ISSUE_23 = [
    (SYNC, COMPILED, "lock floor", 1.0, False, "p50"),
    (SYNC, COMPILED, "design floor", 1.3, False, "p50"),
    (SPACED, COMPILED, "asyncio floor", 0.6, False, "p50"),
    (SPACED, COMPILED, "design floor", 1.3, False, "p50"),
    (SPACED, COMPILED, "design floor", 1.5, False, "p99"),
    ("asyncio round trip", COMPILED, "lock floor", 1.5, False, "p50"),
    ("trio round trip", COMPILED, "lock floor", 1.5, False, "p50"),
    ("throughput 8 threads", COMPILED, "throughput floor", 0.7, True, "p50"),
    (SYNC, PURE, "lock floor", 2.0, False, "p50"),
    (SPACED, PURE, "asyncio floor", 1.0, False, "p50"),
] + [
    (scenario, peer, COMPILED, limit, True, "p50")
    for scenario, peers in (
        (
            SYNC,
            {
                "run_coroutine_threadsafe": 2.5,
                "fsspec.asyn.sync": 2.5,
                "synchronicity blocking call": 3.0,
                "asgiref async_to_sync (plain thread)": 10.0,
            },
        ),
        (
            SPACED,
            {
                "run_coroutine_threadsafe": 2.5,
                "fsspec.asyn.sync": 2.5,
                "synchronicity blocking call": 3.0,
                "asgiref async_to_sync (plain thread)": 5.0,
            },
        ),
    )
    for peer, limit in peers.items()
]


def _key(target: Target) -> tuple[str, str, str, float, bool, str]:
    return (target.scenario, target.numerator, target.denominator, target.limit, target.at_least, target.stat)


@pytest.mark.parametrize("expected", ISSUE_23, ids=lambda e: f"{e[0]}|{e[1]}/{e[2]}|{e[5]}")
def test_every_issue_23_target_is_evaluated(expected: tuple[str, str, str, float, bool, str]) -> None:
    assert expected in [_key(t) for t in TARGETS]


def test_no_target_is_laxer_than_issue_23() -> None:
    """An older target on the same pair and statistic may not survive with a looser limit."""
    for scenario, numerator, denominator, limit, at_least, stat in ISSUE_23:
        for target in TARGETS:
            same = (target.scenario, target.numerator, target.denominator, target.stat)
            if same != (scenario, numerator, denominator, stat):
                continue
            assert (target.limit >= limit) if at_least else (target.limit <= limit), target.text


def test_target_names_match_real_series_names() -> None:
    """Every target's rows are named as the scenarios and peers name them (else it reads n/a)."""
    from agybridge.bench._contenders import COMPILED as compiled_name
    from agybridge.bench._contenders import PURE as pure_name
    from agybridge.bench._peers import FSSPEC_SYNC, RCT
    from agybridge.bench._scenarios import DESIGN_FLOOR, FLOORS
    from agybridge.bench._scenarios import SPACED as spaced_name
    from agybridge.bench._scenarios import SYNC as sync_name

    assert (compiled_name, pure_name, sync_name, spaced_name) == (COMPILED, PURE, SYNC, SPACED)
    assert DESIGN_FLOOR in FLOORS
    assert {RCT, FSSPEC_SYNC} <= {t.numerator for t in TARGETS}


# -- every agybridge figure against every floor of its scenario -------------------------------


def test_floor_ratios_cover_every_floor_of_the_scenario() -> None:
    results = [
        Series(SYNC, "lock floor", "s/op", [10.0]),
        Series(SYNC, "design floor", "s/op", [20.0]),
        Series(SYNC, "agybridge", "s/op", [30.0]),
        Series(SYNC, "agybridge+uvloop", "s/op", [15.0]),
        Series(SYNC, "run_coroutine_threadsafe", "s/op", [90.0]),
        Series("throughput 8 threads", "throughput floor", "ops/s", [100.0]),
        Series("throughput 8 threads", "agybridge", "ops/s", [70.0]),
    ]
    ratios = {(r["scenario"], r["contender"], r["floor"]): r["p50_ratio"] for r in floor_ratios(results)}
    assert ratios == {
        (SYNC, "agybridge", "lock floor"): pytest.approx(3.0),
        (SYNC, "agybridge", "design floor"): pytest.approx(1.5),
        (SYNC, "agybridge+uvloop", "lock floor"): pytest.approx(1.5),
        (SYNC, "agybridge+uvloop", "design floor"): pytest.approx(0.75),
        ("throughput 8 threads", "agybridge", "throughput floor"): pytest.approx(0.7),
    }
    text = "\n".join(format_floor_ratios(floor_ratios(results)))
    assert "design 1.50x" in text and "lock 3.00x" in text and "run_coroutine_threadsafe" not in text
