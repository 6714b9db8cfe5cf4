"""bench.png: round trips, throughput and scaling side by side (matplotlib, optional)."""

from __future__ import annotations

from pathlib import Path

from agybridge.bench._report import machine_description
from agybridge.bench._stats import Series

__all__ = ["plot"]


def _colour(series: Series) -> str:
    if "floor" in series.contender:
        return "tab:blue"
    return "tab:green" if series.contender.startswith("agybridge") else "tab:gray"


def plot(results: list[Series], path: Path) -> bool:
    """Write the plot; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    latency = [s for s in results if s.unit == "s/op" and not s.scenario.startswith(("micro", "in flight"))]
    throughput = [s for s in results if s.unit == "ops/s"]
    scaling = [s for s in results if s.scenario.startswith("in flight")]
    fig, axes = plt.subplots(
        1, 3, figsize=(20, max(6.0, 0.2 * len(latency))), gridspec_kw={"width_ratios": [1.9, 1, 1]}
    )
    ax = axes[0]
    labels = [f"{s.scenario} | {s.contender}" for s in latency]
    ax.barh(
        range(len(latency)),
        [s.p50() * 1e6 for s in latency],
        xerr=[[0] * len(latency), [(s.p99() - s.p50()) * 1e6 for s in latency]],
        color=[_colour(s) for s in latency],
    )
    ax.set_yticks(range(len(latency)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("round trip, us, log scale (bar p50, whisker p99)")
    ax.set_title("Round trips (lower is better)")
    ax = axes[1]
    contenders = sorted({s.contender for s in throughput})
    for contender in contenders:
        points = [(int(s.scenario.split()[1]), s.p50()) for s in throughput if s.contender == contender]
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=contender)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("caller threads")
    ax.set_ylabel("commands per second")
    ax.set_title("Throughput (higher is better)")
    ax.legend(fontsize=8)
    ax = axes[2]
    for contender in sorted({s.contender for s in scaling}):
        points = sorted((int(s.scenario.split()[-1]), s.p50() * 1e6) for s in scaling if s.contender == contender)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=contender)
    ax.set_xscale("log")
    ax.set_xlabel("commands in flight")
    ax.set_ylabel("amortized us per command")
    ax.set_title("Scaling with depth (flat is better)")
    ax.legend(fontsize=8)
    fig.suptitle(f"agybridge bench - {machine_description()}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
