"""A real agent SDK through the bridge: pydantic-ai agents calling host tools.

Skipped only when the ``pydantic-ai`` extra is not installed; CI installs it and sets
AGYBRIDGE_REQUIRE_PYDANTIC_AI=1, which turns a missing package into a failure.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from conftest import make_config, run_drivers, trio_host

from agybridge._env import env_flag

if env_flag("AGYBRIDGE_REQUIRE_PYDANTIC_AI"):
    import pydantic_ai  # noqa: F401 - a missing package fails the run here
else:
    pytest.importorskip(
        "pydantic_ai", reason="the pydantic-ai extra is not installed: pip install 'agybridge[pydantic-ai]'"
    )

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agybridge import AgentBridgeState, ChatTimeoutError, Deny, PythonRuntime, Tool
from agybridge.adapters.pydantic_ai import PydanticAIAgent, pydantic_ai_agent


def _last_parts(messages: list[ModelMessage]) -> list[Any]:
    return list(getattr(messages[-1], "parts", ()))


def _tool_results(messages: list[ModelMessage]) -> dict[str, Any]:
    return {p.tool_name: p for p in _last_parts(messages) if isinstance(p, ToolReturnPart)}


def test_function_model_calls_sync_and_trio_tools_and_answers(runtime: PythonRuntime) -> None:
    import trio

    def weather(city: str) -> str:
        """Current weather for a city."""
        return f"sunny in {city}"

    async def convert(amount: float, rate: float) -> float:
        """Convert an amount (async, runs in the trio host)."""
        await trio.sleep(0)  # only works inside trio
        return amount * rate

    seen_tools: list[dict[str, Any]] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        results = _tool_results(messages)
        if results:
            return ModelResponse(
                parts=[TextPart(f"{results['weather'].content}; converted {results['convert'].content}")]
            )
        seen_tools.extend({"name": t.name, "schema": t.parameters_json_schema} for t in info.function_tools)
        return ModelResponse(
            parts=[ToolCallPart("weather", {"city": "Lima"}), ToolCallPart("convert", {"amount": 4, "rate": 2.5})]
        )

    state = AgentBridgeState(
        tools=[
            weather,
            Tool.from_function(
                convert,
                parameters={
                    "type": "object",
                    "properties": {
                        "amount": {"type": "number", "description": "how much"},
                        "rate": {"type": "number", "description": "the exchange rate"},
                    },
                    "required": ["amount", "rate"],
                },
            ),
        ]
    )

    async def host() -> str:
        await runtime.aregister_agent("pa", pydantic_ai_agent("pa", lambda: Agent(FunctionModel(model))), state)
        return await runtime.achat("pa", "weather and money please")

    assert trio_host(host) == "sunny in Lima; converted 10.0"
    schemas = {t["name"]: t["schema"] for t in seen_tools}
    assert schemas["convert"]["properties"]["rate"] == {"type": "number", "description": "the exchange rate"}
    assert schemas["weather"]["required"] == ["city"]


def test_policy_denial_reaches_the_model_as_a_tool_error(runtime: PythonRuntime) -> None:
    ran: list[str] = []

    def delete_records(table: str) -> str:
        ran.append(table)
        return "deleted"

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        parts = _last_parts(messages)
        for part in parts:
            if getattr(part, "tool_name", None) == "delete_records":
                return ModelResponse(parts=[TextPart(f"tool said: {part.content}")])
        return ModelResponse(parts=[ToolCallPart("delete_records", {"table": "users"})])

    state = AgentBridgeState(tools=[delete_records], policies=[lambda a, t, c: Deny("read-only agent")])
    runtime.register_agent("pd", pydantic_ai_agent("pd", lambda: Agent(FunctionModel(model))), state)
    reply = runtime.chat("pd", "clean up")
    assert "read-only agent" in reply and "denied tool 'delete_records'" in reply
    assert ran == []
    assert state.stats.denied == 1


def test_chat_timeout_cuts_off_a_stalling_model(core: Any) -> None:
    stalled = threading.Event()

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        stalled.set()
        await asyncio.sleep(60)
        return ModelResponse(parts=[TextPart("too late")])

    with PythonRuntime(make_config(chat_timeout=0.3), core=core) as rt:
        rt.register_agent("slow", pydantic_ai_agent("slow", lambda: Agent(FunctionModel(model))))
        with pytest.raises(ChatTimeoutError, match="'slow'"):
            rt.chat("slow", "hello")
        assert stalled.is_set()


def _echo_history_model() -> FunctionModel:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        results = _tool_results(messages)
        if results:
            return ModelResponse(parts=[TextPart(str(results["tag"].content))])
        prompt = str(messages[-1].parts[-1].content)  # type: ignore[union-attr]
        await asyncio.sleep(0.001)
        return ModelResponse(parts=[ToolCallPart("tag", {"text": prompt})])

    return FunctionModel(model)


def test_successive_chats_continue_one_history(runtime: PythonRuntime) -> None:
    agents: list[PydanticAIAgent] = []

    def factory() -> PydanticAIAgent:
        agents.append(PydanticAIAgent("h", Agent(_echo_history_model())))
        return agents[-1]

    runtime.register_agent("h", factory, AgentBridgeState(tools=[Tool.from_function(lambda text: text, name="tag")]))
    assert runtime.chat("h", "one") == "one"
    assert runtime.chat("h", "two") == "two"
    prompts = [
        part.content
        for message in agents[0].history
        for part in getattr(message, "parts", ())
        if part.part_kind == "user-prompt"
    ]
    assert prompts == ["one", "two"]


@pytest.mark.timeout(180)
def test_fifty_agents_from_many_threads_keep_unmixed_histories(core: Any) -> None:
    agents: dict[str, PydanticAIAgent] = {}
    lock = threading.Lock()

    def factory_for(agent_id: str) -> Any:
        def factory() -> PydanticAIAgent:
            agent = PydanticAIAgent(agent_id, Agent(_echo_history_model()))
            with lock:
                agents[agent_id] = agent
            return agent

        return factory

    def tag(text: str) -> str:
        return text

    with PythonRuntime(make_config(), core=core) as rt:
        ids = [f"agent-{i}" for i in range(50)]
        for agent_id in ids:
            rt.register_agent(agent_id, factory_for(agent_id), AgentBridgeState(tools=[Tool.from_function(tag)]))
        failures: list[str] = []

        def driver(offset: int) -> None:
            for turn in range(3):
                for agent_id in ids[offset::5]:
                    message = json.dumps({"agent": agent_id, "turn": turn})
                    reply = rt.chat(agent_id, message)
                    if reply != message:
                        failures.append(f"{agent_id} turn {turn}: {reply}")

        run_drivers(driver, 5, timeout=150)
        assert failures == []
        for agent_id, agent in agents.items():
            prompts = [
                json.loads(part.content)
                for message in agent.history
                for part in getattr(message, "parts", ())
                if part.part_kind == "user-prompt"
            ]
            assert prompts == [{"agent": agent_id, "turn": t} for t in range(3)], agent_id


def test_demo_with_pydantic_ai_agents(core: Any) -> None:
    from agybridge.demo import DemoOptions, run_demo

    report = run_demo(
        DemoOptions(
            agents=3, turns=5, threads=2, latency=0.0, spacing=0.0, progress=False, sdk="pydantic-ai", core=core
        )
    )
    assert report.ok, report.problems
    assert report.denials == 3 * 1 * 4
    assert report.tool_runs["delete_records"] == 0
