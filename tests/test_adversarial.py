"""The library attacked as a hostile user would: every test here is a finding (now fixed) or
an attack that held, beyond the list of issue 14. All run on both cores.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from conftest import CallsTool, asyncio_host, make_config, ping, trio_host

from agybridge import (
    BRIDGE_STATE,
    AgentAlreadyRegisteredError,
    AgentBridgeState,
    AgentOwnershipError,
    CommandCancelledError,
    CommandReusedError,
    PolicyError,
    PythonRuntime,
    Run,
    RuntimeBusyError,
    RuntimeShutdownError,
    Tool,
    ToolError,
    UnknownAgentError,
    dispatch_tool,
)

pytestmark = pytest.mark.timeout(60)


def tool_state(fn: Any, **kw: Any) -> AgentBridgeState:
    return AgentBridgeState(tools=[Tool.from_function(fn, name="tool")], **kw)


@pytest.fixture
def rt(core: ModuleType) -> Iterator[PythonRuntime]:
    runtime = PythonRuntime(make_config(chat_timeout=5.0, shutdown_grace=0.3), core=core).start()
    try:
        yield runtime
    finally:
        runtime.shutdown(timeout=10)
        BRIDGE_STATE.clear()


# ------------------------------------------------------------------------------------------
# Findings, fixed
# ------------------------------------------------------------------------------------------


class Unprintable(BaseException):
    """Its repr() and str() raise KeyboardInterrupt: every message built from it would too."""

    def __repr__(self) -> str:
        raise KeyboardInterrupt("from __repr__")

    def __str__(self) -> str:
        raise KeyboardInterrupt("from __str__")


class UnprintableError(Exception):
    def __repr__(self) -> str:
        raise KeyboardInterrupt("from __repr__")

    def __str__(self) -> str:
        raise KeyboardInterrupt("from __str__")


def test_exception_whose_repr_raises_cannot_escape_from_a_tool(rt: PythonRuntime) -> None:
    """Finding: the error message of a failing tool called repr() on the tool's exception."""

    def tool() -> str:
        raise Unprintable

    seen: list[str] = []
    state = tool_state(tool, hooks={"on_error": [lambda agent, event, ctx: seen.append(ctx["error"])]})
    rt.register_agent("a", lambda: CallsTool("a"), state)
    with pytest.raises(ToolError, match="its repr\\(\\) raised") as info:
        rt.chat("a", "go")
    assert isinstance(info.value.__cause__, Unprintable)
    assert seen == [str(info.value)] or "its repr() raised" in seen[0]
    assert rt.run(ping) == "pong"


def test_ordinary_exception_with_hostile_repr_reaches_the_caller_unchanged(rt: PythonRuntime) -> None:
    """Finding: the on_error hook context was built with repr(error), which raised."""

    def tool() -> str:
        raise UnprintableError

    seen: list[str] = []
    state = tool_state(tool, hooks={"on_error": [lambda agent, event, ctx: seen.append(ctx["error"])]})
    rt.register_agent("a", lambda: CallsTool("a"), state)
    with pytest.raises(UnprintableError):
        rt.chat("a", "go")
    assert seen and "its repr() raised" in seen[0]
    assert rt.run(ping) == "pong"


def test_hook_and_policy_exceptions_whose_repr_raises(rt: PythonRuntime, caplog: pytest.LogCaptureFixture) -> None:
    """Finding: HookError and PolicyError messages called repr() on the callback's exception."""

    def hook(*args: Any) -> None:
        raise Unprintable

    def policy(*args: Any) -> bool:
        raise Unprintable

    rt.register_agent("h", lambda: CallsTool("h"), tool_state(lambda: "done", hooks={"before_tool": [hook]}))
    rt.register_agent("p", lambda: CallsTool("p"), tool_state(lambda: "done", policies=[policy]))
    with caplog.at_level(logging.WARNING, logger="agybridge"):
        assert rt.chat("h", "go") == "done"
    with pytest.raises(PolicyError, match="its repr\\(\\) raised"):
        rt.chat("p", "go")
    assert rt.run(ping) == "pong"


def test_policy_verdict_whose_repr_raises_fails_closed(rt: PythonRuntime) -> None:
    class Verdict:
        def __repr__(self) -> str:
            raise SystemExit("from __repr__")

    rt.register_agent("p", lambda: CallsTool("p"), tool_state(lambda: "done", policies=[lambda *a: Verdict()]))
    with pytest.raises(PolicyError, match="must return True, None, False or Deny"):
        rt.chat("p", "go")
    assert rt.run(ping) == "pong"


