"""Regressions for the faults an adversarial run found (issue 14), each on both cores.

Callbacks that raise anything; one owner per ``BRIDGE_STATE`` entry; single-use commands;
``max_in_flight`` as a hard bound; consistent metrics; typed errors for bad input; fork
from inside the runtime thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from conftest import CallsTool, asyncio_host, make_config, ping, trio_host

from agybridge import (
    BRIDGE_STATE,
    AgentBridgeState,
    AgentOwnershipError,
    CommandReusedError,
    ConfigError,
    ContextError,
    ForkedRuntimeError,
    OperationTimeoutError,
    PolicyError,
    PythonRuntime,
    Run,
    RuntimeBusyError,
    RuntimeDiedError,
    RuntimeShutdownError,
    Tool,
    ToolError,
    dispatch_tool,
    parse_context,
)

pytestmark = pytest.mark.timeout(60)


class Hostile(BaseException):
    """A BaseException subclass of the user's own."""


def _raisers() -> list[Callable[[], BaseException]]:
    return [
        lambda: SystemExit(3),
        KeyboardInterrupt,
        GeneratorExit,
        lambda: StopIteration("bare next()"),
        lambda: Hostile("user's own"),
    ]


RAISERS = pytest.mark.parametrize(
    "make_exc", _raisers(), ids=["SystemExit", "KeyboardInterrupt", "GeneratorExit", "StopIteration", "Hostile"]
)


def carries(error: BaseException, kind: type[BaseException]) -> bool:
    """Is an exception of *kind* on *error*'s cause chain?"""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__
    return False


@pytest.fixture
def quick(core: ModuleType) -> Iterator[PythonRuntime]:
    rt = PythonRuntime(make_config(chat_timeout=5.0, shutdown_grace=0.2), core=core).start()
    try:
        yield rt
    finally:
        rt.shutdown(timeout=10)
        BRIDGE_STATE.clear()


# ------------------------------------------------------------------------------------------
# 1. Callbacks may raise anything
# ------------------------------------------------------------------------------------------


@RAISERS
def test_sync_tool_raising_anything_fails_the_call_with_tool_error(
    quick: PythonRuntime, make_exc: Callable[[], BaseException]
) -> None:
    kind = type(make_exc())

    def tool() -> str:
        raise make_exc()

    quick.register_agent("a", lambda: CallsTool("a"), AgentBridgeState(tools=[tool]))
    with pytest.raises(ToolError, match="'tool'") as info:
        quick.chat("a", "go", timeout=10)  # StopIteration used to hang here until chat_timeout
    assert isinstance(info.value.__cause__, kind) and info.value.tool_name == "tool"
    assert quick.is_running and quick.run(ping) == "pong", "the runtime thread survived"
    assert quick.bridge_state.get("a").stats.tool_errors == 1


@RAISERS
def test_async_tool_raising_anything_never_kills_the_runtime(
    quick: PythonRuntime, make_exc: Callable[[], BaseException]
) -> None:
    kind = type(make_exc())

    async def tool() -> str:
        raise make_exc()

    quick.register_agent("a", lambda: CallsTool("a"), AgentBridgeState(tools=[tool]))
    with pytest.raises(Exception) as info:
        quick.chat("a", "go", timeout=10)
    # A StopIteration in a coroutine is already a RuntimeError (PEP 479) carrying it.
    assert isinstance(info.value, (ToolError, RuntimeError)) and carries(info.value, kind)
    assert quick.is_running and quick.run(ping) == "pong"


@pytest.mark.parametrize("host", ["asyncio", "trio"])
@pytest.mark.parametrize("make_exc", [KeyboardInterrupt, lambda: SystemExit(1)], ids=["KI", "SystemExit"])
def test_async_tool_on_a_host_loop_raising_base_exceptions(
    quick: PythonRuntime, host: str, make_exc: Callable[[], BaseException]
) -> None:
    kind = type(make_exc())

    async def tool() -> str:
        raise make_exc()

    async def caller() -> str:
        state = AgentBridgeState(tools=[Tool.from_function(tool, name="tool")])
        await quick.aregister_agent("h", lambda: CallsTool("h"), state)
        try:
            await quick.achat("h", "go", timeout=10)
        except ToolError as exc:
            return type(exc.__cause__).__name__
        finally:
            await quick.aunregister_agent("h")
        return "no error"

    run = asyncio_host if host == "asyncio" else trio_host
    assert run(caller) == kind.__name__, "the host loop survived and got the typed error"
    assert quick.run(ping) == "pong"


