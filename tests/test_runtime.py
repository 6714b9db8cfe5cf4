"""PythonRuntime: callers of every kind, concurrency, cancellation, timeouts, lifecycle."""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from types import ModuleType
from typing import Any

import pytest
from conftest import (
    asyncio_host,
    cancel_once_started,
    ctrl_c_once,
    in_thread,
    make_config,
    remote_probe,
    self_cancelling,
    settled,
    trio_cancel_once_started,
    trio_host,
)

from agybridge import (
    AgentAlreadyRegisteredError,
    Chat,
    ChatTimeoutError,
    CommandCancelledError,
    DeadlockError,
    ForkedRuntimeError,
    OperationTimeoutError,
    PythonRuntime,
    Run,
    RuntimeBusyError,
    RuntimeDiedError,
    RuntimeShutdownError,
    UnknownAgentError,
)
from agybridge.runtime import caller_spin_budget

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("REQUEST_ID")


class EchoAgent:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.closed = False

    async def chat(self, message: str) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        return f"echo:{message}"

    async def aclose(self) -> None:
        self.closed = True


async def add(a: int, b: int) -> int:
    return a + b


async def fail_deep() -> None:
    await asyncio.sleep(0)
    raise LookupError("remote failure")


# ------------------------------------------------------------------------------------------
# Callers of every kind
# ------------------------------------------------------------------------------------------


def test_sync_caller(runtime: PythonRuntime) -> None:
    runtime.register_agent("echo", EchoAgent)
    assert runtime.chat("echo", "hi") == "echo:hi"
    assert runtime.run(add, 2, 3) == 5
    assert runtime.send_command(Run(add, (1, 1))) == 2
    assert runtime.send_command(Chat("echo", "direct")) == "echo:direct"
    assert runtime.agent_ids() == ["echo"]


def test_runs_on_the_named_runtime_thread(runtime: PythonRuntime) -> None:
    async def where() -> tuple[str, int]:
        return threading.current_thread().name, threading.get_ident()

    name, ident = runtime.run(where)
    assert name == "agy-bridge-python-runtime"
    assert ident != threading.get_ident()
    assert runtime.run(where)[1] == ident, "one thread runs every command"


def test_asyncio_caller_on_another_thread(runtime: PythonRuntime) -> None:
    runtime.register_agent("echo", EchoAgent)

    async def host() -> list[str]:
        replies = await asyncio.gather(*(runtime.achat("echo", f"m{i}") for i in range(20)))
        replies.append(str(await runtime.arun(add, 20, 22)))
        return replies

    replies = asyncio_host(host)
    assert replies == [f"echo:m{i}" for i in range(20)] + ["42"]


def test_trio_caller(runtime: PythonRuntime) -> None:
    import trio

    runtime.register_agent("echo", EchoAgent)

    async def host() -> list[str]:
        results: list[str] = []

        async def one(i: int) -> None:
            results.append(await runtime.achat("echo", f"t{i}"))

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
        results.append(str(await runtime.arun(add, 1, 2)))
        return results

    results = trio_host(host)
    assert sorted(results[:-1]) == sorted(f"echo:t{i}" for i in range(20))
    assert results[-1] == "3"


def test_caller_from_the_runtime_loop_itself(runtime: PythonRuntime) -> None:
    """Agent code on the runtime loop may await another command without deadlocking."""
    runtime.register_agent("echo", EchoAgent)

    async def nested() -> str:
        return await runtime.achat("echo", "nested")

    assert runtime.run(nested) == "echo:nested"


def test_exception_carried_with_traceback(runtime: PythonRuntime) -> None:
    with pytest.raises(LookupError, match="remote failure") as info:
        runtime.run(fail_deep)
    names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "fail_deep" in names


