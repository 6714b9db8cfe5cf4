"""A second real agent SDK through the bridge: OpenAI Agents SDK agents with host tools, hooks,
approvals and streaming, offline and over real HTTP to a local OpenAI-compatible server.

Skipped only when the ``openai-agents`` extra is not installed; CI installs it and sets
AGYBRIDGE_REQUIRE_OPENAI_AGENTS=1, which turns a missing package into a failure.
"""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import threading
from typing import Any

import pytest
from _openai_server import FakeOpenAIServer, planning_responder
from conftest import asyncio_host, make_config, trio_host

from agybridge._env import env_flag

if env_flag("AGYBRIDGE_REQUIRE_OPENAI_AGENTS"):
    import agents  # noqa: F401 - a missing package fails the run here
else:
    pytest.importorskip(
        "agents", reason="the openai-agents extra is not installed: pip install 'agybridge[openai-agents]'"
    )

from agents import Agent, OpenAIChatCompletionsModel, RunConfig, function_tool, set_tracing_disabled

from agybridge import (
    AgentBridgeState,
    Deny,
    HostLoopError,
    PolicyError,
    PythonRuntime,
    Tool,
)
from agybridge.adapters.openai_agents import OpenAIAgentsAgent, PlanningModel, demo_agent_factory, openai_agents_agent

pytestmark = pytest.mark.timeout(60)
set_tracing_disabled(True)  # nothing may try to reach the internet
OFFLINE = RunConfig(tracing_disabled=True)
REQUEST = contextvars.ContextVar("REQUEST", default="none")


def _planning_agent(agent_id: str, agents_made: list[OpenAIAgentsAgent] | None = None, **options: Any) -> Any:
    def factory() -> OpenAIAgentsAgent:
        agent = OpenAIAgentsAgent(agent_id, Agent(name=agent_id, model=PlanningModel()), run_config=OFFLINE, **options)
        if agents_made is not None:
            agents_made.append(agent)
        return agent

    return factory


def _events(log: list[tuple[str, Any]]) -> dict[str, Any]:
    lock = threading.Lock()

    def record(agent_id: str, event: str, context: Any) -> None:
        with lock:
            log.append((event, context.get("tool")))

    return {e: [record] for e in ("before_chat", "after_chat", "before_tool", "after_tool", "on_error")}


def _prompts(agent: OpenAIAgentsAgent) -> list[str]:
    return [str(item.get("content")) for item in agent.history if isinstance(item, dict) and item.get("role") == "user"]


def test_host_tools_run_on_the_host_side_with_the_callers_context(runtime: PythonRuntime) -> None:
    import trio

    seen: dict[str, Any] = {}

    def weather(city: str) -> str:
        """Current weather for a city (a worker thread, the caller's context)."""
        seen["weather"] = (threading.current_thread().name, REQUEST.get())
        return f"sunny in {city}"

    async def convert(amount: float, rate: float) -> float:
        """Convert an amount (async: runs in the trio host that registered the agent)."""
        await trio.sleep(0)  # only works inside trio
        seen["convert"] = threading.current_thread().name
        return amount * rate

    def ledger(entry: str) -> str:
        """A thread-bound resource: runs on the caller's own thread."""
        seen["ledger"] = threading.current_thread().name
        return f"noted {entry}"

    state = AgentBridgeState(tools=[weather, convert, Tool.from_function(ledger, thread_sensitive=True)])

    async def host() -> str:
        await runtime.aregister_agent("oa", _planning_agent("oa"), state)
        return await runtime.achat("oa", "weather(city=Lima) convert(amount=4,rate=2.5)")

    reply = trio_host(host)
    assert reply == "turn 1: weather -> sunny in Lima; convert -> 10.0"
    assert seen["convert"] != "agy-bridge-python-runtime"

    def caller() -> str:
        REQUEST.set("request-7")
        seen["caller"] = threading.current_thread().name
        return runtime.chat("oa", "ledger(entry=coffee) weather(city=Oslo)")

    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(caller()), name="the-caller")
    t.start()
    t.join(30)
    assert result == ["turn 2: ledger -> noted coffee; weather -> sunny in Oslo"]
    assert seen["ledger"] == "the-caller"
    worker, request = seen["weather"]
    assert worker not in ("the-caller", "agy-bridge-python-runtime") and request == "request-7"
    assert state.stats.tool_calls == 4


