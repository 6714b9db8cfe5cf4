"""Bridge state and callbacks: tools, hooks, policies, errors, host loops."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import traceback
from typing import Any

import pytest
from conftest import asyncio_host, trio_host

from agybridge import (
    BRIDGE_STATE,
    AgentBridgeState,
    CommandCancelledError,
    ContextError,
    Deny,
    HookError,
    PolicyDeniedError,
    PolicyError,
    PythonRuntime,
    Tool,
    UnknownAgentError,
    UnknownToolError,
    dispatch_hook,
    dispatch_policy_confirm,
    dispatch_tool,
    parse_context,
)
from agybridge._select import AgentRegistry
from agybridge.testing import ScriptedAgent, plan_from_message


class CallerAgent:
    """Calls one tool per chat: the message is ``tool_name`` or ``tool_name <json context>``."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id

    async def chat(self, message: str) -> str:
        name, _, context = message.partition(" ")
        result = await dispatch_tool(self.agent_id, name, context or None)
        return json.dumps(result)


def where() -> dict[str, Any]:
    """Report the thread this tool ran on."""
    return {"thread": threading.current_thread().name}


async def where_async() -> dict[str, Any]:
    return {"thread": threading.current_thread().name}


def test_bridge_state_resolves_to_the_calling_runtimes_own_registry(runtime: PythonRuntime) -> None:
    assert isinstance(runtime.bridge_state, runtime.core.AgentRegistry)
    assert isinstance(BRIDGE_STATE.default, AgentRegistry)

    async def resolved() -> bool:
        return BRIDGE_STATE.current() is runtime.bridge_state

    assert runtime.run(resolved)
    assert BRIDGE_STATE.current() is BRIDGE_STATE.default, "off every runtime thread: the default registry"


def test_register_installs_state_and_unregister_removes_it(runtime: PythonRuntime) -> None:
    state = AgentBridgeState(tools=[where])
    runtime.register_agent("a", lambda: CallerAgent("a"), state)
    assert BRIDGE_STATE.get("a") is state
    runtime.unregister_agent("a")
    assert "a" not in BRIDGE_STATE


def test_sync_tool_runs_in_a_worker_thread(runtime: PythonRuntime) -> None:
    runtime.register_agent("a", lambda: CallerAgent("a"), AgentBridgeState(tools=[where]))
    thread = json.loads(runtime.chat("a", "where"))["thread"]
    assert thread.startswith("agy-bridge-worker")


def test_async_tool_without_host_runs_on_the_runtime_loop(runtime: PythonRuntime) -> None:
    runtime.register_agent("a", lambda: CallerAgent("a"), AgentBridgeState(tools=[where_async]))
    assert json.loads(runtime.chat("a", "where_async"))["thread"] == "agy-bridge-python-runtime"


def test_async_tool_runs_on_the_asyncio_host_loop(runtime: PythonRuntime) -> None:
    async def host() -> tuple[str, str]:
        await runtime.aregister_agent("a", lambda: CallerAgent("a"), AgentBridgeState(tools=[where_async]))
        reply = await runtime.achat("a", "where_async")
        return json.loads(reply)["thread"], threading.current_thread().name

    tool_thread, host_thread = asyncio_host(host)
    assert tool_thread == host_thread


def test_async_tool_runs_in_the_trio_host(runtime: PythonRuntime) -> None:
    import trio

    async def trio_tool(delay: float) -> dict[str, Any]:
        await trio.sleep(delay)  # only works inside trio
        return {"thread": threading.current_thread().name}

    async def host() -> tuple[str, str]:
        state = AgentBridgeState(tools=[Tool.from_function(trio_tool, name="trio_tool")])
        await runtime.aregister_agent("t", lambda: CallerAgent("t"), state)
        reply = await runtime.achat("t", 'trio_tool {"args": {"delay": 0.01}}')
        return json.loads(reply)["thread"], threading.current_thread().name

    tool_thread, host_thread = trio_host(host)
    assert tool_thread == host_thread


def test_blocking_tool_never_stalls_the_runtime_loop(runtime: PythonRuntime) -> None:
    release = threading.Event()
    entered = threading.Event()

    def blocking_tool() -> str:
        entered.set()
        if not release.wait(20):
            raise AssertionError("never released")
        return "unblocked"

    state = AgentBridgeState(tools=[blocking_tool, where])
    runtime.register_agent("blocker", lambda: CallerAgent("blocker"), state)
    runtime.register_agent("other", lambda: CallerAgent("other"), AgentBridgeState(tools=[where]))
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(runtime.chat("blocker", "blocking_tool")))
    t.start()
    assert entered.wait(10)
    # While the tool blocks its worker thread, other chats and commands finish.
    for _ in range(20):
        assert "thread" in json.loads(runtime.chat("other", "where", timeout=10))
    assert not result, "the blocking tool finished early: the test proves nothing"
    release.set()
    t.join(timeout=10)
    assert result == [json.dumps("unblocked")]