def test_exception_reaches_async_callers(runtime: PythonRuntime) -> None:
    async def host() -> BaseException:
        try:
            await runtime.arun(fail_deep)
        except LookupError as exc:
            return exc
        raise AssertionError("no exception")

    assert "remote failure" in str(asyncio_host(host))

    async def trio_main() -> str:
        try:
            await runtime.arun(fail_deep)
        except LookupError as exc:
            return str(exc)
        return "no exception"

    assert trio_host(trio_main) == "remote failure"


def test_contextvars_are_carried_into_the_command(runtime: PythonRuntime) -> None:
    async def read() -> str | None:
        return REQUEST_ID.get(None)

    token = REQUEST_ID.set("req-123")
    try:
        assert runtime.run(read) == "req-123"
    finally:
        REQUEST_ID.reset(token)
    assert runtime.run(read) is None
    # A host thread that never set it sees nothing, whatever the runtime's creator had.
    token = REQUEST_ID.set("creator")
    try:
        assert in_thread(lambda: runtime.run(read)) is None
    finally:
        REQUEST_ID.reset(token)

    async def host() -> str | None:
        REQUEST_ID.set("asyncio-host")
        return await runtime.arun(read)

    assert asyncio_host(host) == "asyncio-host"


# ------------------------------------------------------------------------------------------
# Concurrency
# ------------------------------------------------------------------------------------------


def test_thousand_slow_commands_run_concurrently(runtime: PythonRuntime) -> None:
    """Each command waits until all 1,000 are running at once: serialization would deadlock."""
    total = 1000
    arrived = [0]
    holder: list[asyncio.Event] = []

    async def slow(i: int) -> int:
        if not holder:
            holder.append(asyncio.Event())
        arrived[0] += 1
        if arrived[0] == total:
            holder[0].set()
        await asyncio.wait_for(holder[0].wait(), 20)
        await asyncio.sleep(0.05)
        return i

    async def host() -> list[int]:
        return list(await asyncio.gather(*(runtime.arun(slow, i) for i in range(total))))

    assert asyncio_host(host, timeout=40) == list(range(total))
    metrics = runtime.metrics()
    assert metrics.completed >= total and metrics.in_flight == 0


def test_slow_chat_does_not_delay_a_fast_run(runtime: PythonRuntime) -> None:
    release = threading.Event()

    class Stuck:
        async def chat(self, message: str) -> str:
            while not release.is_set():
                await asyncio.sleep(0.005)
            return "done"

    runtime.register_agent("stuck", Stuck)
    chat_result: list[str] = []
    chat_thread = threading.Thread(target=lambda: chat_result.append(runtime.chat("stuck", "x", timeout=20)))
    chat_thread.start()
    try:
        assert runtime.run(add, 1, 1, timeout=10) == 2  # finishes while the chat is stuck
        assert chat_result == []
    finally:
        release.set()
        chat_thread.join(timeout=10)
    assert chat_result == ["done"]


def test_callers_spin_only_when_their_command_is_alone(runtime: PythonRuntime) -> None:
    """Behind other commands the answer is not microseconds away: spinning would only steal a core.

    The budget is asked right after a caller submitted its command, so one command in
    flight is the caller's own and two mean another is ahead of it.
    """
    spin = runtime.config.caller_spin
    assert spin > 0
    assert caller_spin_budget(spin, runtime.metrics().in_flight + 1) == spin
    started = [threading.Event(), threading.Event()]
    release = threading.Event()

    async def held(index: int) -> int:
        started[index].set()
        while not release.is_set():
            await asyncio.sleep(0.002)
        return index

    holders = [threading.Thread(target=runtime.run, args=(held, i), kwargs={"timeout": 20}) for i in range(2)]
    holders[0].start()
    try:
        assert started[0].wait(10)
        assert runtime.metrics().in_flight == 1
        assert caller_spin_budget(spin, runtime.metrics().in_flight) == spin  # only "its own" command
        holders[1].start()
        assert started[1].wait(10)
        assert runtime.metrics().in_flight == 2
        assert caller_spin_budget(spin, runtime.metrics().in_flight) == 0.0  # another command ahead: park
    finally:
        release.set()
        for holder in holders:
            holder.join(timeout=10)
    assert not any(holder.is_alive() for holder in holders)