def test_a_failing_tool_reaches_the_model_as_the_sdk_reports_it_and_on_error_fires(runtime: PythonRuntime) -> None:
    log: list[tuple[str, Any]] = []

    def flaky(x: int) -> int:
        raise ValueError("disk on fire")

    state = AgentBridgeState(tools=[flaky], hooks=_events(log))
    runtime.register_agent("fe", _planning_agent("fe"), state)
    reply = runtime.chat("fe", "flaky(x=1)")
    assert reply == "turn 1: flaky -> An error occurred while running the tool. Please try again."
    assert [e for e, _ in log] == ["before_chat", "before_tool", "on_error", "after_chat"]
    assert state.stats.tool_errors == 1

    custom = AgentBridgeState(tools=[flaky])
    runtime.register_agent(
        "fc", _planning_agent("fc", failure_error_function=lambda ctx, exc: f"failed: {exc}"), custom
    )
    assert runtime.chat("fc", "flaky(x=2)") == "turn 1: flaky -> failed: disk on fire"


def test_a_denial_is_a_rejected_call_asked_once_and_the_run_goes_on(runtime: PythonRuntime) -> None:
    ran: list[str] = []
    asked: list[tuple[str, Any]] = []
    log: list[tuple[str, Any]] = []

    def weather(city: str) -> str:
        ran.append("weather")
        return f"sunny in {city}"

    def delete_records(table: str) -> str:
        ran.append("delete_records")
        return "deleted"

    def no_deletes(agent_id: str, tool_name: str, context: Any) -> Any:
        asked.append((tool_name, context["args"]))
        return Deny("read-only agent") if tool_name == "delete_records" else True

    state = AgentBridgeState(tools=[weather, delete_records], policies=[no_deletes], hooks=_events(log))
    runtime.register_agent("pd", _planning_agent("pd"), state)
    reply = runtime.chat("pd", "delete_records(table=users) weather(city=Lima)")
    assert reply.startswith("turn 1: delete_records denied (policy 'no_deletes' denied tool 'delete_records'")
    assert "read-only agent" in reply and reply.endswith("; weather -> sunny in Lima")
    assert ran == ["weather"]
    # Each call was confirmed exactly once: at the SDK's approval step, not again inside dispatch_tool.
    assert asked == [("delete_records", {"table": "users"}), ("weather", {"city": "Lima"})]
    assert state.stats.denied == 1
    # A denied call fires no tool hook; the approved one fires each once, even across the resume.
    assert [e for e, _ in log] == ["before_chat", "before_tool", "after_tool", "after_chat"]
    # Streamed, the same: the approval pauses the streamed run and it resumes.
    streamed = "".join(runtime.chat_stream("pd", "delete_records(table=logs)"))
    assert streamed.startswith("turn 2: delete_records denied (") and ran == ["weather"]
    assert state.stats.denied == 2


def test_a_broken_policy_fails_closed(runtime: PythonRuntime) -> None:
    ran: list[str] = []

    def broken(agent_id: str, tool_name: str, context: Any) -> Any:
        raise RuntimeError("policy store unreachable")

    def drop(table: str) -> str:
        ran.append(table)
        return "dropped"

    state = AgentBridgeState(tools=[drop], policies=[broken])
    runtime.register_agent("pb", _planning_agent("pb"), state)
    with pytest.raises(PolicyError, match="fail closed") as caught:
        runtime.chat("pb", "drop(table=users)")
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert ran == []


def test_sdk_tool_events_reach_the_hooks_exactly_once_per_event(runtime: PythonRuntime) -> None:
    log: list[tuple[str, Any]] = []

    @function_tool
    def clock() -> str:
        """The SDK agent's own tool (not a host tool)."""
        return "noon"

    def weather(city: str) -> str:
        return f"sunny in {city}"

    def factory() -> OpenAIAgentsAgent:
        return OpenAIAgentsAgent("hk", Agent(name="hk", model=PlanningModel(), tools=[clock]), run_config=OFFLINE)

    state = AgentBridgeState(tools=[weather], hooks=_events(log), policies=[lambda a, t, c: True])
    runtime.register_agent("hk", factory, state)
    assert runtime.chat("hk", "clock() weather(city=Lima)") == "turn 1: clock -> noon; weather -> sunny in Lima"
    assert "".join(runtime.chat_stream("hk", "clock()")) == "turn 2: clock -> noon"
    counts: dict[tuple[str, Any], int] = {}
    for entry in log:
        counts[entry] = counts.get(entry, 0) + 1
    assert counts == {
        ("before_chat", None): 2,
        ("after_chat", None): 2,
        ("before_tool", "clock"): 2,
        ("after_tool", "clock"): 2,
        ("before_tool", "weather"): 1,
        ("after_tool", "weather"): 1,
    }


