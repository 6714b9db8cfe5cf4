"""``python -m agybridge demo | bench``: the demonstration and the benchmark comparison."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m agybridge`` and of the ``agybridge`` command."""
    from agybridge import bench, demo

    parser = argparse.ArgumentParser(prog="agybridge", description="agybridge command line")
    parser.add_argument("-v", "--verbose", action="store_true", help="log agybridge's debug messages")
    commands = parser.add_subparsers(dest="command", required=True)
    demo.add_arguments(commands.add_parser("demo", help="run the bridge end to end and print a summary"))
    bench.add_arguments(commands.add_parser("bench", help="compare agybridge with the alternatives, side by side"))

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.command == "demo":
        return demo.run_from_args(args)
    return bench.run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