def test_aclose_exception_whose_traceback_cannot_be_formatted(core: ModuleType) -> None:
    """Finding: logging a failed aclose() formatted the exception, which could raise again."""
    runtime = PythonRuntime(make_config(), core=core).start()
    closed: list[str] = []

    class Agent(CallsTool):
        async def aclose(self) -> None:
            closed.append(self.agent_id)
            raise Unprintable

    for name in ("a", "b"):
        runtime.register_agent(name, lambda name=name: Agent(name), tool_state(lambda: "x"))
    runtime.shutdown(timeout=10)
    assert sorted(closed) == ["a", "b"]
    assert not runtime.is_running and runtime.agent_ids() == []


def test_one_state_object_cannot_serve_two_agents(core: ModuleType) -> None:
    """Finding: unregistering one agent cancelled the tool calls of another that shared its
    state object (from the wrong thread when the two lived on two runtimes)."""
    a = PythonRuntime(make_config(), core=core).start()
    b = PythonRuntime(make_config(), core=core).start()
    try:
        shared = tool_state(lambda: "x")
        a.register_agent("one", lambda: CallsTool("one"), shared)
        with pytest.raises(AgentOwnershipError, match="'one' on this runtime"):
            a.register_agent("two", lambda: CallsTool("two"), shared)
        with pytest.raises(AgentOwnershipError, match="another runtime"):
            b.register_agent("one", lambda: CallsTool("one"), shared)
        assert a.agent_ids() == ["one"] and b.agent_ids() == []
        a.register_agent("one", lambda: CallsTool("one"), shared, replace=True)  # same agent: fine
        a.unregister_agent("one")
        b.register_agent("one", lambda: CallsTool("one"), shared)  # free again
        assert b.chat("one", "go") == "x"
    finally:
        a.shutdown()
        b.shutdown()


def test_command_carrying_a_completed_oneshot_is_refused(rt: PythonRuntime) -> None:
    """Finding: a new command given an already completed oneshot returned its stale result
    without running."""
    shot = rt.core.Oneshot()
    shot.set_result("stale")
    ran: list[int] = []

    async def body() -> str:
        ran.append(1)
        return "fresh"

    with pytest.raises(CommandReusedError, match="already completed"):
        rt.send_command(Run(body, oneshot=shot))
    assert ran == [] and shot.result(0) == "stale"


def test_state_put_in_by_hand_does_not_outlive_its_runtime(core: ModuleType) -> None:
    """Finding: a state inserted into BRIDGE_STATE from agent code stayed findable after the
    runtime was gone."""
    runtime = PythonRuntime(make_config(), core=core).start()

    async def insert() -> None:
        BRIDGE_STATE.insert("by-hand", AgentBridgeState())

    runtime.run(insert)
    assert "by-hand" in runtime.bridge_state and "by-hand" in BRIDGE_STATE
    runtime.shutdown()
    assert "by-hand" not in BRIDGE_STATE and len(runtime.bridge_state) == 0


class ReentrantId(str):
    """An agent id whose hash re-enters the registry (and whose equality raises)."""

    def __hash__(self) -> int:
        BRIDGE_STATE.insert("re-entered", AgentBridgeState())
        raise KeyboardInterrupt("from __hash__")

    def __eq__(self, other: object) -> bool:
        raise KeyboardInterrupt("from __eq__")


def test_str_subclass_ids_never_run_user_code_inside_the_registry(rt: PythonRuntime) -> None:
    """Finding: a str subclass id had its __hash__ run under the registry's lock, where
    re-entering the registry deadlocked the pure-Python core."""
    rt.register_agent(ReentrantId("a"), lambda: CallsTool("a"), tool_state(lambda: "x"))
    assert rt.chat(ReentrantId("a"), "go") == "x"
    assert rt.agent_ids() == ["a"] and type(rt.agent_ids()[0]) is str
    assert BRIDGE_STATE.get(ReentrantId("a")) is rt.bridge_state.get("a")

    class Caller(CallsTool):
        async def chat(self, message: str) -> str:
            return str(await dispatch_tool(ReentrantId(self.agent_id), ReentrantId("tool"), None))

    rt.register_agent("b", lambda: Caller("b"), tool_state(lambda: "y"))
    assert rt.chat("b", "go") == "y"
    rt.unregister_agent(ReentrantId("a"))
    assert "re-entered" not in BRIDGE_STATE