@RAISERS
def test_hook_raising_anything_is_logged(
    quick: PythonRuntime, make_exc: Callable[[], BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    def hook(*args: Any) -> None:
        raise make_exc()

    state = AgentBridgeState(
        tools=[Tool.from_function(lambda: "done", name="tool")],
        hooks={"before_chat": [hook], "before_tool": [hook], "after_chat": [hook]},
    )
    quick.register_agent("a", lambda: CallsTool("a"), state)
    with caplog.at_level(logging.WARNING, logger="agybridge"):
        assert quick.chat("a", "go", timeout=10) == "done"
    assert quick.bridge_state.get("a").stats.hook_errors == 3
    assert "hook for event" in caplog.text
    assert quick.run(ping) == "pong"


@RAISERS
def test_policy_raising_anything_fails_closed(quick: PythonRuntime, make_exc: Callable[[], BaseException]) -> None:
    kind = type(make_exc())
    ran: list[str] = []

    def policy(*args: Any) -> bool:
        raise make_exc()

    def tool() -> str:
        ran.append("tool")
        return "done"

    quick.register_agent("a", lambda: CallsTool("a"), AgentBridgeState(tools=[tool], policies=[policy]))
    with pytest.raises(PolicyError, match="fail closed") as info:
        quick.chat("a", "go", timeout=10)
    assert isinstance(info.value.__cause__, kind) and ran == []
    assert quick.run(ping) == "pong"


# ------------------------------------------------------------------------------------------
# 2. One owner per BRIDGE_STATE entry
# ------------------------------------------------------------------------------------------


def _labelled(label: str) -> AgentBridgeState:
    return AgentBridgeState(tools=[Tool.from_function(lambda: label, name="tool")])


def test_two_runtimes_never_share_replace_or_delete_each_others_state(core: ModuleType) -> None:
    a = PythonRuntime(make_config(), core=core).start()
    b = PythonRuntime(make_config(), core=core).start()
    try:
        a.register_agent("x", lambda: CallsTool("x"), _labelled("A"))
        b.register_agent("x", lambda: CallsTool("x"), _labelled("B"))  # same id: no conflict
        assert (a.chat("x", "go"), b.chat("x", "go")) == ("A", "B")
        b.register_agent("x", lambda: CallsTool("x"), _labelled("B2"), replace=True)
        assert (a.chat("x", "go"), b.chat("x", "go")) == ("A", "B2"), "B's replace left A alone"
        with pytest.raises(AgentOwnershipError, match="2 runtimes") as info:
            BRIDGE_STATE.get("x")  # off every runtime thread the id is ambiguous
        assert len(info.value.owners) == 2
        a.shutdown()
        assert b.chat("x", "go") == "B2", "A's shutdown left B's state alone"
        assert BRIDGE_STATE.get("x") is b.bridge_state.get("x")
    finally:
        a.shutdown()
        b.shutdown()
    assert "x" not in BRIDGE_STATE


def test_callbacks_in_worker_threads_find_their_own_runtimes_state(core: ModuleType) -> None:
    """A sync tool, hook or policy runs in a worker thread, still as its runtime's callback."""
    runtimes = [PythonRuntime(make_config(), core=core).start() for _ in range(2)]
    try:
        for label, rt in zip("AB", runtimes):
            seen: list[str] = []

            def tool(seen: list[str] = seen) -> str:
                return str(BRIDGE_STATE.get("x").tools["tool"].description) + "".join(seen)

            def hook(agent_id: str, event: str, ctx: Any, seen: list[str] = seen) -> None:
                seen.append(BRIDGE_STATE.get(agent_id).tools["tool"].description)

            state = AgentBridgeState(
                tools=[Tool.from_function(tool, name="tool", description=label)], hooks={"before_tool": [hook]}
            )
            rt.register_agent("x", lambda: CallsTool("x"), state)
        assert [rt.chat("x", "go") for rt in runtimes] == ["AA", "BB"]
    finally:
        for rt in runtimes:
            rt.shutdown()


def test_runtime_death_frees_its_agent_ids(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(), core=core).start()
    agent = CallsTool("x")
    rt.register_agent("x", lambda: agent, _labelled("old"))

    async def stop_loop() -> None:
        asyncio.get_running_loop().stop()
        await asyncio.sleep(30)

    with pytest.raises(RuntimeDiedError, match=r"loop\.stop\(\)"):
        rt.run(stop_loop, timeout=10)
    assert agent.closed.wait(10), "the dead runtime's agent was closed"
    assert rt.agent_ids() == [] and len(rt.bridge_state) == 0
    assert "x" not in BRIDGE_STATE
    fresh = PythonRuntime(make_config(), core=core).start()
    try:
        fresh.register_agent("x", lambda: CallsTool("x"), _labelled("new"))
        assert fresh.chat("x", "go") == "new"
    finally:
        fresh.shutdown()
    with pytest.raises(RuntimeDiedError):
        rt.unregister_agent("x")


def test_replace_cut_off_by_its_timeout_leaves_table_and_state_consistent(core: ModuleType) -> None:
    quick = PythonRuntime(make_config(shutdown_grace=5.0), core=core).start()  # aclose may take 5 s
    release = asyncio.Event()

    class SlowToClose(CallsTool):
        async def aclose(self) -> None:
            await release.wait()

    quick.register_agent("x", lambda: SlowToClose("x"), _labelled("old"))
    new_state = _labelled("new")
    with pytest.raises(OperationTimeoutError):
        quick.register_agent("x", lambda: CallsTool("x"), new_state, replace=True, timeout=0.2)
    assert quick.agent_ids() == ["x"]
    assert quick.bridge_state.get("x") is new_state
    assert quick.chat("x", "go") == "new"
    quick.unregister_agent("x")
    assert quick.agent_ids() == [] and "x" not in quick.bridge_state
    quick.register_agent("x", lambda: CallsTool("x"), _labelled("again"))
    assert quick.chat("x", "go") == "again"
    quick.shutdown(grace=0)


def test_aclose_raising_keyboard_interrupt_does_not_stop_other_agents_closing(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(), core=core).start()
    closed: list[str] = []

    class Interrupting(CallsTool):
        async def aclose(self) -> None:
            closed.append(self.agent_id)
            raise KeyboardInterrupt

    for name in ("a", "b", "c"):
        rt.register_agent(name, lambda name=name: Interrupting(name), _labelled(name))
    rt.shutdown(timeout=10)
    assert sorted(closed) == ["a", "b", "c"]
    assert rt.agent_ids() == [] and len(rt.bridge_state) == 0
    with pytest.raises(RuntimeShutdownError) as info:
        rt.run(ping)
    assert not isinstance(info.value, RuntimeDiedError), "an orderly shutdown, not a death"


# ------------------------------------------------------------------------------------------
# 3. Commands are single-use
# ------------------------------------------------------------------------------------------


def test_one_command_sent_from_three_threads_runs_once(runtime: PythonRuntime) -> None:
    bodies: list[int] = []
    go = threading.Barrier(3)

    async def body() -> str:
        bodies.append(1)
        await asyncio.sleep(0.05)
        return "ran"

    cmd = Run(body, oneshot=runtime.core.Oneshot())
    outcomes: list[str] = []
    lock = threading.Lock()

    def send() -> None:
        go.wait(10)
        try:
            result = runtime.send_command(cmd, timeout=10)
        except CommandReusedError:
            result = "reused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=send) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(outcomes) == ["ran", "reused", "reused"]
    assert bodies == [1]
    assert runtime.metrics().submitted == 1


def test_resending_a_finished_or_refused_command_raises(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(), core=core).start()
    done = Run(ping, oneshot=core.Oneshot())
    assert rt.send_command(done) == "pong"
    with pytest.raises(CommandReusedError, match=r"Run\(ping\)"):
        rt.send_command(done)

    async def again() -> None:
        await rt.asend_command(done)

    with pytest.raises(CommandReusedError):
        asyncio.run(again())
    rt.shutdown()
    refused = Run(ping, oneshot=core.Oneshot())
    with pytest.raises(RuntimeShutdownError):
        rt.send_command(refused)
    before = rt.metrics()
    with pytest.raises(CommandReusedError):
        rt.send_command(refused)
    assert rt.metrics() == before, "the resend is not counted again"


# ------------------------------------------------------------------------------------------
# 4. max_in_flight is a hard bound; refusals cost the loop nothing
# ------------------------------------------------------------------------------------------


def test_max_in_flight_is_a_hard_bound_under_a_burst(core: ModuleType) -> None:
    limit, callers = 40, 60
    rt = PythonRuntime(make_config(max_in_flight=limit), core=core).start()
    running = 0
    peak = 0
    gate: list[asyncio.Event] = []

    async def make_gate() -> None:
        gate.append(asyncio.Event())

    rt.run(make_gate)

    async def body() -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await gate[0].wait()
        finally:
            running -= 1
        return "ok"

    start = threading.Barrier(callers)
    outcomes: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        start.wait(10)
        try:
            result = rt.run(body, timeout=20)
        except RuntimeBusyError:
            result = "busy"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    try:
        for t in threads:
            t.start()
        deadline = threading.Event()
        while len(outcomes) < callers - limit and not deadline.wait(0.01):
            pass
        assert outcomes.count("busy") == callers - limit
        assert rt.metrics().in_flight == limit
        rt.loop.call_soon_threadsafe(gate[0].set)
        for t in threads:
            t.join(20)
        assert outcomes.count("ok") == limit and peak <= limit, (peak, outcomes.count("ok"))
    finally:
        rt.shutdown()


def test_refused_sends_schedule_nothing_on_the_loop(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(max_in_flight=1, use_uvloop=False), core=core).start()
    release = threading.Event()

    async def hold() -> None:
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 20)

    loop = rt.loop
    scheduled = 0
    original = loop.call_soon_threadsafe

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal scheduled
        scheduled += 1
        return original(*args, **kwargs)

    holder = threading.Thread(target=lambda: rt.run(hold, timeout=20))
    holder.start()
    try:
        while rt.metrics().in_flight < 1:
            release.wait(0.001)
        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        for _ in range(2000):
            with pytest.raises(RuntimeBusyError):
                rt.run(ping)
        assert scheduled == 0, f"{scheduled} callbacks scheduled for 2,000 refusals"
        assert rt.metrics().submitted == 1
    finally:
        loop.call_soon_threadsafe = original  # type: ignore[method-assign]
        release.set()
        holder.join(20)
        rt.shutdown()


# ------------------------------------------------------------------------------------------
# 5. metrics() is a consistent snapshot
# ------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_every_metrics_snapshot_adds_up_under_load(runtime: PythonRuntime) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    async def maybe_fail(i: int) -> int:
        if i % 7 == 0:
            raise ValueError(i)
        return i

    def load() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                runtime.run(maybe_fail, i, timeout=10)
            except ValueError:
                pass
            except BaseException as exc:
                errors.append(exc)
                return

    workers = [threading.Thread(target=load) for _ in range(3)]
    for w in workers:
        w.start()
    bad = []
    try:
        for _ in range(30_000):
            m = runtime.metrics()
            if m.submitted != m.finished + m.in_flight or m.in_flight < 0:
                bad.append(m)
    finally:
        stop.set()
        for w in workers:
            w.join(20)
    assert not errors, errors
    assert not bad, bad[:3]
    final = runtime.metrics()
    assert final.in_flight == 0 and final.submitted == final.finished > 0


# ------------------------------------------------------------------------------------------
# 6. Bad input gets a typed error naming the problem
# ------------------------------------------------------------------------------------------


def test_context_nested_too_deep_is_a_context_error(runtime: PythonRuntime) -> None:
    deep = '{"args": {}, "meta": ' + "[" * 200_000 + "]" * 200_000 + "}"
    with pytest.raises(ContextError, match="nested too deeply"):
        parse_context(deep)

    class DeepCaller(CallsTool):
        async def chat(self, message: str) -> str:
            return str(await dispatch_tool(self.agent_id, "tool", deep))

    runtime.register_agent("d", lambda: DeepCaller("d"), _labelled("x"))
    with pytest.raises(ContextError, match="nested too deeply"):
        runtime.chat("d", "go")


def test_unhashable_agent_id_or_tool_name_names_the_parameter(runtime: PythonRuntime) -> None:
    async def bad_agent() -> Any:
        return await dispatch_tool(["a"], "tool")  # type: ignore[arg-type]

    async def bad_tool() -> Any:
        return await dispatch_tool("a", {"t": 1})  # type: ignore[arg-type]

    runtime.register_agent("a", lambda: CallsTool("a"), _labelled("x"))
    with pytest.raises(TypeError, match="agent_id must be a str"):
        runtime.run(bad_agent)
    with pytest.raises(TypeError, match="tool_name must be a str"):
        runtime.run(bad_tool)
    with pytest.raises(TypeError, match="agent_id must be a str"):
        BRIDGE_STATE.get(["a"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="agent_id must be a str"):
        runtime.chat({"a": 1}, "hi")  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [10**400, float("-inf"), float("nan"), -1, 0])
def test_absurd_timeout_names_the_parameter(runtime: PythonRuntime, timeout: Any) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        runtime.run(ping, timeout=timeout)

    async def caller() -> None:
        await runtime.arun(ping, timeout=timeout)

    with pytest.raises(ConfigError, match="timeout"):
        asyncio.run(caller())


def test_an_infinite_timeout_means_no_limit(runtime: PythonRuntime) -> None:
    """``timeout=math.inf`` is "no limit", as in trio and anyio, on every call that takes one."""
    assert runtime.run(ping, timeout=float("inf")) == "pong"

    async def caller() -> str:
        return await runtime.arun(ping, timeout=float("inf"))

    assert asyncio.run(caller()) == "pong"
    assert runtime.wrap(ping, timeout=float("inf"))() == "pong"
    assert runtime.submit(ping).result(timeout=10) == "pong"
    stream = runtime.stream(_count_to, 3).with_options(item_timeout=float("inf"))
    assert list(stream) == [0, 1, 2]
    assert runtime.run(ping) == "pong"


def test_agent_whose_chat_is_not_a_coroutine_function_is_refused_at_registration(runtime: PythonRuntime) -> None:
    class SyncChat:
        def chat(self, message: str) -> str:
            return "sync"

    class NoChat:
        pass

    with pytest.raises(TypeError, match=r"'sync'.*not a coroutine function"):
        runtime.register_agent("sync", SyncChat)
    with pytest.raises(TypeError, match=r"'none'.*no 'chat' method"):
        runtime.register_agent("none", NoChat)
    assert runtime.agent_ids() == [] and len(runtime.bridge_state) == 0


def test_death_by_loop_stop_says_so(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(), core=core).start()

    async def stop() -> None:
        asyncio.get_running_loop().stop()
        await asyncio.sleep(30)

    with pytest.raises(RuntimeDiedError, match=r"loop\.stop\(\)") as info:
        rt.run(stop, timeout=10)
    assert "None" not in str(info.value)
    with pytest.raises(RuntimeDiedError, match=r"loop\.stop\(\)"):
        rt.run(ping)


# ------------------------------------------------------------------------------------------
# 8. Fork from inside the runtime thread
# ------------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_from_a_coroutine_on_the_runtime_thread(runtime: PythonRuntime) -> None:
    async def fork_and_call() -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
            read_end, write_end = os.pipe()
            pid = os.fork()
        if pid == 0:  # the child: its only thread is this one, the parent's "runtime thread"
            try:
                # The runtime restarts in the child (a new thread); this thread is a caller there.
                outcome = "ran" if runtime.run(ping, timeout=10) == "pong" else "wrong"
            except ForkedRuntimeError:
                outcome = "ForkedRuntimeError"
            except BaseException as exc:
                outcome = type(exc).__name__
            os.write(write_end, outcome.encode())
            os._exit(0)
        os.close(write_end)
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, os.read, read_end, 100)
        os.close(read_end)
        await loop.run_in_executor(None, os.waitpid, pid, 0)
        return data.decode()

    assert runtime.run(fork_and_call, timeout=30) == "ran"


async def _count_to(n: int) -> Any:
    for i in range(n):
        yield i
