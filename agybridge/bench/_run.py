"""One bench run: every scenario in one process, then the verdicts and the three output files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from agybridge.bench._plot import plot
from agybridge.bench._report import format_table, machine_description, write_json
from agybridge.bench._scenarios import SCENARIOS
from agybridge.bench._stats import BenchOptions, Series
from agybridge.bench._targets import TARGETS, UVLOOP_CHECKS, evaluate

__all__ = ["run_bench"]


def run_bench(
    options: BenchOptions, out_dir: Path, log: Callable[[str], None] = lambda s: None
) -> tuple[list[Series], list[dict[str, Any]]]:
    """Run every scenario; write bench.json, bench.txt and bench.png into *out_dir*."""
    results: list[Series] = []
    for name, scenario in SCENARIOS:
        log(f"{name} ")
        results.extend(scenario(options, log))
        log("\n")
    verdicts = evaluate(results, TARGETS)
    uvloop = [v for v in evaluate(results, UVLOOP_CHECKS) if v["ratio"] is not None]
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    write_json(
        out_dir / "bench.json", machine=machine, options=options, results=results, verdicts=verdicts, uvloop=uvloop
    )
    (out_dir / "bench.txt").write_text(format_table(results, verdicts, machine, uvloop) + "\n")
    plot(results, out_dir / "bench.png")
    return results, verdicts