def test_burst_from_many_threads_coalesces_wakeups(runtime: PythonRuntime) -> None:
    gate = threading.Event()
    started = threading.Event()

    async def block_loop() -> None:
        started.set()
        gate.wait(10)  # deliberately blocks the loop so a backlog builds up

    blocker = threading.Thread(target=lambda: runtime.run(block_loop))
    blocker.start()
    assert started.wait(10)
    before = runtime.metrics().wakeups
    results: list[int] = []
    lock = threading.Lock()

    def producer(p: int) -> None:
        for i in range(50):
            value = runtime.run(add, p, i)
            with lock:
                results.append(value)

    threads = [threading.Thread(target=producer, args=(p,)) for p in range(8)]
    for t in threads:
        t.start()
    # Let every producer queue its first command behind the blocked loop, then release it.
    deadline = time.monotonic() + 10
    while runtime.metrics().queued < 8 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert runtime.metrics().queued == 8
    assert runtime.metrics().wakeups - before <= 1, "8 queued pushes must cost at most one wake-up"
    gate.set()
    for t in threads:
        t.join(timeout=20)
    blocker.join(timeout=10)
    assert sorted(results) == sorted(p + i for p in range(8) for i in range(50))


# ------------------------------------------------------------------------------------------
# Cancellation, both ways
# ------------------------------------------------------------------------------------------


def test_asyncio_caller_cancellation_cancels_the_remote_task(runtime: PythonRuntime) -> None:
    long_running, started, cancelled = remote_probe()

    async def host() -> bool:
        return await cancel_once_started(runtime.arun(long_running), started)

    assert asyncio_host(host) is True
    assert cancelled.wait(10), "the remote task was not cancelled"
    assert runtime.metrics().cancelled == 1


def test_trio_caller_cancellation_cancels_the_remote_task(runtime: PythonRuntime) -> None:

    long_running, started, cancelled = remote_probe()

    async def host() -> bool:
        return await trio_cancel_once_started(started, runtime.arun, long_running)

    assert trio_host(host) is True
    assert cancelled.wait(10)
    assert runtime.metrics().cancelled == 1


def test_cancel_before_the_remote_task_exists(runtime: PythonRuntime) -> None:
    """A command cancelled while still queued never starts, and counts as cancelled."""
    gate = threading.Event()
    loop_blocked = threading.Event()
    ran = threading.Event()

    async def block_loop() -> None:
        loop_blocked.set()
        gate.wait(10)

    async def should_not_run() -> None:
        ran.set()

    blocker = threading.Thread(target=lambda: runtime.run(block_loop))
    blocker.start()
    assert loop_blocked.wait(10)

    async def host() -> str:
        task = asyncio.ensure_future(runtime.arun(should_not_run))
        await asyncio.sleep(0)  # submitted; the loop is blocked so it stays queued
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "completed"

    assert asyncio_host(host) == "cancelled"
    gate.set()
    blocker.join(timeout=10)
    assert runtime.run(add, 0, 0) == 0  # the loop has drained past the cancelled command
    assert not ran.is_set()
    assert runtime.metrics().cancelled == 1


def test_task_cancelled_on_the_loop_reports_cancellation(runtime: PythonRuntime) -> None:
    with pytest.raises(CommandCancelledError):
        runtime.run(self_cancelling)

    async def host() -> str:
        try:
            await runtime.arun(self_cancelling)
        except CommandCancelledError:
            return "remote-cancelled"
        return "?"

    assert asyncio_host(host) == "remote-cancelled"
    assert runtime.metrics().cancelled == 2


