"""``python -m agybridge bench``: agybridge against the ways people cross into a loop thread today.

Every scenario runs in ONE process, interleaved: each round takes a block of samples from
every contender in turn, so machine drift (other load, CPU frequency, idle states) hits all
sides alike, and the ratios are measured in the same run. Results: a table of medians and
ratios on stdout, the raw samples as JSON and a PNG plot in the folder given by ``--out``.

Contenders per scenario:

- sync round trip of a trivial command: agybridge (compiled, pure twin),
  ``asyncio.run_coroutine_threadsafe(...).result()``, anyio ``BlockingPortal.call``;
- round trip from an asyncio loop on another thread: ``await runtime.arun`` vs
  ``await asyncio.wrap_future(run_coroutine_threadsafe(...))``;
- round trip from trio: ``await runtime.arun`` vs
  ``await trio.to_thread.run_sync(run_coroutine_threadsafe(...).result)``;
- throughput with 1-16 caller threads (closed loop, every result collected): agybridge vs
  ``run_coroutine_threadsafe`` vs a janus-queue bridge;
- scaling: amortized cost per command with 1 to 10,000 commands in flight at once;
- micro: the hot-path primitives, compiled vs pure twin;
- the floor: a bare two-thread handoff through ``_thread`` locks.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from agybridge.config import RuntimeConfig
from agybridge.runtime import PythonRuntime

__all__ = ["BenchOptions", "main", "run_bench"]

#: Idle time before each round trip of the spaced scenario.
SPACING = 0.001
SPACED = "sync round trip, 1 ms apart"


async def _noop() -> int:
    return 1


async def _yield_once() -> int:
    await asyncio.sleep(0)
    return 1


def _cores() -> list[tuple[str, ModuleType]]:
    from agybridge import _core_py

    cores: list[tuple[str, ModuleType]] = []
    try:
        from agybridge import _core

        cores.append(("agybridge", _core))
    except ImportError:
        pass
    cores.append(("agybridge-pure", _core_py))
    return cores


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass
class Series:
    """Samples of one contender in one scenario (seconds per operation, or ops/s)."""

    scenario: str
    contender: str
    unit: str  # "s/op" or "ops/s"
    samples: list[float] = field(default_factory=list)

    def p50(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    def p99(self) -> float:
        return _quantile(sorted(self.samples), 0.99)


@dataclass(frozen=True)
class BenchOptions:
    rounds: int = 15
    block: int = 200
    throughput_total: int = 100_000
    threads: tuple[int, ...] = (1, 2, 4, 8, 16)
    depths: tuple[int, ...] = (1, 10, 100, 1000, 10_000)
    quick: bool = False


# ------------------------------------------------------------------------------------------
# Contenders
# ------------------------------------------------------------------------------------------


class _LoopThread:
    """A plain asyncio loop in its own thread: what run_coroutine_threadsafe users run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-plain-loop", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class _Floor:
    """Two threads handing a token back and forth through two _thread locks."""

    def __init__(self) -> None:
        import _thread

        self.request = _thread.allocate_lock()
        self.request.acquire()
        self.reply = _thread.allocate_lock()
        self.reply.acquire()
        self.stop = False
        self.thread = threading.Thread(target=self._serve, name="bench-floor", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            self.request.acquire()
            if self.stop:
                return
            self.reply.release()

    def call(self) -> None:
        self.request.release()
        self.reply.acquire()

    def close(self) -> None:
        self.stop = True
        self.request.release()
        self.thread.join(timeout=10)


class _Portal:
    """anyio's BlockingPortal: the library way to call into a loop thread."""

    def __init__(self) -> None:
        from anyio.from_thread import start_blocking_portal

        self._cm = start_blocking_portal("asyncio")
        self.portal = self._cm.__enter__()

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


class _JanusBridge:
    """A janus-queue bridge: threads put (fn, reply lock) items, a loop task runs them."""

    def __init__(self, loop_thread: _LoopThread) -> None:
        import janus

        self.loop = loop_thread.loop
        self.queue: Any = asyncio.run_coroutine_threadsafe(self._make_queue(janus), self.loop).result()
        self.task = asyncio.run_coroutine_threadsafe(self._consume(), self.loop)

    @staticmethod
    async def _make_queue(janus: ModuleType) -> Any:
        return janus.Queue()

    async def _consume(self) -> None:
        while True:
            item = await self.queue.async_q.get()
            if item is None:
                return
            fn, box, lock = item
            box.append(await fn())
            lock.release()

    def call(self, fn: Callable[[], Any]) -> Any:
        import _thread

        lock = _thread.allocate_lock()
        lock.acquire()
        box: list[Any] = []
        self.queue.sync_q.put((fn, box, lock))
        lock.acquire()
        return box[0]

    def close(self) -> None:
        self.queue.sync_q.put(None)
        self.task.result(timeout=10)


# ------------------------------------------------------------------------------------------
# Measurement helpers
# ------------------------------------------------------------------------------------------


def _time_block(fn: Callable[[], Any], n: int, out: list[float], gap: float = 0.0) -> None:
    perf = time.perf_counter
    for _ in range(n):
        if gap:
            time.sleep(gap)  # the scenario itself (idle spells), not synchronisation
        started = perf()
        fn()
        out.append(perf() - started)


def _sync_take(call: Callable[[], Any], block: int, gap: float = 0.0) -> Callable[[list[float]], None]:
    return lambda out: _time_block(call, block, out, gap)


def _async_take(host: _HostLoop, call: Callable[[], Any], block: int) -> Callable[[list[float]], None]:
    return lambda out: _time_async_block(host.run, call, block, out)


def _repeat(take: Callable[[list[float]], None], times: int) -> Callable[[list[float]], None]:
    def run(out: list[float]) -> None:
        for _ in range(times):
            take(out)

    return run


def _time_async_block(
    run_async: Callable[[Callable[[], Any]], Any], call: Callable[[], Any], n: int, out: list[float]
) -> None:
    """Time *n* awaited calls inside an already running host loop (asyncio or trio)."""

    async def body() -> None:
        perf = time.perf_counter
        for _ in range(n):
            started = perf()
            await call()
            out.append(perf() - started)

    run_async(body)


class _HostLoop:
    """A host event loop (asyncio or trio) on its own thread that runs submitted bodies."""

    def __init__(self, kind: str) -> None:
        import queue

        self.kind = kind
        self.jobs: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._main, name=f"bench-{kind}-host", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        if self.kind == "asyncio":

            async def next_job_asyncio() -> Any:
                return await asyncio.get_running_loop().run_in_executor(None, self.jobs.get)

            asyncio.run(self._serve(next_job_asyncio))
        else:
            import trio

            async def next_job_trio() -> Any:
                return await trio.to_thread.run_sync(self.jobs.get)

            trio.run(self._serve, next_job_trio)

    async def _serve(self, next_job: Callable[[], Any]) -> None:
        """Run each submitted body on this host's loop until told to stop (a None job)."""
        while True:
            job = await next_job()
            if job is None:
                return
            body, done = job
            try:
                await body()
            finally:
                done.set()

    def run(self, body: Callable[[], Any]) -> None:
        done = threading.Event()
        self.jobs.put((body, done))
        if not done.wait(600):
            raise RuntimeError(f"{self.kind} host did not finish a benchmark block")

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=10)


