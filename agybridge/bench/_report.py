"""The table on stdout and bench.txt, the machine line, and the raw figures as JSON."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from agybridge.bench._contenders import COMPILED
from agybridge.bench._scenarios import DESIGN_FLOOR, FLOORS
from agybridge.bench._stats import BenchOptions, Series

__all__ = [
    "floor_ratios",
    "format_floor_ratios",
    "format_table",
    "format_verdicts",
    "machine_description",
    "write_json",
]

_TARGET_MARKS = ("met ", "MISS")


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{python} on {platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu})"


def _fmt(series: Series, value: float) -> str:
    if series.unit == "ops/s":
        return f"{value:,.0f}/s"
    return f"{value * 1e6:,.2f} us"


def format_verdicts(title: str, verdicts: list[dict[str, Any]], marks: tuple[str, str] = _TARGET_MARKS) -> list[str]:
    """One line per verdict: met, or missed by how far the ratio is from its limit."""
    lines = [title]
    for verdict in verdicts:
        ratio = verdict["ratio"]
        if ratio is None:
            lines.append(f"  [n/a ] {verdict['target']}")
            continue
        bound = ">=" if verdict["at_least"] else "<="
        figures = f"{ratio:.2f}x (target {bound} {verdict['limit']:g}x)"
        if verdict["met"]:
            lines.append(f"  [{marks[0]}] {verdict['target']}: {figures}")
        else:
            missed = f", missed by {verdict['missed_by']:.0%}" if marks == _TARGET_MARKS else ""
            lines.append(f"  [{marks[1]}] {verdict['target']}: {figures}{missed}")
    return lines


def _by_scenario(results: list[Series]) -> dict[str, list[Series]]:
    by_scenario: dict[str, list[Series]] = {}
    for series in results:
        by_scenario.setdefault(series.scenario, []).append(series)
    return by_scenario


def _ratio(top: float, bottom: float) -> float:
    return top / bottom if bottom else float("nan")


def floor_ratios(results: list[Series]) -> list[dict[str, Any]]:
    """Every agybridge figure over every floor measured in its scenario (p50 and p99 ratios).

    Latency rows: below 1x is faster than the floor; throughput rows (ops/s): above 1x is more.
    The design floor is the bar (issue 23): what a forty-line loop-thread bridge reaches here.
    """
    ratios: list[dict[str, Any]] = []
    for scenario, group in _by_scenario(results).items():
        floors = [s for s in group if s.contender in FLOORS and s.samples]
        for series in group:
            if not series.contender.startswith(COMPILED) or not series.samples:
                continue
            for floor in floors:
                ratios.append(
                    {
                        "scenario": scenario,
                        "contender": series.contender,
                        "floor": floor.contender,
                        "unit": series.unit,
                        "p50_ratio": _ratio(series.p50(), floor.p50()),
                        "p99_ratio": _ratio(series.p99(), floor.p99()),
                    }
                )
    return ratios


def format_floor_ratios(ratios: list[dict[str, Any]]) -> list[str]:
    """One line per agybridge row: its p50 (and p99) ratio to each floor of its scenario."""
    lines = ["agybridge / each floor in the same scenario, p50 (p99) (latency: < 1x beats the floor; ops/s: > 1x):"]
    rows: dict[tuple[str, str], list[str]] = {}
    for ratio in ratios:
        name = ratio["floor"].replace(" floor", "")
        cell = f"{name} {ratio['p50_ratio']:.2f}x"
        if ratio["unit"] != "ops/s":
            cell += f" ({ratio['p99_ratio']:.2f}x)"
        rows.setdefault((ratio["scenario"], ratio["contender"]), []).append(cell)
    for (scenario, contender), cells in rows.items():
        lines.append(f"  {scenario:32} {contender:18} " + " | ".join(cells))
    return lines


def format_table(
    results: list[Series], verdicts: list[dict[str, Any]], machine: str, uvloop: list[dict[str, Any]] | None = None
) -> str:
    """Each scenario's rows: p50, p99, the p50 over its first row (a floor, mostly) and over the design floor."""
    lines = [f"agybridge bench - {machine}", ""]
    lines.append(f"{'scenario':32} {'contender':44} {'p50':>13} {'p99':>13} {'vs first':>9} {'vs design':>10}")
    for scenario, group in _by_scenario(results).items():
        first = group[0].p50()
        design = next((s.p50() for s in group if s.contender == DESIGN_FLOOR and s.samples), None)
        for series in group:
            ratio = _ratio(series.p50(), first)
            vs_design = f"{_ratio(series.p50(), design):>9.2f}x" if design is not None else f"{'-':>10}"
            p50, p99 = _fmt(series, series.p50()), _fmt(series, series.p99())
            lines.append(f"{scenario:32} {series.contender:44} {p50:>13} {p99:>13} {ratio:>8.2f}x {vs_design}")
    lines.append("")
    lines.extend(format_floor_ratios(floor_ratios(results)))
    lines.append("")
    lines.extend(format_verdicts("targets (ratios of pooled p50s measured in this run):", verdicts))
    if uvloop:
        lines.append("")
        lines.extend(
            format_verdicts(
                "uvloop vs stock asyncio (agybridge, compiled core; > 1x: uvloop wins):", uvloop, ("wins", "lost")
            )
        )
    return "\n".join(lines)


def write_json(
    path: Path,
    *,
    machine: str,
    options: BenchOptions,
    results: list[Series],
    verdicts: list[dict[str, Any]],
    uvloop: list[dict[str, Any]],
) -> None:
    raw = {
        "machine": machine,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.__dict__.items()},
        "series": [
            {
                "scenario": s.scenario,
                "contender": s.contender,
                "unit": s.unit,
                "p50": s.p50(),
                "p99": s.p99(),
                "samples": s.samples,
            }
            for s in results
        ],
        "floor_ratios": floor_ratios(results),
        "targets": verdicts,
        "uvloop": uvloop,
    }
    path.write_text(json.dumps(raw, indent=1))