def test_successive_chats_carry_the_conversation_on(runtime: PythonRuntime) -> None:
    made: list[OpenAIAgentsAgent] = []
    runtime.register_agent("cv", _planning_agent("cv", made), AgentBridgeState(tools=[lambda: "x"]))
    assert runtime.chat("cv", "one") == "turn 1: no tools needed"
    assert "".join(runtime.chat_stream("cv", "two")) == "turn 2: no tools needed"
    assert runtime.chat("cv", "three") == "turn 3: no tools needed"
    assert _prompts(made[0]) == ["one", "two", "three"]


def test_streamed_chat_yields_deltas_and_leaving_early_records_nothing(runtime: PythonRuntime) -> None:
    made: list[OpenAIAgentsAgent] = []

    def lookup(key: str) -> str:
        return key.upper()

    runtime.register_agent("st", _planning_agent("st", made), AgentBridgeState(tools=[lookup]))
    chunks = list(runtime.chat_stream("st", "lookup(key=alpha)"))
    assert chunks == ["turn ", "1: ", "lookup ", "-> ", "ALPHA"]

    async def consume() -> list[str]:
        return [c async for c in runtime.achat_stream("st", "lookup(key=beta)")]

    assert "".join(asyncio_host(consume)) == "turn 2: lookup -> BETA"
    assert "".join(trio_host(consume)) == "turn 3: lookup -> BETA"
    # A buffer of one holds the run after its first delta, so the turn is unfinished when the
    # consumer leaves (by construction, not by timing).
    for chunk in runtime.chat_stream("st", "lookup(key=gamma)", buffer=1):
        assert chunk == "turn "
        break
    assert "".join(runtime.chat_stream("st", "lookup(key=delta)")) == "turn 4: lookup -> DELTA"
    assert _prompts(made[0]) == ["lookup(key=alpha)", "lookup(key=beta)", "lookup(key=beta)", "lookup(key=delta)"]


def test_a_bridge_failure_ends_the_chat_with_its_own_error(runtime: PythonRuntime) -> None:
    async def remote(x: int) -> int:
        return x

    async def register() -> None:
        await runtime.aregister_agent("gone", _planning_agent("gone"), AgentBridgeState(tools=[remote]))

    asyncio_host(register)  # the asyncio host loop that registered the async tool has finished
    with pytest.raises(HostLoopError):
        runtime.chat("gone", "remote(x=1)")


