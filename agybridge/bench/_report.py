"""The table on stdout and bench.txt, the machine line, and the raw figures as JSON."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from agybridge.bench._stats import BenchOptions, Series

__all__ = ["format_table", "format_verdicts", "machine_description", "write_json"]

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


def format_table(
    results: list[Series], verdicts: list[dict[str, Any]], machine: str, uvloop: list[dict[str, Any]] | None = None
) -> str:
    """Each scenario's rows with p50, p99 and the p50 relative to its first row (a floor, mostly)."""
    lines = [f"agybridge bench - {machine}", ""]
    lines.append(f"{'scenario':32} {'contender':44} {'p50':>13} {'p99':>13} {'vs first':>9}")
    by_scenario: dict[str, list[Series]] = {}
    for series in results:
        by_scenario.setdefault(series.scenario, []).append(series)
    for scenario, group in by_scenario.items():
        first = group[0].p50()
        for series in group:
            ratio = series.p50() / first if first else float("nan")
            p50, p99 = _fmt(series, series.p50()), _fmt(series, series.p99())
            lines.append(f"{scenario:32} {series.contender:44} {p50:>13} {p99:>13} {ratio:>8.2f}x")
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
        "targets": verdicts,
        "uvloop": uvloop,
    }
    path.write_text(json.dumps(raw, indent=1))