def test_policy_denial_names_agent_tool_policy_and_reason(runtime: PythonRuntime) -> None:
    calls: list[str] = []

    def allow_all(agent_id: str, tool: str, context: Any) -> bool:
        calls.append("allow_all")
        return True

    def no_where(agent_id: str, tool: str, context: Any) -> Any:
        calls.append("no_where")
        return Deny("location lookups are off") if tool == "where" else None

    def never_reached(agent_id: str, tool: str, context: Any) -> bool:
        calls.append("never_reached")
        return True

    state = AgentBridgeState(tools=[where], policies=[allow_all, no_where, never_reached])
    runtime.register_agent("p", lambda: CallerAgent("p"), state)
    with pytest.raises(PolicyDeniedError) as info:
        runtime.chat("p", "where")
    message = str(info.value)
    assert (
        "'p'" in message and "'where'" in message and "'no_where'" in message and "location lookups are off" in message
    )
    assert calls == ["allow_all", "no_where"], "the first denial stops the check"
    assert state.stats.denied == 1


def test_false_denies_and_policies_run_in_worker_threads(runtime: PythonRuntime) -> None:
    threads: list[str] = []

    def deny(agent_id: str, tool: str, context: Any) -> bool:
        threads.append(threading.current_thread().name)
        return False

    runtime.register_agent("p", lambda: CallerAgent("p"), AgentBridgeState(tools=[where], policies=[deny]))
    with pytest.raises(PolicyDeniedError, match="denied"):
        runtime.chat("p", "where")
    assert threads and threads[0].startswith("agy-bridge-worker")


def test_raising_policy_fails_closed_and_runtime_survives(runtime: PythonRuntime) -> None:
    ran: list[bool] = []

    def tool() -> str:
        ran.append(True)
        return "ran"

    def broken(agent_id: str, tool_name: str, context: Any) -> bool:
        raise ZeroDivisionError("policy bug")

    runtime.register_agent(
        "p",
        lambda: CallerAgent("p"),
        AgentBridgeState(tools=[Tool.from_function(tool, name="tool")], policies=[broken]),
    )
    with pytest.raises(PolicyError) as info:
        runtime.chat("p", "tool")
    assert "'broken'" in str(info.value) and "'p'" in str(info.value) and "'tool'" in str(info.value)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert not ran
    runtime.register_agent("ok", lambda: CallerAgent("ok"), AgentBridgeState(tools=[where]))
    assert "thread" in json.loads(runtime.chat("ok", "where"))


def test_hooks_fire_in_order_on_worker_threads(runtime: PythonRuntime) -> None:
    events: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def record(agent_id: str, event: str, context: Any) -> None:
        with lock:
            events.append((agent_id, event, threading.current_thread().name))

    hooks = {e: [record] for e in ("before_chat", "after_chat", "before_tool", "after_tool", "on_error")}
    runtime.register_agent("h", lambda: CallerAgent("h"), AgentBridgeState(tools=[where], hooks=hooks))
    runtime.chat("h", "where")
    assert [e[1] for e in events] == ["before_chat", "before_tool", "after_tool", "after_chat"]
    assert all(e[0] == "h" for e in events)
    assert all(e[2].startswith("agy-bridge-worker") for e in events)


