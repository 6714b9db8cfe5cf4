"""The main job: ``python -m agybridge demo`` runs the whole bridge and checks itself."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from agybridge.demo import DemoOptions, print_report, run_demo


def test_demo_scenario_adds_up(core: ModuleType) -> None:
    options = DemoOptions(agents=4, turns=5, threads=2, latency=0.001, spacing=0.0, progress=False, core=core)
    report = run_demo(options)
    assert report.ok, report.problems
    drivers = 4
    assert report.chats_ok == report.chats_expected == 4 * 5 * drivers
    assert report.denials == 4 * 1 * drivers  # turn index 4 asks for the forbidden tool
    assert report.tool_runs["delete_records"] == 0
    assert report.tool_runs["weather"] == report.tool_runs["convert"] == report.chats_expected
    assert set(report.async_tool_hosts) == {"asyncio host loop", "trio host", "runtime loop (no host loop)"}
    assert report.hooks["before_chat"] == report.hooks["after_chat"] == report.chats_expected
    # Turns 1 and 3 of 5 are streamed, from every kind of host.
    assert report.streamed == {"thread": 4 * 2 * 2, "asyncio": 4 * 2, "trio": 4 * 2}
    assert all(first <= whole for first, whole in zip(report.first_chunk, report.whole_reply))
    out = io.StringIO()
    print_report(report, options, out)
    text = out.getvalue()
    assert "RESULT: OK" in text and "p50" in text and "p99" in text
    assert "first chunk p50" in text and "whole reply p50" in text
    assert f"core implementation '{report.implementation}'" in text


def test_demo_command_line_exits_zero(tmp_path: Path) -> None:
    # Run outside the source tree, so the installed package (and its compiled core) is used.
    proc = subprocess.run(
        [sys.executable, "-m", "agybridge", "demo", "--agents", "3", "--turns", "5", "--threads", "2", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RESULT: OK" in proc.stdout


def test_demo_rejects_bad_options(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agybridge", "demo", "--agents", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode != 0 and "--agents" in proc.stderr
