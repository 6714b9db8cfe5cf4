"""``agybridge bench`` flags and entry points."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from agybridge.bench._run import run_bench
from agybridge.bench._stats import BenchOptions

__all__ = ["add_arguments", "main", "run_from_args"]

_DEFAULTS = BenchOptions()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench-out", help="folder for bench.json, bench.txt and bench.png")
    parser.add_argument("--rounds", type=int, default=_DEFAULTS.rounds, help="interleaved rounds per scenario")
    parser.add_argument("--block", type=int, default=_DEFAULTS.block, help="round trips per contender per round")
    parser.add_argument(
        "--total", type=int, default=_DEFAULTS.throughput_total, help="commands per throughput measurement"
    )
    parser.add_argument("--quick", action="store_true", help="a short run that only proves everything works")


def run_from_args(args: argparse.Namespace) -> int:
    if args.quick:
        options = BenchOptions(rounds=2, block=20, throughput_total=400, threads=(1, 8), depths=(1, 100), quick=True)
    else:
        options = BenchOptions(rounds=args.rounds, block=args.block, throughput_total=args.total)

    def log(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    out_dir = Path(args.out)
    run_bench(options, out_dir, log)
    print((out_dir / "bench.txt").read_text(), end="")
    print(f"\nraw figures: {out_dir / 'bench.json'}; plot: {out_dir / 'bench.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agybridge bench")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