def test_cancel_racing_result_delivery_is_exactly_once(runtime: PythonRuntime) -> None:
    """Cancel at random moments around completion: each command has exactly one outcome."""
    outcomes: list[str] = []

    async def host() -> None:
        for i in range(300):
            task = asyncio.ensure_future(runtime.arun(add, i, 0))
            for _ in range(i % 4):
                await asyncio.sleep(0)
            task.cancel()
            try:
                value = await task
            except asyncio.CancelledError:
                outcomes.append("cancelled")
            else:
                assert value == i
                outcomes.append("result")

    asyncio_host(host, timeout=60)
    assert len(outcomes) == 300
    runtime.run(add, 0, 0)  # barrier: everything before it is accounted
    metrics = runtime.metrics()
    # A task cancelled before its first step never submits; every submitted command has
    # exactly one outcome, and a caller never sees a result for a cancelled command.
    assert metrics.submitted == metrics.finished
    assert metrics.completed + metrics.cancelled == metrics.submitted
    assert metrics.completed >= outcomes.count("result") + 1
    assert metrics.cancelled <= outcomes.count("cancelled")
    assert metrics.in_flight == 0


# ------------------------------------------------------------------------------------------
# Timeouts
# ------------------------------------------------------------------------------------------


def test_sync_timeout_cancels_the_remote_task_and_names_the_command(runtime: PythonRuntime) -> None:
    long_running, _started, cancelled = remote_probe()
    with pytest.raises(OperationTimeoutError) as info:
        runtime.run(long_running, timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert "long_running" in str(info.value) and "0.2 s" in str(info.value)
    assert cancelled.wait(10)
    assert runtime.metrics().timed_out == 1


def test_async_timeouts(runtime: PythonRuntime) -> None:
    long_running, _started, cancelled = remote_probe()

    async def main() -> str:  # the same coroutine serves an asyncio and a trio host
        try:
            await runtime.arun(long_running, timeout=0.1)
        except OperationTimeoutError as exc:
            return str(exc)
        return "no timeout"

    assert "operation timeout" in asyncio_host(main)
    assert cancelled.wait(10)
    cancelled.clear()
    assert "operation timeout" in trio_host(main)
    assert cancelled.wait(10)
    assert runtime.metrics().timed_out == 2


def test_chat_timeout_names_agent_and_limit(core: ModuleType) -> None:
    with PythonRuntime(make_config(chat_timeout=0.2), core=core) as rt:
        rt.register_agent("sleepy", lambda: EchoAgent(delay=30))
        with pytest.raises(ChatTimeoutError) as info:
            rt.chat("sleepy", "hello")
        message = str(info.value)
        assert "'sleepy'" in message and "0.2 s" in message and "chat timeout" in message
        assert settled(rt).timed_out == 1  # counted once the loop finished the task


def test_agents_own_timeout_error_is_not_relabelled(runtime: PythonRuntime) -> None:
    class Flaky:
        async def chat(self, message: str) -> str:
            raise TimeoutError("provider connect timeout")

    runtime.register_agent("flaky", Flaky)
    with pytest.raises(TimeoutError, match="provider connect timeout") as info:
        runtime.chat("flaky", "x")
    if sys.version_info >= (3, 11):
        assert not isinstance(info.value, ChatTimeoutError)


def test_inter_agent_delay_spaces_chat_starts_but_not_runs(core: ModuleType) -> None:
    delay = 0.05
    starts: list[float] = []

    class Recorder:
        async def chat(self, message: str) -> str:
            starts.append(asyncio.get_running_loop().time())
            return message

    run_time: list[float] = []

    async def fast() -> None:
        run_time.append(asyncio.get_running_loop().time())

    with PythonRuntime(make_config(inter_agent_delay=delay), core=core) as rt:
        for i in range(3):
            rt.register_agent(f"a{i}", Recorder)

        async def host() -> None:
            chats = [asyncio.ensure_future(rt.achat(f"a{i % 3}", str(i))) for i in range(6)]
            await asyncio.sleep(0)
            await rt.arun(fast)
            await asyncio.gather(*chats)

        asyncio_host(host)
    assert len(starts) == 6
    gaps = [b - a for a, b in zip(sorted(starts), sorted(starts)[1:])]
    assert min(gaps) >= delay - 1e-3, gaps
    # The Run was not queued behind the spaced chats: it ran before the last chat started.
    assert run_time[0] < max(starts)


# ------------------------------------------------------------------------------------------
# Lifecycle
# ------------------------------------------------------------------------------------------


def test_shutdown_with_work_in_flight_and_queued(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(shutdown_grace=0.5, thread_name="agy-test-shutdown-joins"), core=core).start()
    gate = threading.Event()
    loop_blocked = threading.Event()
    outcomes: dict[str, Any] = {}

    async def quick_finisher() -> str:
        await asyncio.sleep(0.05)
        return "finished in grace"

    async def overrunner() -> str:
        await asyncio.sleep(30)
        return "never"

    async def block_loop() -> None:
        loop_blocked.set()
        gate.wait(10)

    def call(name: str, fn: Any) -> None:
        try:
            outcomes[name] = rt.run(fn, timeout=30)
        except BaseException as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=call, args=(n, f)) for n, f in [("quick", quick_finisher), ("over", overrunner)]]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while rt.metrics().in_flight < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    blocker = threading.Thread(target=call, args=("blocker", block_loop))
    blocker.start()
    assert loop_blocked.wait(10)
    queued = [threading.Thread(target=call, args=(f"queued{i}", quick_finisher)) for i in range(3)]
    for t in queued:
        t.start()
    while rt.metrics().queued < 3 and time.monotonic() < deadline:
        time.sleep(0.001)

    shutdown_thread = threading.Thread(target=rt.shutdown)
    shutdown_thread.start()
    while rt.is_running and time.monotonic() < deadline:
        time.sleep(0.001)
    with pytest.raises(RuntimeShutdownError):
        rt.run(add, 1, 1)  # refused at once once shutdown began
    gate.set()
    shutdown_thread.join(timeout=20)
    for t in [*threads, blocker, *queued]:
        t.join(timeout=20)

    assert outcomes["quick"] == "finished in grace"
    assert isinstance(outcomes["over"], RuntimeShutdownError) and "grace" in str(outcomes["over"])
    for i in range(3):
        # Accepted before the shutdown: they run within its grace (issue 26), not fail.
        assert outcomes[f"queued{i}"] == "finished in grace", outcomes
    assert not rt.is_running
    assert "agy-test-shutdown-joins" not in {t.name for t in threading.enumerate()}, "the runtime thread was joined"
    metrics = rt.metrics()
    assert metrics.shut_down == 1 and metrics.in_flight == 0
    assert metrics.submitted == metrics.finished
    rt.shutdown()  # idempotent
    with pytest.raises(RuntimeShutdownError):
        rt.start()


