"""``python -m agybridge demo | bench``: the demonstration and the benchmark comparison."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agybridge", description="agybridge command line")
    parser.add_argument("-v", "--verbose", action="store_true", help="log agybridge's debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    from agybridge import demo

    demo_parser = commands.add_parser("demo", help="run the bridge end to end and print a summary")
    demo.add_arguments(demo_parser)

    bench_parser = commands.add_parser("bench", help="compare agybridge with the alternatives, side by side")
    try:
        from agybridge import bench
    except ImportError as exc:  # pragma: no cover - only without the bench module
        bench = None
        bench_parser.set_defaults(bench_error=str(exc))
    else:
        bench.add_arguments(bench_parser)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        return demo.run_from_args(args)
    if bench is None:
        parser.error(f"bench is unavailable: {args.bench_error}")
    return bench.run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
