"""Round trips of two revisions of agybridge, side by side in one interleaved run.

Each revision is installed (compiled core) into a directory of its own and served by a
worker process of its own; the driver hands the workers short blocks of round trips in
alternation, so the machine's fast and slow phases hit both alike, and compares pooled
medians. Use it to show what one change did to the hot path:

    python benchmarks/compare_revisions.py BEFORE_REV AFTER_REV [--blocks 40] [--block 200]
    python benchmarks/compare_revisions.py BEFORE_REV AFTER_REV --quick   # only proves it runs

A revision is anything ``git`` accepts (a commit, a branch, ``HEAD``); ``WORKTREE`` means
the files as they are now, uncommitted changes included. Both runtimes run on stock asyncio
(``use_uvloop`` defaults to True, and uvloop may be installed in the driver's environment);
each worker reports which agybridge it imported, and the driver checks it is the revision's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import asyncio, json, sys, time
import agybridge
from agybridge import PythonRuntime, RuntimeConfig

async def noop():
    return 1

def sync_block(rt, n, gap):
    out = []
    for _ in range(n):
        if gap:
            time.sleep(gap)
        t0 = time.perf_counter()
        rt.run(noop)
        out.append(time.perf_counter() - t0)
    return out

async def async_block(rt, n):
    # The same coroutine serves both async libraries.
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await rt.arun(noop)
        out.append(time.perf_counter() - t0)
    return out

try:
    config = RuntimeConfig(inter_agent_delay=0, use_uvloop=False)
except TypeError:  # a revision older than the use_uvloop switch: stock asyncio anyway
    config = RuntimeConfig(inter_agent_delay=0)
rt = PythonRuntime(config).start()
# The same thread placement for both revisions: the caller and the runtime loop share one
# core. Left to the scheduler, whether a worker's two threads share a core is luck, and it
# decides the figure: on a 2-vCPU VM a hand-off to another (idle, halted) vCPU costs tens of
# microseconds more than one on the same core, and the same revision against itself measured
# 4x apart. Sharing one core is also the placement the fast runs of `agybridge bench` show.
import os
cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
if cpus:
    async def pin_runtime_thread():
        os.sched_setaffinity(0, {cpus[0]})  # 0: the calling thread (Linux)
    rt.run(pin_runtime_thread)
    os.sched_setaffinity(0, {cpus[0]})
print(json.dumps({"ready": agybridge.IMPLEMENTATION, "file": agybridge.__file__}), flush=True)
for line in sys.stdin:
    scenario, n = line.split()
    n = int(n)
    if scenario == "sync":
        samples = sync_block(rt, n, 0.0)
    elif scenario == "sync-1ms":
        samples = sync_block(rt, n, 0.001)
    elif scenario == "asyncio":
        samples = asyncio.run(async_block(rt, n))
    else:
        import trio
        samples = trio.run(async_block, rt, n)
    print(json.dumps(samples), flush=True)
rt.shutdown()
"""

SCENARIOS = ("sync", "sync-1ms", "asyncio", "trio")


def install(revision: str, into: Path) -> Path:
    """Install *revision* with its compiled core into *into*; return the site directory."""
    source = into / "src"
    if revision == "WORKTREE":
        source = ROOT
    else:
        source.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    site = into / "site"
    env = dict(os.environ, AGYBRIDGE_NO_EXTENSIONS="0")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(source)],
        check=True,
        env=env,
    )
    return site


def start_worker(site: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(site), AGYBRIDGE_REQUIRE_EXTENSIONS="1")
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd="/"
    )
    assert worker.stdout is not None
    line = worker.stdout.readline()
    if not line:
        raise RuntimeError(f"the worker for {site} exited with {worker.wait(30)} before it was ready")
    ready = json.loads(line)
    if ready["ready"] != "cython" or not Path(ready["file"]).resolve().is_relative_to(site.resolve()):
        raise RuntimeError(f"the worker for {site} did not import that revision's compiled core: {ready}")
    return worker


def block(worker: subprocess.Popen[str], scenario: str, n: int) -> list[float]:
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(f"{scenario} {n}\n")
    worker.stdin.flush()
    samples: list[float] = json.loads(worker.stdout.readline())
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--blocks", type=int, default=40, help="alternating blocks per scenario and revision")
    parser.add_argument("--block", type=int, default=200, help="round trips per block")
    parser.add_argument("--quick", action="store_true", help="2 blocks of 20: proves it runs, no figures to read")
    args = parser.parse_args()
    if args.quick:
        args.blocks, args.block = 2, 20
    with tempfile.TemporaryDirectory() as tmp:
        sites = {name: install(rev, Path(tmp) / name) for name, rev in (("before", args.before), ("after", args.after))}
        workers = {name: start_worker(site) for name, site in sites.items()}
        try:
            print(f"{'scenario':<10} {'before p50':>11} {'after p50':>11} {'after/before':>13}   (us, pooled)")
            for scenario in SCENARIOS:
                n = max(args.block // 10, 10) if scenario == "sync-1ms" else args.block
                pooled: dict[str, list[float]] = {"before": [], "after": []}
                for i in range(args.blocks):
                    order = ("before", "after") if i % 2 == 0 else ("after", "before")
                    for name in order:
                        pooled[name].extend(block(workers[name], scenario, n))
                before = statistics.median(pooled["before"]) * 1e6
                after = statistics.median(pooled["after"]) * 1e6
                print(f"{scenario:<10} {before:>11.2f} {after:>11.2f} {after / before:>12.2f}x")
        finally:
            for worker in workers.values():
                assert worker.stdin is not None
                worker.stdin.close()
                worker.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