def test_context_managers(core: ModuleType) -> None:
    with PythonRuntime(make_config(), core=core) as rt:
        assert rt.is_running
    assert not rt.is_running

    async def host() -> bool:
        async with PythonRuntime(make_config(), core=core) as art:
            assert await art.arun(add, 1, 2) == 3
        return art.is_running

    assert asyncio_host(host) is False

    async def trio_main() -> bool:
        async with PythonRuntime(make_config(), core=core) as art:
            assert await art.arun(add, 2, 2) == 4
        return art.is_running

    assert trio_host(trio_main) is False


def test_lazy_start_and_shutdown_before_start(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(), core=core)
    assert not rt.is_running
    assert rt.run(add, 1, 1) == 2  # starts lazily
    rt.shutdown()
    never = PythonRuntime(make_config(), core=core)
    never.shutdown()
    with pytest.raises(RuntimeShutdownError):
        never.run(add, 1, 1)


def test_unregister_fails_in_flight_chats_and_closes_the_agent(runtime: PythonRuntime) -> None:
    agents: list[EchoAgent] = []

    def factory() -> EchoAgent:
        agents.append(EchoAgent(delay=30))
        return agents[-1]

    runtime.register_agent("slow", factory)
    errors: list[BaseException] = []
    chat = threading.Thread(
        target=lambda: errors.append(pytest.raises(CommandCancelledError, runtime.chat, "slow", "x").value)
    )
    chat.start()
    deadline = time.monotonic() + 10
    while runtime.metrics().in_flight < 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    runtime.unregister_agent("slow")
    chat.join(timeout=10)
    assert errors and "'slow'" in str(errors[0]) and "unregistered" in str(errors[0])
    assert agents[0].closed
    with pytest.raises(UnknownAgentError):
        runtime.chat("slow", "again")


