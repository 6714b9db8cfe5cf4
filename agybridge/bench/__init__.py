"""``agybridge bench``: agybridge against the floors and the peer bridges, in one process.

Every scenario samples all its contenders in many short blocks, taken in turn, so the fast
and slow modes of a shared machine hit them alike; the figures compared are pooled medians,
and every target is a ratio measured in the same run (see :mod:`agybridge.bench._targets`).
Results: a table and the verdicts on stdout, and bench.txt, bench.json (every sample) and
bench.png in the folder given by ``--out``.

Contenders:

- floors: the lock floor (two ``_thread`` locks), the throughput floor (``queue.SimpleQueue``
  and a bare lock per reply), the asyncio floor (``call_soon_threadsafe`` creating a task
  that releases the caller's lock) and the design floor (a deque, a coalesced ``eventfd`` wake
  read by ``add_reader``, coroutines run by hand; the bar agybridge is held to), the last two
  on stock asyncio and on uvloop; every agybridge figure is given as a ratio to each floor;
- agybridge: the compiled core and its pure twin on stock asyncio, and the compiled core on
  uvloop;
- peers: ``run_coroutine_threadsafe``, anyio ``BlockingPortal.call``, Modal's synchronicity,
  ``fsspec.asyn.sync`` (on fsspec's IO loop), asgiref ``async_to_sync`` and asyncer
  ``syncify`` (each from a plain thread and from a worker thread of a loop), janus
  (throughput), ``wrap_future`` and trio's ``to_thread`` (loop callers).

``agybridge bench --streams`` runs the stream comparison instead (:mod:`._streams`, also
``benchmarks/bench_streams.py``): N items of an async generator to a thread, an asyncio loop
and trio, next to the ways users write it today.
"""

from __future__ import annotations

from agybridge.bench._cli import add_arguments, main, run_from_args
from agybridge.bench._floors import AsyncioFloor, DesignFloor, LockFloor, ThroughputFloor
from agybridge.bench._run import run_bench
from agybridge.bench._stats import BenchOptions, Series
from agybridge.bench._targets import TARGETS, Target, evaluate

__all__ = [
    "TARGETS",
    "AsyncioFloor",
    "BenchOptions",
    "DesignFloor",
    "LockFloor",
    "Series",
    "Target",
    "ThroughputFloor",
    "add_arguments",
    "evaluate",
    "main",
    "run_bench",
    "run_from_args",
]
