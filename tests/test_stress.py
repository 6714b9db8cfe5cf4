"""Stress: nothing lost, nothing completed twice, nobody left waiting.

8 producer threads, an asyncio host and a trio host submit a mix of fast and slow
coroutines, failures, caller cancellations and short timeouts, and the runtime is shut
down in the middle of the run. Every command must end in exactly one outcome.

Streams get the same treatment: 4 consumer threads, an asyncio host and a trio host read
streams that run to the end, are left early (break, ``close()``, ``async with``), fail,
stall past their item timeout or are cancelled (``task.cancel()``, a trio cancel scope),
and the runtime shuts down mid-run: no item lost, duplicated or reordered, every producer
closed exactly once (its ``finally`` blocks counted), none ever more than its buffer ahead.

Short mode (CI): 10,000 commands and 1,000 streams. Long mode: ``AGYBRIDGE_STRESS=long``
(100,000 and 10,000), or ``AGYBRIDGE_STRESS=<count>``; the figures are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import Counter
from types import ModuleType
from typing import Any

import pytest
from conftest import make_config

from agybridge import (
    CommandCancelledError,
    OperationTimeoutError,
    PythonRuntime,
    Run,
    RuntimeShutdownError,
)

_MODE = os.environ.get("AGYBRIDGE_STRESS", "short")
TOTAL = 100_000 if _MODE == "long" else (int(_MODE) if _MODE.isdigit() else 10_000)
THREADS = 8
KINDS = ("fast", "fast", "fast", "slow", "error", "timeout", "cancel")


class Ledger:
    """Every attempted command, its outcome(s), its completions and its executions."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.attempted: set[int] = set()
        self.outcomes: dict[int, list[str]] = {}
        self.completions: Counter[int] = Counter()
        self.executions: Counter[int] = Counter()
        self.wrong: list[str] = []

    def attempt(self, i: int, cmd: Run) -> None:
        with self.lock:
            self.attempted.add(i)

        def completed(_shot: Any) -> None:
            with self.lock:
                self.completions[i] += 1

        cmd.oneshot.add_done_callback(completed)

    def outcome(self, i: int, kind: str, value: Any = None, error: BaseException | None = None) -> None:
        if error is None:
            label = "result"
            if value != i:
                self.wrong.append(f"command {i} got result {value!r}")
        elif isinstance(error, OperationTimeoutError):
            label = "timeout"
        elif isinstance(error, RuntimeShutdownError):
            label = "shutdown"
        elif isinstance(error, (CommandCancelledError, asyncio.CancelledError)):
            label = "cancelled"
        elif isinstance(error, ValueError) and kind == "error" and error.args == (i,):
            label = "error"
        else:
            label = f"unexpected {type(error).__name__}: {error}"
            self.wrong.append(f"command {i} ({kind}): {label}")
        with self.lock:
            self.outcomes.setdefault(i, []).append(label)

    @property
    def finished(self) -> int:
        return len(self.outcomes)


def _plan(seed: int) -> list[tuple[int, str]]:
    rng = random.Random(seed)
    return [(i, rng.choice(KINDS)) for i in range(TOTAL)]


def _job_factory(ledger: Ledger) -> Any:
    async def job(i: int, kind: str, pause: float) -> int:
        ledger.executions[i] += 1  # runs on the one runtime thread: no lock needed
        if kind == "error":
            raise ValueError(i)
        if kind in ("slow", "timeout", "cancel"):
            await asyncio.sleep(pause)
        return i

    return job


def _pause(kind: str, rng: random.Random) -> float:
    return {"slow": rng.uniform(0.0002, 0.003), "timeout": 0.05, "cancel": rng.uniform(0.0, 0.01)}.get(kind, 0.0)