def test_ctrl_c_interrupts_a_blocked_sync_caller_and_cancels_the_task(runtime: PythonRuntime) -> None:
    long_running, started, cancelled = remote_probe()
    ctrl_c_once(started)
    with pytest.raises(KeyboardInterrupt):
        runtime.run(long_running, timeout=30)
    assert cancelled.wait(10), "Ctrl-C did not cancel the command's task"
    assert runtime.run(add, 1, 1) == 2


def test_runtime_death_fails_pending_and_later_commands(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(), core=core).start()
    long_running, started, _cancelled = remote_probe()
    result: list[BaseException] = []
    waiter = threading.Thread(target=lambda: result.append(pytest.raises(RuntimeDiedError, rt.run, long_running).value))
    waiter.start()
    assert started.wait(10)

    def die() -> None:
        raise SystemExit("injected fault")  # asyncio lets SystemExit escape run_forever

    rt.loop.call_soon_threadsafe(die)
    waiter.join(timeout=10)
    assert result and "injected fault" in str(result[0]) and "died" in str(result[0])
    assert isinstance(result[0].__cause__, SystemExit)
    with pytest.raises(RuntimeDiedError, match="died"):
        rt.run(add, 1, 1)
    rt.shutdown()  # still safe


def test_misuse_errors(runtime: PythonRuntime) -> None:
    async def blocking_call_on_loop() -> None:
        runtime.run(add, 1, 1)

    with pytest.raises(DeadlockError, match="runtime's own thread"):
        runtime.run(blocking_call_on_loop)

    async def shutdown_on_loop() -> None:
        runtime.shutdown()

    with pytest.raises(DeadlockError):
        runtime.run(shutdown_on_loop)

    with pytest.raises(TypeError, match="PyCommand"):
        runtime.send_command("not a command")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        runtime.run(add, 1, 1, timeout=-1)
    with pytest.raises(TypeError, match="coroutine function"):
        runtime.run(42)  # type: ignore[arg-type]

    def not_async(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="not awaitable"):
        runtime.run(not_async, 1)  # type: ignore[arg-type]
    with pytest.raises(UnknownAgentError, match="'nobody'"):
        runtime.chat("nobody", "hi")
    with pytest.raises(TypeError, match="chat"):
        runtime.register_agent("bad", object)
    with pytest.raises(TypeError, match="message"):
        runtime.chat("x", 42)  # type: ignore[arg-type]
    runtime.register_agent("dup", EchoAgent)
    with pytest.raises(AgentAlreadyRegisteredError, match="'dup'"):
        runtime.register_agent("dup", EchoAgent)
    runtime.register_agent("dup", EchoAgent, replace=True)
    assert runtime.chat("dup", "ok") == "echo:ok"
    assert runtime.run(add, 1, 1) == 2, "the runtime stays usable after every misuse"


