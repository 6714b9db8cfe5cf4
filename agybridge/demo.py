"""``python -m agybridge demo``: the whole bridge working, end to end.

Agents run on the one runtime thread; host threads, an asyncio host loop and a trio host
all chat with every agent at once, every other turn streamed chunk by chunk. Agents call
host tools (a sync tool in a worker thread, an async tool on the loop that registered the
agent), a hook records every event and a policy denies one tool. The run checks its own
bookkeeping: it exits non-zero if any chat is lost, fails unexpectedly, or if the counts
of tool calls, denials, hooks and streamed chats disagree with what the scenario must
produce. The summary sets a streamed chat's time to its first chunk against its whole reply.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from agybridge.config import RuntimeConfig
from agybridge.runtime import PythonRuntime
from agybridge.state import AgentBridgeState, Deny
from agybridge.testing import ScriptedAgent

__all__ = ["DemoOptions", "DemoReport", "main", "run_demo"]

CITIES = ("Paris", "Lagos", "Lima", "Osaka", "Oslo", "Quito", "Perth", "Delhi")
DENY_EVERY = 5  # every 5th turn asks for the forbidden tool
STREAM_EVERY = 2  # every 2nd turn is a streamed chat (chat_stream / achat_stream)


@dataclass(frozen=True)
class DemoOptions:
    agents: int = 6
    turns: int = 10
    threads: int = 3
    asyncio_host: bool = True
    trio_host: bool = True
    latency: float = 0.002
    spacing: float = 0.0005
    progress: bool | None = None  # None: when stderr is a terminal
    sdk: str = "scripted"
    core: Any = None


@dataclass
class DemoReport:
    """What the demo did, and whether it all added up."""

    implementation: str
    chats_expected: int
    chats_ok: int = 0
    chats_failed: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    streamed: Counter[str] = field(default_factory=Counter)  # streamed chats completed, per host kind
    first_chunk: list[float] = field(default_factory=list)  # streamed chats: time to the first chunk
    whole_reply: list[float] = field(default_factory=list)  # streamed chats: time to the last chunk
    tool_runs: Counter[str] = field(default_factory=Counter)
    async_tool_hosts: Counter[str] = field(default_factory=Counter)
    denials: int = 0
    hooks: Counter[str] = field(default_factory=Counter)
    wall_time: float = 0.0
    metrics: Any = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Recorder:
    """Thread-safe counters shared by hooks, tools and drivers."""

    def __init__(self, report: DemoReport) -> None:
        self.report = report
        self.lock = threading.Lock()
        self.done = 0

    def hook(self, agent_id: str, event: str, context: Any) -> None:
        with self.lock:
            self.report.hooks[event] += 1

    def tool(self, name: str, host: str | None = None) -> None:
        with self.lock:
            self.report.tool_runs[name] += 1
            if host is not None:
                self.report.async_tool_hosts[host] += 1

    def streamed(self, host: str, first: float, whole: float) -> None:
        with self.lock:
            self.report.streamed[host] += 1
            self.report.first_chunk.append(first)
            self.report.whole_reply.append(whole)

    def chat(self, seconds: float | None, error: str | None, reply: str = "") -> None:
        with self.lock:
            self.done += 1
            if error is None:
                self.report.chats_ok += 1
                self.report.latencies.append(seconds or 0.0)
                self.report.denials += reply.count(" denied (")
            else:
                self.report.chats_failed += 1
                if len(self.report.failures) < 10:
                    self.report.failures.append(error)


def _make_state(recorder: _Recorder, host_kind: str) -> AgentBridgeState:
    """Tools, hooks and a policy for one agent; the async tool matches its host library."""

    def weather(city: str) -> str:
        """Current weather for a city (a blocking call, run in a worker thread)."""
        time.sleep(0.0005)
        recorder.tool("weather")
        return f"sunny in {city}"

    if host_kind == "trio":

        async def convert(amount: float, rate: float) -> float:
            """Convert an amount at a rate (async, runs in the trio host)."""
            import trio

            await trio.sleep(0)
            recorder.tool("convert", "trio host")
            return round(amount * rate, 2)

    else:

        async def convert(amount: float, rate: float) -> float:
            """Convert an amount at a rate (async, runs on the asyncio loop that registered it)."""
            await asyncio.sleep(0)
            where = "asyncio host loop" if host_kind == "asyncio" else "runtime loop (no host loop)"
            recorder.tool("convert", where)
            return round(amount * rate, 2)

    def delete_records(table: str) -> str:
        """Delete every record of a table (always denied by policy)."""
        recorder.tool("delete_records")
        return f"deleted {table}"

    def no_deletes(agent_id: str, tool_name: str, context: Any) -> Any:
        return Deny("deleting records is not allowed in the demo") if tool_name == "delete_records" else True

    hooks = {event: [recorder.hook] for event in ("before_chat", "after_chat", "before_tool", "after_tool", "on_error")}
    return AgentBridgeState(tools=[weather, convert, delete_records], hooks=hooks, policies=[no_deletes])


def _message(agent_index: int, turn: int) -> str:
    city = CITIES[(agent_index + turn) % len(CITIES)]
    message = f"weather(city={city}) convert(amount={turn + 1},rate=1.5)"
    if turn % DENY_EVERY == DENY_EVERY - 1:
        message += " delete_records(table=users)"
    return message


def _agent_factory(options: DemoOptions, agent_id: str) -> Callable[[], Any]:
    if options.sdk == "pydantic-ai":
        from agybridge.adapters.pydantic_ai import demo_agent_factory

        factory: Callable[[], Any] = demo_agent_factory(agent_id, latency=options.latency)
        return factory
    if options.sdk == "openai-agents":
        from agybridge.adapters.openai_agents import demo_agent_factory as openai_agents_factory

        return openai_agents_factory(agent_id, latency=options.latency)
    return lambda: ScriptedAgent(agent_id, latency=options.latency)


class _Progress:
    def __init__(self, recorder: _Recorder, total: int, enabled: bool, stream: TextIO) -> None:
        self.recorder, self.total, self.enabled, self.stream = recorder, total, enabled, stream
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="agybridge-demo-progress", daemon=True)

    def __enter__(self) -> _Progress:
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.stop.set()
            self.thread.join(timeout=2)
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        done = self.recorder.done
        width = 30
        filled = int(width * done / self.total) if self.total else width
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} chats")
        self.stream.flush()

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            self._draw()


def run_demo(options: DemoOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> DemoReport:
    """Run the scenario and return its report (printing is left to :func:`print_report`)."""
    host_kinds = ["thread"] + (["asyncio"] if options.asyncio_host else []) + (["trio"] if options.trio_host else [])
    drivers = options.threads + (1 if options.asyncio_host else 0) + (1 if options.trio_host else 0)
    config = RuntimeConfig(inter_agent_delay=options.spacing, chat_timeout=60, shutdown_grace=2)
    runtime = PythonRuntime(config, core=options.core)
    report = DemoReport(runtime.implementation, chats_expected=options.agents * options.turns * drivers)
    recorder = _Recorder(report)
    agent_ids = [f"agent-{i}" for i in range(options.agents)]
    by_host: dict[str, list[int]] = {kind: [] for kind in host_kinds}
    for i in range(options.agents):
        by_host[host_kinds[i % len(host_kinds)]].append(i)

    registered = threading.Barrier(len(host_kinds), timeout=60)
    all_done = threading.Event()
    start_line = threading.Event()

    def chat_script() -> list[tuple[str, str, bool]]:
        """(agent, message, streamed?) for every turn of every agent."""
        return [
            (agent_ids[a], _message(a, t), t % STREAM_EVERY == STREAM_EVERY - 1)
            for t in range(options.turns)
            for a in range(options.agents)
        ]

    def record(started: float, reply: Any, error: BaseException | None) -> None:
        if error is None:
            recorder.chat(time.perf_counter() - started, None, str(reply))
        else:
            recorder.chat(None, f"{type(error).__name__}: {error}")

    def record_stream(host: str, started: float, first: float | None, chunks: list[str]) -> None:
        whole = time.perf_counter() - started
        recorder.streamed(host, whole if first is None else first - started, whole)
        record(started, "".join(chunks), None)

    async def chat_once(host: str, agent_id: str, message: str, streamed: bool) -> None:
        # One coroutine serves both async hosts: achat detects asyncio or trio itself.
        started = time.perf_counter()
        try:
            if not streamed:
                reply = await runtime.achat(agent_id, message)
            else:
                first: float | None = None
                chunks: list[str] = []
                async for chunk in runtime.achat_stream(agent_id, message):
                    first = first or time.perf_counter()
                    chunks.append(chunk)
                record_stream(host, started, first, chunks)
                return
        except Exception as exc:  # noqa: BLE001 - counted and reported
            record(started, None, exc)
        else:
            record(started, reply, None)

    def thread_driver() -> None:
        start_line.wait(60)
        for agent_id, message, streamed in chat_script():
            started = time.perf_counter()
            try:
                if not streamed:
                    reply = runtime.chat(agent_id, message)
                else:
                    first: float | None = None
                    chunks: list[str] = []
                    for chunk in runtime.chat_stream(agent_id, message):
                        first = first or time.perf_counter()
                        chunks.append(chunk)
                    record_stream("thread", started, first, chunks)
                    continue
            except Exception as exc:  # noqa: BLE001 - counted and reported
                record(started, None, exc)
            else:
                record(started, reply, None)

    async def asyncio_host() -> None:
        for i in by_host.get("asyncio", []):
            await runtime.aregister_agent(
                agent_ids[i], _agent_factory(options, agent_ids[i]), _make_state(recorder, "asyncio")
            )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, registered.wait)
        await loop.run_in_executor(None, start_line.wait, 60)
        await asyncio.gather(*(chat_once("asyncio", a, m, streamed) for a, m, streamed in chat_script()))
        # Keep this loop alive: agents registered here run their async tools on it.
        await loop.run_in_executor(None, all_done.wait, 120)

    async def trio_host() -> None:
        import trio

        for i in by_host.get("trio", []):
            await runtime.aregister_agent(
                agent_ids[i], _agent_factory(options, agent_ids[i]), _make_state(recorder, "trio")
            )
        await trio.to_thread.run_sync(registered.wait)
        await trio.to_thread.run_sync(start_line.wait, 60)
        async with trio.open_nursery() as nursery:
            for agent_id, message, streamed in chat_script():
                nursery.start_soon(chat_once, "trio", agent_id, message, streamed)
        await trio.to_thread.run_sync(all_done.wait, 120)

    host_errors: list[BaseException] = []

    def guarded(fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported as a problem
                host_errors.append(exc)
                registered.abort()

        return run

    threads: list[threading.Thread] = []
    began = time.perf_counter()
    with runtime:
        if options.asyncio_host:
            threads.append(
                threading.Thread(target=guarded(lambda: asyncio.run(asyncio_host())), name="demo-asyncio-host")
            )
        if options.trio_host:
            import trio

            threads.append(threading.Thread(target=guarded(lambda: trio.run(trio_host)), name="demo-trio-host"))
        for t in threads:
            t.start()
        try:
            for i in by_host["thread"]:
                runtime.register_agent(
                    agent_ids[i], _agent_factory(options, agent_ids[i]), _make_state(recorder, "thread")
                )
            registered.wait()
        except threading.BrokenBarrierError:
            pass
        drivers_threads = [
            threading.Thread(target=thread_driver, name=f"demo-host-thread-{n}") for n in range(options.threads)
        ]
        for t in drivers_threads:
            t.start()
        show = options.progress if options.progress is not None else err.isatty()
        with _Progress(recorder, report.chats_expected, show, err):
            start_line.set()
            deadline = time.monotonic() + 600
            while recorder.done < report.chats_expected and time.monotonic() < deadline:
                if host_errors or not any(t.is_alive() for t in drivers_threads + threads):
                    break
                time.sleep(0.01)
        all_done.set()
        for t in drivers_threads + threads:
            t.join(timeout=60)
        report.metrics = runtime.metrics()
    report.wall_time = time.perf_counter() - began
    _check(report, options, drivers, host_errors)
    return report


def _check(report: DemoReport, options: DemoOptions, drivers: int, host_errors: list[BaseException]) -> None:
    problems = report.problems
    for exc in host_errors:
        problems.append(f"a host failed: {type(exc).__name__}: {exc}")
    lost = report.chats_expected - report.chats_ok - report.chats_failed
    if lost:
        problems.append(f"{lost} chats never completed")
    if report.chats_failed:
        problems.append(f"{report.chats_failed} chats failed: {report.failures[:3]}")
    denied_turns = sum(1 for t in range(options.turns) if t % DENY_EVERY == DENY_EVERY - 1)
    expected_denials = denied_turns * options.agents * drivers
    if report.chats_failed == 0 and report.denials != expected_denials:
        problems.append(f"{report.denials} denials reported, {expected_denials} expected")
    if report.tool_runs["delete_records"]:
        problems.append("the denied tool ran")
    streamed_turns = sum(1 for t in range(options.turns) if t % STREAM_EVERY == STREAM_EVERY - 1)
    expected_streamed = streamed_turns * options.agents * drivers
    streamed = sum(report.streamed.values())
    if report.chats_failed == 0 and streamed != expected_streamed:
        problems.append(f"{streamed} streamed chats completed, {expected_streamed} expected")
    if any(first > whole for first, whole in zip(report.first_chunk, report.whole_reply)):
        problems.append("a streamed chat's first chunk came after its whole reply")
    if report.chats_failed == 0 and report.hooks["before_chat"] != report.chats_expected:
        problems.append(f"before_chat fired {report.hooks['before_chat']} times for {report.chats_expected} chats")
    metrics = report.metrics
    if metrics is not None and (metrics.failed or metrics.timed_out or metrics.submitted != metrics.finished):
        problems.append(f"runtime metrics do not add up: {metrics}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def print_report(report: DemoReport, options: DemoOptions, out: TextIO = sys.stdout) -> None:
    write = out.write
    drivers = options.threads + int(options.asyncio_host) + int(options.trio_host)
    write(
        f"agybridge demo: core implementation '{report.implementation}', "
        f"{platform.python_implementation()} {platform.python_version()}, agents: {options.sdk}\n"
    )
    write(
        f"  hosts        {options.threads} threads"
        f"{', 1 asyncio loop' if options.asyncio_host else ''}{', 1 trio run' if options.trio_host else ''}"
        f" ({drivers} drivers) x {options.agents} agents x {options.turns} turns\n"
    )
    write(f"  chats        {report.chats_ok} ok, {report.chats_failed} failed, expected {report.chats_expected}\n")
    runs = sum(report.tool_runs.values())
    detail = ", ".join(f"{name} {n}" for name, n in sorted(report.tool_runs.items()))
    write(f"  tool calls   {runs} ran ({detail}), {report.denials} denied by policy\n")
    hosts = ", ".join(f"{where} {n}" for where, n in sorted(report.async_tool_hosts.items()))
    write(f"  async tools  ran on: {hosts or 'none'}\n")
    hooks = ", ".join(
        f"{event} {report.hooks[event]}"
        for event in ("before_chat", "after_chat", "before_tool", "after_tool", "on_error")
    )
    write(f"  hooks fired  {hooks}\n")
    if report.latencies:
        ordered = sorted(report.latencies)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        write(
            f"  round trip   p50 {_ms(statistics.median(ordered))}, p99 {_ms(p99)}, max {_ms(ordered[-1])} per chat\n"
        )
    if report.first_chunk:
        hosts = ", ".join(f"{host} {n}" for host, n in sorted(report.streamed.items()))
        first = sorted(report.first_chunk)
        whole = sorted(report.whole_reply)
        write(
            f"  streamed     {len(first)} chats ({hosts}): first chunk p50 {_ms(statistics.median(first))}, "
            f"whole reply p50 {_ms(statistics.median(whole))} "
            f"(first chunk at {statistics.median(first) / statistics.median(whole):.0%} of the reply time)\n"
        )
    metrics = report.metrics
    if metrics is not None:
        write(
            f"  runtime      submitted {metrics.submitted}, completed {metrics.completed}, failed {metrics.failed}, "
            f"timed out {metrics.timed_out}, cancelled {metrics.cancelled}, wake-ups {metrics.wakeups}\n"
        )
    write(f"  wall time    {report.wall_time:.2f} s\n")
    if report.ok:
        write("RESULT: OK - every chat completed exactly once and every count adds up\n")
    else:
        write("RESULT: FAILED\n")
        for problem in report.problems:
            write(f"  - {problem}\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agents", type=int, default=6, help="number of agents (default 6)")
    parser.add_argument("--turns", type=int, default=10, help="chats per agent per driver (default 10)")
    parser.add_argument("--threads", type=int, default=3, help="plain host threads driving chats (default 3)")
    parser.add_argument("--no-asyncio", dest="asyncio_host", action="store_false", help="leave out the asyncio host")
    parser.add_argument("--no-trio", dest="trio_host", action="store_false", help="leave out the trio host")
    parser.add_argument("--latency", type=float, default=0.002, help="simulated model latency per step, s")
    parser.add_argument("--spacing", type=float, default=0.0005, help="inter-agent delay between chat starts, s")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: on a terminal)"
    )
    parser.add_argument(
        "--sdk", choices=("scripted", "pydantic-ai", "openai-agents"), default="scripted", help="which agents to run"
    )
    parser.add_argument("--pure-python", action="store_true", help="run on the pure-Python core twin")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agybridge demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def run_from_args(args: argparse.Namespace) -> int:
    for name in ("agents", "turns"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be at least 1")
    if args.threads < 0 or (args.threads == 0 and not (args.asyncio_host or args.trio_host)):
        raise SystemExit("--threads must be >= 0, and at least one host must drive chats")
    core = None
    if args.pure_python:
        from agybridge import _core_py

        core = _core_py
    if args.trio_host:
        try:
            import trio  # noqa: F401
        except ImportError:
            raise SystemExit("the trio host needs trio: pip install 'agybridge[demo]', or pass --no-trio") from None
    if args.sdk == "pydantic-ai":
        try:
            import pydantic_ai  # noqa: F401
        except ImportError:
            raise SystemExit("--sdk pydantic-ai needs: pip install 'agybridge[pydantic-ai]'") from None
    if args.sdk == "openai-agents":
        try:
            import agents  # noqa: F401
        except ImportError:
            raise SystemExit("--sdk openai-agents needs: pip install 'agybridge[openai-agents]'") from None
    options = DemoOptions(
        agents=args.agents,
        turns=args.turns,
        threads=args.threads,
        asyncio_host=args.asyncio_host,
        trio_host=args.trio_host,
        latency=args.latency,
        spacing=args.spacing,
        progress=args.progress,
        sdk=args.sdk,
        core=core,
    )
    report = run_demo(options)
    print_report(report, options)
    return 0 if report.ok else 1