@contextmanager
def _runtimes() -> Iterator[list[tuple[str, PythonRuntime]]]:
    config = RuntimeConfig(inter_agent_delay=0, chat_timeout=600, operation_timeout=600, max_in_flight=1_000_000)
    runtimes = [(name, PythonRuntime(config, core=core).start()) for name, core in _cores()]
    try:
        yield runtimes
    finally:
        for _, rt in runtimes:
            rt.shutdown()


def _interleave(
    rounds: int, contenders: list[tuple[Series, Callable[[list[float]], None]]], log: Callable[[str], None]
) -> None:
    for round_index in range(rounds):
        # Rotate the order each round so no contender always runs first (warm) or last.
        shift = round_index % len(contenders)
        for series, take in contenders[shift:] + contenders[:shift]:
            take(series.samples)
        log(".")


# ------------------------------------------------------------------------------------------
# Scenarios
# ------------------------------------------------------------------------------------------


def _scenario_round_trips(options: BenchOptions, log: Callable[[str], None]) -> list[Series]:
    results: list[Series] = []
    plain = _LoopThread()
    floor = _Floor()
    portal = None
    try:
        portal = _Portal()
    except ImportError:
        log("(anyio not installed: portal.call left out) ")
    asyncio_host = _HostLoop("asyncio")
    trio_host: _HostLoop | None = None
    try:
        import trio

        trio_host = _HostLoop("trio")
    except ImportError:
        log("(trio not installed: trio scenario left out) ")
    block = options.block
    with _runtimes() as runtimes:
        contenders: list[tuple[Series, Callable[[list[float]], None]]] = []

        def add(scenario: str, contender: str, take: Callable[[list[float]], None]) -> None:
            series = Series(scenario, contender, "s/op")
            results.append(series)
            contenders.append((series, take))

        # Warm every path once.
        for _, rt in runtimes:
            for _ in range(200):
                rt.run(_noop)
        for _ in range(200):
            asyncio.run_coroutine_threadsafe(_noop(), plain.loop).result()

        add("floor", "_thread lock handoff", lambda out: _time_block(floor.call, block, out))
        for name, rt in runtimes:
            add("sync round trip", name, _sync_take(functools.partial(rt.run, _noop), block))
        add(
            "sync round trip",
            "run_coroutine_threadsafe",
            lambda out: _time_block(lambda: asyncio.run_coroutine_threadsafe(_noop(), plain.loop).result(), block, out),
        )
        if portal is not None:
            add(
                "sync round trip",
                "anyio portal.call",
                lambda out: _time_block(lambda: portal.portal.call(_noop), block, out),
            )

        # A service answering sporadic requests: every thread has gone idle in between, so
        # each round trip pays the full wake-ups that back-to-back calls partly avoid.
        spaced_block = max(1, block // 4)
        for name, rt in runtimes:
            add(SPACED, name, _sync_take(functools.partial(rt.run, _noop), spaced_block, SPACING))
        add(
            SPACED,
            "run_coroutine_threadsafe",
            _sync_take(lambda: asyncio.run_coroutine_threadsafe(_noop(), plain.loop).result(), spaced_block, SPACING),
        )
        add(SPACED, "_thread lock handoff", _sync_take(floor.call, spaced_block, SPACING))

        for name, rt in runtimes:
            add(
                "asyncio round trip",
                name,
                _async_take(asyncio_host, functools.partial(rt.arun, _noop), block),
            )
        add(
            "asyncio round trip",
            "wrap_future(run_coroutine_threadsafe)",
            lambda out: _time_async_block(
                asyncio_host.run,
                lambda: asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_noop(), plain.loop)),
                block,
                out,
            ),
        )
        if trio_host is not None:
            import trio

            for name, rt in runtimes:
                add(
                    "trio round trip",
                    name,
                    _async_take(trio_host, functools.partial(rt.arun, _noop), block),
                )
            add(
                "trio round trip",
                "to_thread.run_sync(future.result)",
                lambda out: _time_async_block(
                    trio_host.run,
                    lambda: trio.to_thread.run_sync(asyncio.run_coroutine_threadsafe(_noop(), plain.loop).result),
                    block,
                    out,
                ),
            )
        _interleave(options.rounds, contenders, log)
    asyncio_host.close()
    if trio_host is not None:
        trio_host.close()
    if portal is not None:
        portal.close()
    floor.close()
    plain.close()
    return results