def test_non_string_reply_is_a_typed_error(runtime: PythonRuntime) -> None:
    class Numeric:
        async def chat(self, message: str) -> int:
            return 42

    runtime.register_agent("numeric", Numeric)
    with pytest.raises(TypeError, match=r"'numeric'.*str"):
        runtime.chat("numeric", "x")


def test_back_pressure(core: ModuleType) -> None:
    gate = threading.Event()
    with PythonRuntime(make_config(max_in_flight=2), core=core) as rt:

        async def wait_gate() -> None:
            while not gate.is_set():
                await asyncio.sleep(0.005)

        threads = [threading.Thread(target=rt.run, args=(wait_gate,)) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while rt.metrics().in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        with pytest.raises(RuntimeBusyError, match="max_in_flight=2"):
            rt.run(add, 1, 1)
        gate.set()
        for t in threads:
            t.join(timeout=10)
        assert rt.run(add, 1, 1) == 2


def test_metrics_count_every_outcome(runtime: PythonRuntime) -> None:
    runtime.run(add, 1, 1)
    with pytest.raises(LookupError):
        runtime.run(fail_deep)
    long_running, _s, cancelled = remote_probe()
    with pytest.raises(OperationTimeoutError):
        runtime.run(long_running, timeout=0.05)
    assert cancelled.wait(10)
    runtime.run(add, 0, 0)
    metrics = runtime.metrics()
    assert (metrics.completed, metrics.failed, metrics.timed_out) == (2, 1, 1)
    assert metrics.submitted == metrics.finished == 4
    assert metrics.wakeups >= 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("after_fork", ["restart", "error"])
def test_use_in_forked_child_restarts_or_raises(core: ModuleType, after_fork: str) -> None:
    import warnings

    runtime = PythonRuntime(make_config(after_fork=after_fork), core=core)
    try:
        assert runtime.run(add, 1, 1) == 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "fork() in a multi-threaded process"
            pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                if after_fork == "restart":
                    code = 0 if runtime.run(add, 1, 1) == 2 and runtime.is_running else 2
                else:
                    runtime.run(add, 1, 1)
            except ForkedRuntimeError:
                code = 0 if after_fork == "error" and not runtime.is_running else 2
            except BaseException:
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert runtime.run(add, 2, 2) == 4, "the parent's runtime is unaffected"
    finally:
        runtime.shutdown()


def test_script_that_forgets_shutdown_exits_promptly(tmp_path: Any, core: ModuleType) -> None:
    script = tmp_path / "forgetful.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, importlib
            from agybridge import PythonRuntime, RuntimeConfig
            core = importlib.import_module({core.__name__!r})
            rt = PythonRuntime(RuntimeConfig(shutdown_grace=0.2), core=core)

            async def add(a, b):
                return a + b

            async def forever():
                await asyncio.sleep(3600)

            print(rt.run(add, 20, 22))
            rt.loop.call_soon_threadsafe(lambda: rt.loop.create_task(forever()))
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "42"
    assert "Traceback" not in proc.stderr


def test_uvloop_is_used_when_installed_and_enabled(core: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    made: list[asyncio.AbstractEventLoop] = []

    def new_event_loop() -> asyncio.AbstractEventLoop:
        made.append(asyncio.new_event_loop())  # a stand-in: uvloop is not installed here
        return made[-1]

    monkeypatch.setitem(sys.modules, "uvloop", types.SimpleNamespace(new_event_loop=new_event_loop))
    with PythonRuntime(make_config(use_uvloop=True), core=core) as rt:
        assert rt.run(add, 1, 1) == 2
        assert made and rt.loop is made[0]
    with PythonRuntime(make_config(use_uvloop=False), core=core) as rt:
        assert rt.run(add, 1, 1) == 2
        assert rt.loop is not made[-1] and len(made) == 1
    monkeypatch.setitem(sys.modules, "uvloop", None)  # "not installed": import fails
    with PythonRuntime(make_config(use_uvloop=True), core=core) as rt:
        assert rt.run(add, 2, 2) == 4