def test_one_command_sent_to_two_runtimes_runs_once(core: ModuleType) -> None:
    a = PythonRuntime(make_config(), core=core).start()
    b = PythonRuntime(make_config(), core=core).start()
    try:
        cmd = Run(ping, oneshot=core.Oneshot())
        assert a.send_command(cmd) == "pong"
        with pytest.raises(CommandReusedError):
            b.send_command(cmd)
        assert b.metrics().submitted == 0
    finally:
        a.shutdown()
        b.shutdown()


def test_new_errors_survive_pickling() -> None:
    import pickle

    from agybridge import ToolError

    tool_error = ToolError("a", "t", "tool 't' of agent 'a' raised SystemExit(1)")
    ownership = AgentOwnershipError("a", ["r1", "r2"])
    for error in (tool_error, ownership, CommandReusedError("Run(f) was already sent")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
    assert pickle.loads(pickle.dumps(tool_error)).tool_name == "t"
    assert pickle.loads(pickle.dumps(ownership)).owners == ["r1", "r2"]


def test_aclose_that_swallows_its_cancellation_cannot_hang_unregister_or_shutdown(core: ModuleType) -> None:
    """Finding: aclose() was bounded by cancelling it, so one that swallowed the cancellation
    hung unregister_agent() and shutdown() (and left the runtime thread running)."""
    runtime = PythonRuntime(make_config(shutdown_grace=0.3), core=core).start()
    entered = threading.Event()

    class Stubborn(CallsTool):
        async def aclose(self) -> None:
            entered.set()
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    pass  # hostile: refuses to stop

    runtime.register_agent("a", lambda: Stubborn("a"), tool_state(lambda: "x"))
    runtime.register_agent("b", lambda: Stubborn("b"), tool_state(lambda: "x"))
    runtime.unregister_agent("a", timeout=10)  # returns after the close limit
    assert entered.is_set() and runtime.agent_ids() == ["b"]
    done = threading.Event()
    stopper = threading.Thread(target=lambda: (runtime.shutdown(timeout=20), done.set()))
    stopper.start()
    assert done.wait(20), "shutdown() hung on an aclose() that swallows cancellation"
    stopper.join(5)
    assert not runtime.is_running and runtime.agent_ids() == []


# ------------------------------------------------------------------------------------------
# Attacks that held
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_agent_and_factory_raising_base_exceptions_never_kill_the_runtime(
    rt: PythonRuntime, kind: type[BaseException]
) -> None:
    class Raising:
        async def chat(self, message: str) -> str:
            raise kind("from chat")

    def factory() -> Any:
        raise kind("from factory")

    rt.register_agent("r", Raising)
    with pytest.raises(kind):
        rt.chat("r", "go")  # the agent's own exception, handed to its caller as it is
    with pytest.raises(kind):
        rt.register_agent("f", factory)
    assert rt.is_running and rt.run(ping) == "pong" and rt.agent_ids() == ["r"]


def test_shutdown_from_inside_a_sync_tool(rt: PythonRuntime) -> None:
    def tool() -> str:
        rt.shutdown(grace=0.1, timeout=10)
        return "after shutdown"

    rt.register_agent("s", lambda: CallsTool("s"), tool_state(tool))
    with pytest.raises((RuntimeShutdownError, CommandCancelledError)):
        rt.chat("s", "go", timeout=20)
    with pytest.raises(RuntimeShutdownError):
        rt.run(ping)


def test_agent_unregistering_itself_from_its_own_chat(rt: PythonRuntime) -> None:
    """Finding: the removal's own command was cancelled with the chat, cutting aclose() short."""
    closed = threading.Event()

    class SelfRemoving:
        async def chat(self, message: str) -> str:
            await rt.aunregister_agent("me")
            return "unreachable"

        async def aclose(self) -> None:
            await asyncio.sleep(0.05)  # closing takes a while: the removal must not be cut short
            closed.set()

    rt.register_agent("me", SelfRemoving)
    with pytest.raises(CommandCancelledError, match="'me' went away"):
        rt.chat("me", "go", timeout=10)
    assert closed.wait(10), "cancelling the agent's own chat cut its aclose() short"
    assert rt.agent_ids() == [] and "me" not in rt.bridge_state
    assert rt.run(ping) == "pong"


@pytest.mark.timeout(120)
def test_concurrent_register_replace_unregister_chat_keep_table_and_registry_in_step(rt: PythonRuntime) -> None:
    ids = ["a", "b", "c"]
    unexpected: list[BaseException] = []
    expected = (UnknownAgentError, AgentAlreadyRegisteredError, CommandCancelledError)

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(150):
            agent_id = rng.choice(ids)
            action = rng.choice(["register", "replace", "unregister", "chat", "chat"])
            try:
                if action == "register":
                    rt.register_agent(agent_id, lambda a=agent_id: CallsTool(a), tool_state(lambda: "x"))
                elif action == "replace":
                    rt.register_agent(agent_id, lambda a=agent_id: CallsTool(a), tool_state(lambda: "x"), replace=True)
                elif action == "unregister":
                    rt.unregister_agent(agent_id)
                else:
                    assert rt.chat(agent_id, "go", timeout=10) == "x"
            except expected:
                pass
            except BaseException as exc:
                unexpected.append(exc)

    threads = [threading.Thread(target=churn, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert not unexpected, unexpected[:3]
    assert sorted(rt.agent_ids()) == sorted(rt.bridge_state.ids())
    for agent_id in rt.agent_ids():
        assert rt.chat(agent_id, "go") == "x"


def test_several_runtimes_with_the_same_ids_side_by_side(core: ModuleType) -> None:
    runtimes = [PythonRuntime(make_config(), core=core).start() for _ in range(4)]
    replies: dict[int, set[str]] = {i: set() for i in range(4)}
    lock = threading.Lock()
    try:
        for i, runtime in enumerate(runtimes):
            runtime.register_agent("agent", lambda: CallsTool("agent"), tool_state(lambda i=i: f"runtime {i}"))

        def chat(i: int) -> None:
            for _ in range(50):
                reply = runtimes[i].chat("agent", "go", timeout=10)
                with lock:
                    replies[i].add(reply)

        threads = [threading.Thread(target=chat, args=(i % 4,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert replies == {i: {f"runtime {i}"} for i in range(4)}
    finally:
        stoppers = [threading.Thread(target=runtime.shutdown) for runtime in runtimes]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(30)
    assert "agent" not in BRIDGE_STATE


@pytest.mark.timeout(120)
def test_threads_asyncio_and_trio_callers_with_shutdown_mid_run(core: ModuleType) -> None:
    """Every call from every kind of caller ends (result, busy or shut down), nobody hangs,
    and the counters add up, with the bound hit and the runtime shut down mid-run."""
    runtime = PythonRuntime(make_config(max_in_flight=16, shutdown_grace=0.2), core=core).start()
    allowed = (RuntimeBusyError, RuntimeShutdownError, CommandCancelledError)
    outcomes: dict[str, int] = {}
    unexpected: list[BaseException] = []
    lock = threading.Lock()
    started = threading.Barrier(4 + 1 + 1 + 1)

    def note(outcome: str) -> None:
        with lock:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

    async def work(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 3))
        return i

    def thread_caller() -> None:
        started.wait(10)
        for i in range(400):
            try:
                assert runtime.run(work, i, timeout=10) == i
                note("ok")
            except allowed as exc:
                note(type(exc).__name__)
            except BaseException as exc:
                unexpected.append(exc)

    async def async_caller() -> None:
        started.wait(10)
        for i in range(300):
            try:
                assert await runtime.arun(work, i, timeout=10) == i
                note("ok")
            except allowed as exc:
                note(type(exc).__name__)
            except BaseException as exc:
                unexpected.append(exc)

    threads = [threading.Thread(target=thread_caller) for _ in range(4)]
    threads.append(threading.Thread(target=asyncio_host, args=(async_caller, 60)))
    threads.append(threading.Thread(target=trio_host, args=(async_caller, 60)))
    for t in threads:
        t.start()
    started.wait(10)
    while sum(outcomes.values()) < 300:
        threading.Event().wait(0.005)
    runtime.shutdown(timeout=20)
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    assert not unexpected, unexpected[:3]
    assert outcomes.get("ok", 0) >= 300 and outcomes.get("RuntimeShutdownError", 0) > 0, outcomes
    metrics = runtime.metrics()
    assert metrics.in_flight == 0 and metrics.submitted == metrics.finished, metrics
    assert metrics.completed == outcomes["ok"], (metrics, outcomes)