def test_failing_tool_fires_on_error_and_keeps_its_traceback(runtime: PythonRuntime) -> None:
    events: list[str] = []

    def explode() -> None:
        raise ValueError("tool blew up")

    hooks = {"on_error": [lambda a, e, c: events.append(e)]}
    runtime.register_agent("e", lambda: CallerAgent("e"), AgentBridgeState(tools=[explode], hooks=hooks))
    with pytest.raises(ValueError, match="tool blew up") as info:
        runtime.chat("e", "explode")
    assert "explode" in [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert events.count("on_error") == 2  # once after the tool, once after the chat
    assert BRIDGE_STATE.get("e").stats.tool_errors == 1


def test_raising_hook_is_reported_with_agent_and_event(
    runtime: PythonRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    def bad_hook(agent_id: str, event: str, context: Any) -> None:
        raise RuntimeError("hook bug")

    state = AgentBridgeState(tools=[where], hooks={"before_tool": [bad_hook]})
    runtime.register_agent("hk", lambda: CallerAgent("hk"), state)
    with caplog.at_level(logging.WARNING, logger="agybridge"):
        assert "thread" in json.loads(runtime.chat("hk", "where"))  # the chat still succeeds
    assert any("'hk'" in r.getMessage() and "before_tool" in r.getMessage() for r in caplog.records)
    assert state.stats.hook_errors == 1

    async def direct() -> None:
        await dispatch_hook("hk", "before_tool", {"args": {}})

    with pytest.raises(HookError) as info:
        runtime.run(direct)
    assert info.value.agent_id == "hk" and info.value.event == "before_tool"
    assert isinstance(info.value.__cause__, RuntimeError)


def test_dispatch_policy_confirm_directly(runtime: PythonRuntime) -> None:
    state = AgentBridgeState(tools=[where], policies=[lambda a, t, c: Deny("nope") if t == "x" else True])
    runtime.register_agent("d", lambda: CallerAgent("d"), state)

    async def confirm(tool: str) -> str:
        await dispatch_policy_confirm("d", tool, "{}")
        return "approved"

    assert runtime.run(confirm, "where") == "approved"
    with pytest.raises(PolicyDeniedError, match="nope"):
        runtime.run(confirm, "x")


def test_unknown_agent_and_unknown_tool_errors(runtime: PythonRuntime) -> None:
    async def call(agent: str, tool: str) -> Any:
        return await dispatch_tool(agent, tool, "{}")

    with pytest.raises(UnknownAgentError, match="'ghost'"):
        runtime.run(call, "ghost", "where")
    runtime.register_agent("k", lambda: CallerAgent("k"), AgentBridgeState(tools=[where, where_async]))
    with pytest.raises(UnknownToolError) as info:
        runtime.run(call, "k", "teleport")
    message = str(info.value)
    assert "'teleport'" in message and "'where'" in message and "'where_async'" in message
    assert isinstance(info.value, KeyError)


@pytest.mark.parametrize(
    ("context", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"args": [1]}', "'args' must be a JSON object"),
        (42, "JSON text or a dict"),
        ('{"args": {"unexpected": 1}}', "cannot take arguments"),
    ],
)
def test_malformed_context_says_what_was_wrong(runtime: PythonRuntime, context: Any, fragment: str) -> None:
    runtime.register_agent("c", lambda: CallerAgent("c"), AgentBridgeState(tools=[where]))

    async def call() -> Any:
        return await dispatch_tool("c", "where", context)

    with pytest.raises(ContextError, match=fragment):
        runtime.run(call)
    assert runtime.run(asyncio.sleep, 0, "still usable") == "still usable"


def test_parse_context_accepts_text_bytes_and_dicts() -> None:
    assert parse_context('{"args": {"x": 1}, "turn": 2}') == {"args": {"x": 1}, "turn": 2}
    assert parse_context(b'{"args": {}}') == {"args": {}}
    assert parse_context({"call_id": "c1"}) == {"call_id": "c1", "args": {}}
    assert parse_context(None) == {"args": {}}


def test_unregister_fails_in_flight_tool_calls_cleanly(runtime: PythonRuntime) -> None:
    started = threading.Event()

    async def forever_tool() -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    class ToolThenReport:
        async def chat(self, message: str) -> str:
            return str(await dispatch_tool("u", "forever_tool", None))

    runtime.register_agent("u", ToolThenReport, AgentBridgeState(tools=[forever_tool]))
    outcome: list[BaseException] = []

    def caller() -> None:
        try:
            runtime.chat("u", "go")
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=caller)
    t.start()
    assert started.wait(10)
    runtime.unregister_agent("u")
    t.join(timeout=10)
    assert outcome and isinstance(outcome[0], CommandCancelledError)
    assert "'u'" in str(outcome[0])
    assert "u" not in BRIDGE_STATE


def test_tool_descriptions() -> None:
    def lookup(city: str, days: int = 1) -> str:
        """Look up the forecast.

        More text that is not the summary."""
        return city

    tool = Tool.from_function(lookup)
    assert tool.name == "lookup" and tool.description == "Look up the forecast."
    assert tool.parameters == {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    }
    custom = Tool.from_function(lookup, name="forecast", description="d", parameters={"type": "object"})
    assert (custom.name, custom.description, custom.parameters) == ("forecast", "d", {"type": "object"})
    with pytest.raises(TypeError, match="callable"):
        Tool.from_function(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        AgentBridgeState(tools=["not a tool"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="unknown hook event"):
        AgentBridgeState(hooks={"before_lunch": [print]})
    with pytest.raises(TypeError, match="policy must be callable"):
        AgentBridgeState(policies=[None])  # type: ignore[list-item]


def test_scripted_agent_plans_calls_honours_denials_and_keeps_history(runtime: PythonRuntime) -> None:
    def add(a: int, b: int) -> int:
        return a + b

    def wipe(table: str) -> str:
        return "wiped"

    state = AgentBridgeState(tools=[add, wipe], policies=[lambda a, t, c: Deny("read-only") if t == "wipe" else True])
    agents: list[ScriptedAgent] = []

    def factory() -> ScriptedAgent:
        agents.append(ScriptedAgent("s", latency=0.001))
        return agents[-1]

    runtime.register_agent("s", factory, state)
    assert runtime.chat("s", "add(a=2, b=3) then wipe(table=users)") == "turn 1: add -> 5; wipe denied (read-only)"
    assert runtime.chat("s", "hello") == "turn 2: no tools needed"
    assert [role for role, _ in agents[0].history] == ["user", "tool", "tool", "assistant", "user", "assistant"]
    assert plan_from_message("f(x=1.5, name=bob) g()") == [("f", {"x": 1.5, "name": "bob"}), ("g", {})]
    with pytest.raises(ValueError, match="without '='"):
        plan_from_message("f(oops)")
