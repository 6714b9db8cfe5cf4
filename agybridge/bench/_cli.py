"""``agybridge bench`` flags and entry points."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from agybridge.bench._run import run_bench
from agybridge.bench._stats import BenchOptions
from agybridge.bench._streams import ITEMS, ROUNDS, run_streams

__all__ = ["add_arguments", "main", "run_from_args"]

_DEFAULTS = BenchOptions()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench-out", help="folder for bench.json, bench.txt and bench.png")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"interleaved rounds per scenario (default {_DEFAULTS.rounds}; {ROUNDS} with --streams)",
    )
    parser.add_argument("--block", type=int, default=_DEFAULTS.block, help="round trips per contender per round")
    parser.add_argument(
        "--total", type=int, default=_DEFAULTS.throughput_total, help="commands per throughput measurement"
    )
    parser.add_argument("--quick", action="store_true", help="a short run that only proves everything works")
    parser.add_argument(
        "--streams",
        action="store_true",
        help="run the stream comparison instead (benchmarks/bench_streams.py): a table and its verdicts on stdout",
    )
    parser.add_argument("--items", type=int, default=ITEMS, help=f"items per stream with --streams (default {ITEMS:,})")


def run_from_args(args: argparse.Namespace) -> int:
    if args.streams:
        # Verdicts are printed, not enforced: like the main run, timings are never asserted.
        if args.quick:
            run_streams(min(args.items, 500), 1)
        else:
            run_streams(args.items, ROUNDS if args.rounds is None else args.rounds)
        return 0
    if args.quick:
        options = BenchOptions(rounds=2, block=20, throughput_total=400, threads=(1, 8), depths=(1, 100), quick=True)
    else:
        rounds = _DEFAULTS.rounds if args.rounds is None else args.rounds
        options = BenchOptions(rounds=rounds, block=args.block, throughput_total=args.total)

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