def _run_workers(
    workers: list[threading.Thread], monitor: threading.Thread, stop_monitor: threading.Event, budget: float
) -> list[str]:
    """Start *monitor* and *workers*, join the workers within *budget* seconds in all, then
    stop the monitor: the names of the workers still alive (hung)."""
    monitor.start()
    for w in workers:
        w.start()
    deadline = time.monotonic() + budget
    for w in workers:
        w.join(timeout=max(0.0, deadline - time.monotonic()))
    hung = [w.name for w in workers if w.is_alive()]
    stop_monitor.set()
    monitor.join(timeout=30)
    return hung


@pytest.mark.timeout(1800 if TOTAL > 10_000 else 240)
def test_stress_every_command_completes_exactly_once(core: ModuleType) -> None:
    import trio

    runtime = PythonRuntime(
        make_config(shutdown_grace=0.05, operation_timeout=60, max_in_flight=1_000_000), core=core
    ).start()
    ledger = Ledger()
    job = _job_factory(ledger)
    plan = _plan(1234)
    # Split: the threads take 60%, the asyncio and trio hosts 20% each.
    cut1, cut2 = int(TOTAL * 0.6), int(TOTAL * 0.8)
    thread_share = [plan[k:cut1:THREADS] for k in range(THREADS)]
    asyncio_share, trio_share = plan[cut1:cut2], plan[cut2:]

    def thread_producer(items: list[tuple[int, str]], seed: int) -> None:
        rng = random.Random(seed)
        for i, kind in items:
            cmd = Run(job, (i, kind, _pause(kind, rng)), oneshot=core.Oneshot())
            ledger.attempt(i, cmd)
            timeout = 0.002 if kind == "timeout" else (rng.uniform(0.0005, 0.02) if kind == "cancel" else None)
            try:
                value = runtime.send_command(cmd, timeout)
            except Exception as exc:
                ledger.outcome(i, kind, error=exc)
            else:
                ledger.outcome(i, kind, value)

    async def one_asyncio(i: int, kind: str, rng: random.Random) -> None:
        cmd = Run(job, (i, kind, _pause(kind, rng)), oneshot=core.Oneshot())
        ledger.attempt(i, cmd)  # no await between this and the submit inside asend_command
        try:
            value = await runtime.asend_command(cmd, 0.002 if kind == "timeout" else None)
        except (Exception, asyncio.CancelledError) as exc:
            ledger.outcome(i, kind, error=exc)
        else:
            ledger.outcome(i, kind, value)

    async def asyncio_host() -> None:
        rng = random.Random(99)
        loop = asyncio.get_running_loop()
        for start in range(0, len(asyncio_share), 200):
            tasks = []
            for i, kind in asyncio_share[start : start + 200]:
                task = loop.create_task(one_asyncio(i, kind, rng))
                if kind == "cancel":
                    loop.call_later(rng.uniform(0.0, 0.005), task.cancel)
                tasks.append(task)
            await asyncio.gather(*tasks, return_exceptions=True)

    async def one_trio(i: int, kind: str, rng: random.Random) -> None:
        cmd = Run(job, (i, kind, _pause(kind, rng)), oneshot=core.Oneshot())
        ledger.attempt(i, cmd)
        cancelled = True
        with trio.move_on_after(rng.uniform(0.0, 0.005) if kind == "cancel" else float("inf")):
            try:
                value = await runtime.asend_command(cmd, 0.002 if kind == "timeout" else None)
            except Exception as exc:
                ledger.outcome(i, kind, error=exc)
            else:
                ledger.outcome(i, kind, value)
            cancelled = False
        if cancelled:
            ledger.outcome(i, kind, error=CommandCancelledError("cancelled by the trio caller"))

    async def trio_host() -> None:
        rng = random.Random(7)
        for start in range(0, len(trio_share), 200):
            async with trio.open_nursery() as nursery:
                for i, kind in trio_share[start : start + 200]:
                    nursery.start_soon(one_trio, i, kind, rng)

    def shut_down_midway() -> None:
        while ledger.finished < TOTAL // 2 and not stop_monitor.is_set():
            time.sleep(0.001)
        runtime.shutdown(grace=0.05)

    stop_monitor = threading.Event()
    began = time.perf_counter()
    workers = [threading.Thread(target=thread_producer, args=(share, k)) for k, share in enumerate(thread_share)]
    workers.append(threading.Thread(target=lambda: asyncio.run(asyncio_host())))
    workers.append(threading.Thread(target=lambda: trio.run(trio_host)))
    monitor = threading.Thread(target=shut_down_midway)
    hung = _run_workers(workers, monitor, stop_monitor, 1500 if TOTAL > 10_000 else 200)
    elapsed = time.perf_counter() - began

    attempted = ledger.attempted
    lost = [i for i in attempted if i not in ledger.outcomes]
    doubled = [i for i, labels in ledger.outcomes.items() if len(labels) != 1]
    completions_off = [i for i in attempted if ledger.completions[i] != 1]
    ran_twice = [i for i, n in ledger.executions.items() if n > 1]
    labels = Counter(labels[0] for labels in ledger.outcomes.values())
    metrics = runtime.metrics()
    print(
        f"\nstress ({runtime.implementation}): {len(attempted)} commands in {elapsed:.1f} s; "
        f"outcomes {dict(labels)}; lost {len(lost)}, duplicated {len(doubled)}, "
        f"completions != 1: {len(completions_off)}, executed twice: {len(ran_twice)}, hung callers {len(hung)}; "
        f"runtime {metrics}"
    )
    assert not hung, f"callers still waiting: {hung}"
    assert len(attempted) == TOTAL
    assert not lost, f"{len(lost)} commands lost, e.g. {lost[:5]}"
    assert not doubled, f"{len(doubled)} commands with more than one outcome, e.g. {doubled[:5]}"
    assert not completions_off, f"oneshots not completed exactly once: {completions_off[:5]}"
    assert not ran_twice, f"commands executed twice: {ran_twice[:5]}"
    assert not ledger.wrong, ledger.wrong[:5]
    assert labels["result"] > 0 and labels["error"] > 0 and labels["timeout"] > 0 and labels["shutdown"] > 0
    assert labels["cancelled"] > 0
    assert metrics.in_flight == 0 and metrics.submitted == metrics.finished