def test_the_extra_missing_gives_a_clear_message() -> None:
    code = (
        "import sys; sys.modules['agents'] = None\n"
        "try:\n    import agybridge.adapters.openai_agents\n"
        "except ImportError as exc:\n    print(exc)\n"
        "from agybridge.__main__ import main\n"
        "try:\n    main(['demo', '--sdk', 'openai-agents'])\n"
        "except SystemExit as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.stdout.count("pip install 'agybridge[openai-agents]'") == 2, out


def test_demo_with_openai_agents_agents(core: Any) -> None:
    from agybridge.demo import DemoOptions, run_demo

    report = run_demo(
        DemoOptions(
            agents=3, turns=5, threads=2, latency=0.0, spacing=0.0, progress=False, sdk="openai-agents", core=core
        )
    )
    assert report.ok, report.problems
    assert report.denials == 3 * 1 * 4
    assert report.tool_runs["delete_records"] == 0
    assert report.hooks["before_tool"] == report.hooks["after_tool"] == sum(report.tool_runs.values())


def test_demo_factory_is_a_plain_factory(runtime: PythonRuntime) -> None:
    runtime.register_agent("d", demo_agent_factory("d"), AgentBridgeState())
    assert runtime.chat("d", "hi") == "turn 1: no tools needed"


# -- over real HTTP: the SDK's chat-completions model and an AsyncOpenAI pool on the runtime loop ----


class _NoInternet:
    """Records every socket connection made to an address other than 127.0.0.1 (an audit hook:
    it sees the SDK's tracing exporter and any client alike)."""

    installed = False
    armed = False
    outside: list[Any] = []
    loopback = 0  # so the test knows the hook saw the connections it must see

    @classmethod
    def arm(cls) -> None:
        if not cls.installed:
            sys.addaudithook(cls._hook)
            cls.installed = True
        cls.outside.clear()
        cls.loopback = 0
        cls.armed = True

    @classmethod
    def _hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if cls.armed and event == "socket.connect":
            address = args[1]
            if isinstance(address, tuple) and address and address[0] not in ("127.0.0.1", "::1", "localhost"):
                cls.outside.append(address)
            else:
                cls.loopback += 1


@pytest.mark.timeout(150)
def test_many_chats_over_real_http_from_threads_asyncio_and_trio_share_one_pool(runtime: PythonRuntime) -> None:
    import trio
    from openai import AsyncOpenAI

    _NoInternet.arm()
    calls: list[str] = []
    lock = threading.Lock()

    def weather(city: str) -> str:
        with lock:
            calls.append(city)
        return f"sunny in {city}"

    def no_deletes(agent_id: str, tool_name: str, context: Any) -> Any:
        return Deny("read-only") if tool_name == "delete_records" else True

    with FakeOpenAIServer(planning_responder) as server:
        clients: list[Any] = []

        async def open_client() -> None:
            # Built on the runtime loop: its connection pool belongs to that loop.
            clients.append(AsyncOpenAI(base_url=server.base_url, api_key="local", max_retries=0))

        runtime.run(open_client)

        def factory_for(agent_id: str) -> Any:
            def make() -> Agent[Any]:
                return Agent(name=agent_id, model=OpenAIChatCompletionsModel("local-model", openai_client=clients[0]))

            return openai_agents_agent(agent_id, make, run_config=OFFLINE)

        def state() -> AgentBridgeState:
            return AgentBridgeState(
                tools=[weather, Tool.from_function(lambda table: "deleted", name="delete_records")],
                policies=[no_deletes],
            )

        thread_ids = ["t-0", "t-1", "t-2"]
        for agent_id in thread_ids:
            runtime.register_agent(agent_id, factory_for(agent_id), state())
        failures: list[str] = []

        def check(agent_id: str, turn: int, city: str, reply: str) -> None:
            expected = f"turn {turn + 1}: weather -> sunny in {city}"
            if turn == 2:
                expected = f"turn {turn + 1}: weather -> sunny in {city}; delete_records -> policy 'no_deletes'"
            if not reply.startswith(expected):
                with lock:
                    failures.append(f"{agent_id} turn {turn}: {reply!r}")

        def message(city: str, turn: int) -> str:
            return f"weather(city={city})" + (" delete_records(table=users)" if turn == 2 else "")

        def driver(agent_id: str) -> None:
            for turn in range(4):
                city = f"{agent_id}-{turn}"
                if turn % 2:
                    reply = "".join(runtime.chat_stream(agent_id, message(city, turn)))
                else:
                    reply = runtime.chat(agent_id, message(city, turn))
                check(agent_id, turn, city, reply)

        async def async_driver(agent_id: str) -> None:
            await runtime.aregister_agent(agent_id, factory_for(agent_id), state())
            for turn in range(4):
                city = f"{agent_id}-{turn}"
                if turn % 2:
                    reply = "".join([c async for c in runtime.achat_stream(agent_id, message(city, turn))])
                else:
                    reply = await runtime.achat(agent_id, message(city, turn))
                check(agent_id, turn, city, reply)

        threads = [threading.Thread(target=driver, args=(a,)) for a in thread_ids]
        threads.append(threading.Thread(target=lambda: asyncio.run(async_driver("aio"))))
        threads.append(threading.Thread(target=lambda: trio.run(async_driver, "trio")))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        assert failures == []
        chats = 5 * 4
        assert len(calls) == chats
        # A tool call and an answer per chat, each one request (the denial asks no model).
        assert server.requests == 2 * chats
        assert server.streamed == chats  # the streamed half went through run_streamed
        # One pool on the runtime loop: connections are reused across chats, threads and hosts.
        assert server.connections <= 5 + 1 < server.requests, server.connections
        # Later requests carry the conversation so far (4 turns of user, call, result, answer).
        assert server.longest_history >= 1 + 3 * 4
        assert all(names == ["weather", "delete_records"] for names in server.tool_names)
        runtime.run(clients[0].close)
    _NoInternet.armed = False
    assert _NoInternet.outside == []
    assert _NoInternet.loopback >= server.connections


def test_the_runtime_does_what_run_sync_cannot(core: Any) -> None:
    """``Runner.run_sync`` refuses a thread whose loop is running; through the bridge the same agent
    is driven from inside a running asyncio loop."""
    from agents import Runner

    agent = Agent(name="rs", model=PlanningModel())

    async def inside_a_loop() -> str:
        try:
            Runner.run_sync(agent, "hi", run_config=OFFLINE)
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    assert asyncio.run(inside_a_loop()) != "no error"
    with PythonRuntime(make_config(), core=core) as rt:
        rt.register_agent("rs", openai_agents_agent("rs", lambda: agent, run_config=OFFLINE))

        async def through_the_bridge() -> str:
            return await rt.achat("rs", "hi")

        assert asyncio.run(through_the_bridge()) == "turn 1: no tools needed"


def test_the_sdk_agents_own_approvals_are_decided_by_the_policies(runtime: PythonRuntime) -> None:
    ran: list[str] = []

    @function_tool(needs_approval=True)
    def launch(target: str) -> str:
        """The SDK agent's own tool, declared as needing approval."""
        ran.append(target)
        return f"launched at {target}"

    def only_the_moon(agent_id: str, tool_name: str, context: Any) -> Any:
        return True if context["args"].get("target") == "moon" else Deny("only the moon")

    def factory() -> OpenAIAgentsAgent:
        return OpenAIAgentsAgent("ap", Agent(name="ap", model=PlanningModel(), tools=[launch]), run_config=OFFLINE)

    runtime.register_agent("ap", factory, AgentBridgeState(policies=[only_the_moon]))
    assert runtime.chat("ap", "launch(target=moon)") == "turn 1: launch -> launched at moon"
    reply = runtime.chat("ap", "launch(target=mars)")
    assert reply.startswith("turn 2: launch denied (") and "only the moon" in reply
    assert ran == ["moon"]


def test_an_sdk_session_can_carry_the_conversation_instead(runtime: PythonRuntime) -> None:
    from agents import SQLiteSession

    made: list[OpenAIAgentsAgent] = []

    def factory() -> OpenAIAgentsAgent:
        # Built on the runtime loop, like the agent: an in-memory SQLite session.
        made.append(
            OpenAIAgentsAgent(
                "ss", Agent(name="ss", model=PlanningModel()), run_config=OFFLINE, session=SQLiteSession("ss")
            )
        )
        return made[-1]

    # A policy, so every call also pauses for an approval and the run resumes with the session.
    state = AgentBridgeState(tools=[Tool.from_function(lambda key: key, name="echo")], policies=[lambda a, t, c: True])
    runtime.register_agent("ss", factory, state)
    assert runtime.chat("ss", "echo(key=one)") == "turn 1: echo -> one"
    assert "".join(runtime.chat_stream("ss", "echo(key=two)")) == "turn 2: echo -> two"
    assert runtime.chat("ss", "hello") == "turn 3: no tools needed"
    assert made[0].history == ()  # the session holds the conversation, not the adapter


def test_chat_timeout_cuts_off_a_stalling_model_and_the_agent_stays_usable(core: Any) -> None:
    from agybridge import ChatTimeoutError

    with PythonRuntime(make_config(chat_timeout=0.3), core=core) as rt:
        slow = OpenAIAgentsAgent("slow", Agent(name="slow", model=PlanningModel(latency=60)), run_config=OFFLINE)
        rt.register_agent("slow", lambda: slow)
        with pytest.raises(ChatTimeoutError, match="'slow'"):
            rt.chat("slow", "hello")
        with pytest.raises(ChatTimeoutError, match="'slow'"):
            "".join(rt.chat_stream("slow", "hello"))
        slow.agent = Agent(name="slow", model=PlanningModel())  # the model recovers
        assert rt.chat("slow", "again") == "turn 1: no tools needed"  # the timed-out turns left no trace
