"""Streaming N items across threads: the script form of ``agybridge bench --streams``.

Run: ``python benchmarks/bench_streams.py [--items N] [--rounds R]`` (needs the bench extra).
The contenders, the table and the verdicts live in :mod:`agybridge.bench._streams`, so that the
installed ``agybridge bench`` command reaches them too; this file keeps the script's path and
the names ``test_bench_streams.py`` imports.
"""

from __future__ import annotations

from agybridge.bench._streams import (
    AnyioPortal,
    Contender,
    Result,
    Synchronicity,
    asyncio_agybridge,
    asyncio_run_coroutine_threadsafe,
    asyncio_run_per_item,
    contenders,
    main,
    numbers,
    run_streams,
    sync_round_trip,
    thread_agybridge,
    thread_janus,
    thread_run_coroutine_threadsafe,
    thread_run_per_item,
    trio_agybridge,
    trio_run_coroutine_threadsafe,
    trio_run_per_item,
)

__all__ = [
    "AnyioPortal",
    "Contender",
    "Result",
    "Synchronicity",
    "asyncio_agybridge",
    "asyncio_run_coroutine_threadsafe",
    "asyncio_run_per_item",
    "contenders",
    "main",
    "numbers",
    "run_streams",
    "sync_round_trip",
    "thread_agybridge",
    "thread_janus",
    "thread_run_coroutine_threadsafe",
    "thread_run_per_item",
    "trio_agybridge",
    "trio_run_coroutine_threadsafe",
    "trio_run_per_item",
]

if __name__ == "__main__":
    raise SystemExit(main())