# -- streams --------------------------------------------------------------------------------

STREAMS = 10_000 if _MODE == "long" else (max(60, int(_MODE) // 10) if _MODE.isdigit() else 1_000)
STREAM_KINDS = ("full", "full", "break", "error", "timeout", "cancel")


class StreamLedger:
    """What each stream's producer made and where it stopped; what its consumer received."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: Counter[int] = Counter()  # producer bodies entered (runtime thread only)
        self.closed: Counter[int] = Counter()  # producer finally blocks run (runtime thread only)
        self.used: Counter[int] = Counter()  # items the consumer has used (its own thread only)
        self.ahead: list[str] = []  # the producer ran more than the buffer ahead
        self.received: dict[int, list[int]] = {}
        self.outcomes: dict[int, list[str]] = {}
        self.wrong: list[str] = []

    def outcome(self, sid: int, label: str, got: list[int]) -> None:
        with self.lock:
            self.outcomes.setdefault(sid, []).append(label)
            self.received[sid] = got


def _stream_plan(seed: int) -> list[tuple[int, str, int, int, int]]:
    """(stream id, kind, items, where it stops or breaks, buffer) for every stream."""
    rng = random.Random(seed)
    plan = []
    for sid in range(STREAMS):
        n = rng.randint(1, 200)
        plan.append((sid, rng.choice(STREAM_KINDS), n, rng.randrange(n), rng.choice((1, 2, 4, 16, 64))))
    return plan


def _stream_label(kind: str, error: BaseException | None) -> str:
    from agybridge import StreamTimeoutError

    if error is None:
        return "done"
    if isinstance(error, RuntimeShutdownError):
        return "shutdown"
    if isinstance(error, StreamTimeoutError):
        return "timeout"
    if isinstance(error, ValueError) and kind == "error":
        return "error"
    if isinstance(error, (asyncio.CancelledError, CommandCancelledError)):
        return "cancelled"
    return f"unexpected {type(error).__name__}: {error}"


@pytest.mark.timeout(1800 if STREAMS > 1_000 else 120)
def test_stress_streams_lose_duplicate_reorder_nothing_and_close_every_producer_once(core: ModuleType) -> None:
    import trio

    runtime = PythonRuntime(make_config(shutdown_grace=0.05, operation_timeout=60), core=core).start()
    ledger = StreamLedger()
    plan = _stream_plan(4321)
    buffers = {sid: buffer for sid, _kind, _n, _stop, buffer in plan}

    async def producer(sid: int, kind: str, n: int, stop: int) -> Any:
        ledger.started[sid] += 1
        made = 0
        try:
            for i in range(n):
                if i == stop and kind == "timeout":
                    await asyncio.sleep(30)  # a stall: the consumer's item timeout fires first
                if i == stop and kind == "error":
                    raise ValueError(sid)
                if i % 7 == 3:
                    await asyncio.sleep(0)
                made += 1
                if made - ledger.used[sid] > buffers[sid]:
                    ledger.ahead.append(f"stream {sid}: item {i} made with {ledger.used[sid]} used")
                yield i
            if kind == "cancel":
                await asyncio.sleep(30)  # held open until the consumer cancels
        finally:
            ledger.closed[sid] += 1

    def expected(kind: str, n: int, stop: int, label: str, got: list[int]) -> str | None:
        """What is wrong with *got*, or None."""
        if got != list(range(len(got))):
            return f"items out of order, lost or doubled: {got[:20]}"
        want = {"full": n, "break": stop + 1, "error": stop, "timeout": stop, "cancel": None}[kind]
        if label == "shutdown" or want is None:
            return None if len(got) <= n else f"{len(got)} items of {n}"
        if label == "timeout":
            # Under load a 50 ms item timeout may fire before the stall; never after it.
            return None if len(got) <= want else f"{len(got)} items past a stall at {want}"
        if len(got) != want:
            return f"{len(got)} items, expected {want} ({label})"
        return None

    def stream_of(sid: int, kind: str, n: int, stop: int) -> Any:
        return {"buffer": buffers[sid], "item_timeout": 0.05 if kind == "timeout" else 20}

    def consume_in_thread(share: list[tuple[int, str, int, int, int]]) -> None:
        for sid, kind, n, stop, _buffer in share:
            got: list[int] = []
            error: BaseException | None = None
            items = runtime.stream(producer, sid, kind, n, stop).with_options(**stream_of(sid, kind, n, stop))
            try:
                for item in items:
                    got.append(item)
                    ledger.used[sid] += 1
                    if kind == "break" and item == stop:
                        break
                    if kind == "cancel" and len(got) == n:
                        items.close()  # a thread's way to cancel
            except Exception as exc:
                error = exc
            label = _stream_label(kind, error)
            if kind == "cancel" and error is None:
                label = "cancelled"
            ledger.outcome(sid, label, got)

    async def consume_async(sid: int, kind: str, n: int, stop: int) -> None:
        got: list[int] = []
        error: BaseException | None = None
        try:
            async with runtime.astream(producer, sid, kind, n, stop).with_options(
                **stream_of(sid, kind, n, stop)
            ) as items:
                async for item in items:
                    got.append(item)
                    ledger.used[sid] += 1
                    if kind == "break" and item == stop:
                        break
        except (Exception, asyncio.CancelledError) as exc:
            error = exc
        ledger.outcome(sid, _stream_label(kind, error), got)

    async def asyncio_host(share: list[tuple[int, str, int, int, int]]) -> None:
        rng = random.Random(5)
        loop = asyncio.get_running_loop()
        for start in range(0, len(share), 40):
            tasks = []
            for sid, kind, n, stop, _buffer in share[start : start + 40]:
                task = loop.create_task(consume_async(sid, kind, n, stop))
                if kind == "cancel":
                    loop.call_later(rng.uniform(0.0, 0.02), task.cancel)
                tasks.append(task)
            await asyncio.gather(*tasks, return_exceptions=True)

    async def trio_one(sid: int, kind: str, n: int, stop: int, rng: random.Random) -> None:
        limit = rng.uniform(0.0, 0.02) if kind == "cancel" else float("inf")
        with trio.move_on_after(limit) as scope:
            await consume_async(sid, kind, n, stop)
        if scope.cancelled_caught:
            ledger.outcome(sid, "cancelled", ledger.received.get(sid, []))

    async def trio_host(share: list[tuple[int, str, int, int, int]]) -> None:
        rng = random.Random(6)
        for start in range(0, len(share), 40):
            async with trio.open_nursery() as nursery:
                for sid, kind, n, stop, _buffer in share[start : start + 40]:
                    nursery.start_soon(trio_one, sid, kind, n, stop, rng)

    cut1, cut2 = int(STREAMS * 0.5), int(STREAMS * 0.75)
    thread_shares = [plan[k:cut1:4] for k in range(4)]
    workers = [threading.Thread(target=consume_in_thread, args=(share,)) for share in thread_shares]
    workers.append(threading.Thread(target=lambda: asyncio.run(asyncio_host(plan[cut1:cut2]))))
    workers.append(threading.Thread(target=lambda: trio.run(trio_host, plan[cut2:])))

    def shut_down_midway() -> None:
        while len(ledger.outcomes) < STREAMS * 0.8 and not stop_monitor.is_set():
            time.sleep(0.001)
        runtime.shutdown(grace=0.05)

    stop_monitor = threading.Event()
    monitor = threading.Thread(target=shut_down_midway)
    began = time.perf_counter()
    hung = _run_workers(workers, monitor, stop_monitor, 1500 if STREAMS > 1_000 else 100)
    runtime.shutdown(timeout=30)
    elapsed = time.perf_counter() - began

    kinds = {sid: (kind, n, stop) for sid, kind, n, stop, _buffer in plan}
    problems = [
        f"stream {sid} ({kinds[sid][0]}): {why}"
        for sid, labels in ledger.outcomes.items()
        if (why := expected(*kinds[sid], labels[0], ledger.received[sid])) is not None
    ]
    lost = [sid for sid in kinds if sid not in ledger.outcomes]
    doubled = [sid for sid, labels in ledger.outcomes.items() if len(labels) != 1]
    unexpected = [f"{sid}: {labels}" for sid, labels in ledger.outcomes.items() if labels[0].startswith("unexpected")]
    not_closed_once = [sid for sid in ledger.started if ledger.closed[sid] != 1 or ledger.started[sid] != 1]
    labels = Counter(labels[0] for labels in ledger.outcomes.values())
    items = sum(len(got) for got in ledger.received.values())
    print(
        f"\nstream stress ({runtime.implementation}): {STREAMS} streams, {items} items in {elapsed:.1f} s; "
        f"outcomes {dict(labels)}; producers started {len(ledger.started)}, closed exactly once "
        f"{len(ledger.started) - len(not_closed_once)}; ran ahead of the buffer {len(ledger.ahead)}"
    )
    assert not hung, f"consumers still waiting: {hung}"
    assert not lost and not doubled, (lost[:5], doubled[:5])
    assert not unexpected, unexpected[:5]
    assert not problems, problems[:5]
    assert not not_closed_once, [(sid, ledger.started[sid], ledger.closed[sid]) for sid in not_closed_once[:5]]
    assert not ledger.ahead, ledger.ahead[:5]
    assert labels["done"] and labels["cancelled"] and labels["error"] and labels["timeout"] and labels["shutdown"]