def _scenario_throughput(options: BenchOptions, log: Callable[[str], None]) -> list[Series]:
    """Closed loop: N threads each send their share of the commands and wait for each result."""
    results: list[Series] = []
    plain = _LoopThread()
    janus_bridge: _JanusBridge | None = None
    try:
        janus_bridge = _JanusBridge(plain)
    except ImportError:
        log("(janus not installed: janus design left out) ")
    total = options.throughput_total
    with _runtimes() as runtimes:
        contenders: list[tuple[Series, Callable[[list[float]], None]]] = []
        for threads in options.threads:
            per_thread = max(1, total // threads)

            def measure(
                call: Callable[[], Any], threads: int = threads, per_thread: int = per_thread
            ) -> Callable[[list[float]], None]:
                def take(out: list[float]) -> None:
                    start = threading.Barrier(threads + 1)

                    def worker() -> None:
                        start.wait()
                        for _ in range(per_thread):
                            call()

                    workers = [threading.Thread(target=worker) for _ in range(threads)]
                    for w in workers:
                        w.start()
                    start.wait()
                    began = time.perf_counter()
                    for w in workers:
                        w.join()
                    out.append(threads * per_thread / (time.perf_counter() - began))

                return take

            scenario = f"throughput {threads} threads"
            for name, rt in runtimes:
                series = Series(scenario, name, "ops/s")
                results.append(series)
                contenders.append((series, measure(functools.partial(rt.run, _noop))))
            series = Series(scenario, "run_coroutine_threadsafe", "ops/s")
            results.append(series)
            contenders.append((series, measure(lambda: asyncio.run_coroutine_threadsafe(_noop(), plain.loop).result())))
            if janus_bridge is not None:
                series = Series(scenario, "janus queue", "ops/s")
                results.append(series)
                contenders.append((series, measure(lambda: janus_bridge.call(_noop))))
        _interleave(max(1, options.rounds // 5), contenders, log)
    if janus_bridge is not None:
        janus_bridge.close()
    plain.close()
    return results


def _scenario_scaling(options: BenchOptions, log: Callable[[str], None]) -> list[Series]:
    """Amortized cost per command with N commands in flight at once (asyncio host)."""
    results: list[Series] = []
    host = _HostLoop("asyncio")
    with _runtimes() as runtimes:
        contenders: list[tuple[Series, Callable[[list[float]], None]]] = []
        for depth in options.depths:
            for name, rt in runtimes:

                def take(out: list[float], rt: PythonRuntime = rt, depth: int = depth) -> None:
                    async def body() -> None:
                        began = time.perf_counter()
                        await asyncio.gather(*(rt.arun(_yield_once) for _ in range(depth)))
                        out.append((time.perf_counter() - began) / depth)

                    repeats = max(1, 2000 // depth)
                    for _ in range(repeats):
                        host.run(body)

                series = Series(f"in flight {depth}", name, "s/op")
                results.append(series)
                contenders.append((series, take))
        _interleave(max(1, options.rounds // 3), contenders, log)
    host.close()
    return results


def _scenario_micro(options: BenchOptions, log: Callable[[str], None]) -> list[Series]:
    """Hot-path primitives, compiled vs twin: seconds per operation (single thread)."""
    results: list[Series] = []
    contenders: list[tuple[Series, Callable[[list[float]], None]]] = []
    n = 2000
    for name, core in _cores():

        def oneshot_cycle(out: list[float], core: ModuleType = core) -> None:
            Oneshot = core.Oneshot
            began = time.perf_counter()
            for _ in range(n):
                shot = Oneshot()
                shot.set_result(1)
                shot.result()
            out.append((time.perf_counter() - began) / n)

        def queue_cycle(out: list[float], core: ModuleType = core) -> None:
            queue = core.CommandQueue(lambda: None)
            began = time.perf_counter()
            for i in range(n):
                queue.push(i)
                if i % 16 == 15:
                    queue.drain()
            queue.drain()
            out.append((time.perf_counter() - began) / n)

        def registry_get(out: list[float], core: ModuleType = core, hit: bool = True) -> None:
            registry = core.AgentRegistry()
            for i in range(64):
                registry.insert(f"agent-{i}", i)
            key = "agent-7" if hit else "nobody"
            get = registry.get if hit else registry.find
            began = time.perf_counter()
            for _ in range(n):
                get(key)
            out.append((time.perf_counter() - began) / n)

        for scenario, take in (
            ("micro oneshot create+set+result", oneshot_cycle),
            ("micro queue push (+drain per 16)", queue_cycle),
            ("micro registry get (hit)", registry_get),
            ("micro registry find (miss)", functools.partial(registry_get, core=core, hit=False)),
        ):
            series = Series(scenario, name, "s/op")
            results.append(series)
            contenders.append((series, _repeat(take, 5)))
    _interleave(options.rounds, contenders, log)
    return results


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    scenario: str
    contender: str
    baseline_scenario: str
    baseline: str
    limit: float
    text: str
    at_least: bool = False  # the ratio must be >= limit (else <= limit)


TARGETS = [
    Target(
        "sync round trip",
        "agybridge",
        "sync round trip",
        "run_coroutine_threadsafe",
        0.25,
        "sync p50 <= 0.25x run_coroutine_threadsafe",
    ),
    Target(
        "sync round trip", "agybridge", "floor", "_thread lock handoff", 2.0, "sync p50 <= 2x the lock-handoff floor"
    ),
    Target(
        "asyncio round trip",
        "agybridge",
        "asyncio round trip",
        "wrap_future(run_coroutine_threadsafe)",
        0.4,
        "asyncio p50 <= 0.4x wrap_future",
    ),
    Target(
        "trio round trip",
        "agybridge",
        "trio round trip",
        "to_thread.run_sync(future.result)",
        0.3,
        "trio p50 <= 0.3x to_thread",
    ),
    Target(
        "throughput 8 threads",
        "agybridge",
        "throughput 8 threads",
        "run_coroutine_threadsafe",
        4.0,
        "8-thread throughput >= 4x run_coroutine_threadsafe",
        at_least=True,
    ),
    Target(
        "in flight 10000",
        "agybridge",
        "in flight 1",
        "agybridge",
        2.0,
        "per-command cost at 10,000 in flight <= 2x at 1",
    ),
    Target(
        "sync round trip",
        "agybridge-pure",
        "sync round trip",
        "run_coroutine_threadsafe",
        0.5,
        "pure twin sync p50 <= 0.5x run_coroutine_threadsafe",
    ),
] + [
    Target(s, "agybridge-pure", s, "agybridge", 2.0, f"compiled >= 2x faster than twin: {s}", at_least=True)
    for s in (
        "micro oneshot create+set+result",
        "micro queue push (+drain per 16)",
        "micro registry get (hit)",
        "micro registry find (miss)",
    )
]


def _find(results: list[Series], scenario: str, contender: str) -> Series | None:
    for series in results:
        if series.scenario == scenario and series.contender == contender:
            return series
    return None


def evaluate_targets(results: list[Series]) -> list[dict[str, Any]]:
    verdicts: list[dict[str, Any]] = []
    for target in TARGETS:
        ours = _find(results, target.scenario, target.contender)
        base = _find(results, target.baseline_scenario, target.baseline)
        if ours is None or base is None or not ours.samples or not base.samples:
            verdicts.append({"target": target.text, "ratio": None, "met": None})
            continue
        ratio = ours.p50() / base.p50()
        met = ratio >= target.limit if target.at_least else ratio <= target.limit
        verdicts.append({"target": target.text, "ratio": ratio, "limit": target.limit, "met": met})
    return verdicts


def _fmt(series: Series, value: float) -> str:
    if series.unit == "ops/s":
        return f"{value:,.0f}/s"
    return f"{value * 1e6:,.2f} us"


def format_table(results: list[Series], verdicts: list[dict[str, Any]], machine: str) -> str:
    lines = [f"agybridge bench - {machine}", ""]
    lines.append(f"{'scenario':36} {'contender':40} {'p50':>14} {'p99':>14} {'vs first':>9}")
    by_scenario: dict[str, list[Series]] = {}
    for series in results:
        by_scenario.setdefault(series.scenario, []).append(series)
    for scenario, group in by_scenario.items():
        first = group[0].p50()
        for series in group:
            ratio = series.p50() / first if first else float("nan")
            p50, p99 = _fmt(series, series.p50()), _fmt(series, series.p99())
            lines.append(f"{scenario:36} {series.contender:40} {p50:>14} {p99:>14} {ratio:>8.2f}x")
    lines.append("")
    lines.append("targets (ratios of p50s measured in this run):")
    for verdict in verdicts:
        if verdict["ratio"] is None:
            lines.append(f"  [n/a ] {verdict['target']}")
        else:
            mark = "met " if verdict["met"] else "MISS"
            lines.append(f"  [{mark}] {verdict['target']}: {verdict['ratio']:.2f}x (limit {verdict['limit']}x)")
    return "\n".join(lines)


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


def plot(results: list[Series], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    latency = [s for s in results if s.unit == "s/op" and not s.scenario.startswith(("micro", "in flight"))]
    throughput = [s for s in results if s.unit == "ops/s"]
    scaling = [s for s in results if s.scenario.startswith("in flight")]
    fig, axes = plt.subplots(1, 3, figsize=(18, 6))
    ax = axes[0]
    labels = [f"{s.scenario}\n{s.contender}" for s in latency]
    ax.barh(
        range(len(latency)),
        [s.p50() * 1e6 for s in latency],
        xerr=[[0] * len(latency), [(s.p99() - s.p50()) * 1e6 for s in latency]],
        color=["tab:green" if s.contender.startswith("agybridge") else "tab:gray" for s in latency],
    )
    ax.set_yticks(range(len(latency)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("round trip, us (bar p50, whisker p99)")
    ax.set_title("Round trips (lower is better)")
    ax = axes[1]
    contenders = sorted({s.contender for s in throughput})
    for contender in contenders:
        points = [(int(s.scenario.split()[1]), s.p50()) for s in throughput if s.contender == contender]
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=contender)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("caller threads")
    ax.set_ylabel("commands per second")
    ax.set_title("Throughput (higher is better)")
    ax.legend(fontsize=8)
    ax = axes[2]
    for contender in sorted({s.contender for s in scaling}):
        points = sorted((int(s.scenario.split()[-1]), s.p50() * 1e6) for s in scaling if s.contender == contender)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=contender)
    ax.set_xscale("log")
    ax.set_xlabel("commands in flight")
    ax.set_ylabel("amortized us per command")
    ax.set_title("Scaling with depth (flat is better)")
    ax.legend(fontsize=8)
    fig.suptitle(f"agybridge bench - {machine_description()}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run_bench(
    options: BenchOptions, out_dir: Path, log: Callable[[str], None] = lambda s: None
) -> tuple[list[Series], list[dict[str, Any]]]:
    results: list[Series] = []
    for name, scenario in (
        ("round trips", _scenario_round_trips),
        ("throughput", _scenario_throughput),
        ("scaling", _scenario_scaling),
        ("micro", _scenario_micro),
    ):
        log(f"{name} ")
        results.extend(scenario(options, log))
        log("\n")
    verdicts = evaluate_targets(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
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
    }
    (out_dir / "bench.json").write_text(json.dumps(raw, indent=1))
    table = format_table(results, verdicts, machine)
    (out_dir / "bench.txt").write_text(table + "\n")
    plot(results, out_dir / "bench.png")
    return results, verdicts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench-out", help="folder for bench.json, bench.txt and bench.png")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per scenario")
    parser.add_argument("--block", type=int, default=200, help="round trips per contender per round")
    parser.add_argument("--total", type=int, default=100_000, help="commands per throughput measurement")
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
    results, verdicts = run_bench(options, out_dir, log)
    print(format_table(results, verdicts, machine_description()))
    print(f"\nraw figures: {out_dir / 'bench.json'}; plot: {out_dir / 'bench.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agybridge bench")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
