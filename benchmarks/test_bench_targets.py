"""The bench's verdicts: a ratio of two series from one run, met or missed by how much."""

from __future__ import annotations

import pytest

from agybridge.bench import Series, Target, evaluate


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
