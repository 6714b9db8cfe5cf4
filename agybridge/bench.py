"""Placeholder replaced by the benchmark comparison (issue: benchmarks)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench-out")


def run_from_args(args: argparse.Namespace) -> int:
    raise SystemExit("python -m agybridge bench is not built yet")
