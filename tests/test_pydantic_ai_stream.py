"""pydantic-ai agents streaming through the bridge: offline with FunctionModel, and over real HTTP.

Skipped only when the ``pydantic-ai`` extra is not installed (AGYBRIDGE_REQUIRE_PYDANTIC_AI=1
turns that into a failure, as in test_pydantic_ai.py).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from _openai_server import FakeOpenAIServer
from conftest import asyncio_host, run_drivers, trio_host

from agybridge._env import env_flag

if env_flag("AGYBRIDGE_REQUIRE_PYDANTIC_AI"):
    import pydantic_ai  # noqa: F401 - a missing package fails the run here
else:
    pytest.importorskip(
        "pydantic_ai", reason="the pydantic-ai extra is not installed: pip install 'agybridge[pydantic-ai]'"
    )

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from agybridge import AgentBridgeState, Deny, PythonRuntime, Tool
from agybridge.adapters.pydantic_ai import PydanticAIAgent, demo_agent_factory

pytestmark = pytest.mark.timeout(60)


def _prompts(agent: PydanticAIAgent) -> list[str]:
    return [
        str(part.content)
        for message in agent.history
        for part in getattr(message, "parts", ())
        if part.part_kind == "user-prompt"
    ]


def _stream_model(gate: threading.Event | None = None) -> FunctionModel:
    """Asks for tool ``lookup`` once per prompt, then streams the answer in three deltas."""

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        results = [p for p in getattr(messages[-1], "parts", ()) if isinstance(p, (ToolReturnPart,))]
        if not results:
            prompt = str(messages[-1].parts[-1].content)  # type: ignore[union-attr]
            yield {0: DeltaToolCall(name="lookup", json_args='{"key": ', tool_call_id="c1")}
            yield {0: DeltaToolCall(json_args=f'"{prompt}"}}')}
            return
        yield "found "
        if gate is not None:
            gate.set()
        yield str(results[0].content)
        yield "."

    async def not_streamed(messages: list[ModelMessage], info: AgentInfo) -> Any:
        raise AssertionError("chat_stream must use the streamed run")

    return FunctionModel(not_streamed, stream_function=respond)


def test_chat_stream_streams_deltas_with_tools_policies_hooks_and_history(runtime: PythonRuntime) -> None:
    agents: list[PydanticAIAgent] = []
    events: list[str] = []

    def factory() -> PydanticAIAgent:
        agents.append(PydanticAIAgent("ps", Agent(_stream_model())))
        return agents[-1]

    def lookup(key: str) -> str:
        return key.upper()

    state = AgentBridgeState(
        tools=[lookup],
        hooks={event: [lambda a, e, ctx: events.append(e)] for event in ("before_chat", "after_chat", "before_tool")},
    )
    runtime.register_agent("ps", factory, state)
    assert list(runtime.chat_stream("ps", "alpha")) == ["found ", "ALPHA", "."]

    async def consume() -> list[str]:
        return [chunk async for chunk in runtime.achat_stream("ps", "beta")]

    assert asyncio_host(consume) == ["found ", "BETA", "."]
    assert trio_host(consume) == ["found ", "BETA", "."]
    assert _prompts(agents[0]) == ["alpha", "beta", "beta"]  # one conversation, carried on
    assert events.count("before_tool") == 3 and events.count("after_chat") == 3
    assert state.stats.tool_calls == 3


def test_policy_denial_reaches_the_streamed_run(runtime: PythonRuntime) -> None:
    runtime.register_agent(
        "pd",
        demo_agent_factory("pd"),
        AgentBridgeState(
            tools=[Tool.from_function(lambda table: "deleted", name="drop")],
            policies=[lambda a, t, c: Deny("read-only")],
        ),
    )
    reply = "".join(runtime.chat_stream("pd", "drop(table=users)"))
    assert reply.startswith("turn 1: drop denied") and "read-only" in reply


def test_leaving_a_streamed_chat_early_keeps_the_history_and_the_agent(runtime: PythonRuntime) -> None:
    agents: list[PydanticAIAgent] = []
    gate = threading.Event()

    def factory() -> PydanticAIAgent:
        agents.append(PydanticAIAgent("pe", Agent(_stream_model(gate))))
        return agents[-1]

    runtime.register_agent("pe", factory, AgentBridgeState(tools=[Tool.from_function(lambda key: key, name="lookup")]))
    # A buffer of one holds the model after its first delta until the consumer takes again,
    # so the turn is certainly unfinished when the consumer leaves (deterministic, not a race).
    for chunk in runtime.chat_stream("pe", "first", buffer=1):
        assert chunk == "found "
        break
    # The early exit released the conversation: the next chat runs and continues it.
    assert "".join(runtime.chat_stream("pe", "second")) == "found second."
    assert _prompts(agents[0]) == ["second"]  # the abandoned turn is not recorded


# -- over real HTTP: a local OpenAI-compatible server streaming SSE chat completions ----------
# (tests/_openai_server.py, shared with the OpenAI Agents SDK's tests)


@pytest.mark.timeout(120)
def test_streamed_chats_over_real_http_share_one_connection_pool(runtime: PythonRuntime) -> None:
    pytest.importorskip("openai", reason="needs the openai client: pip install 'agybridge[pydantic-ai]'")
    from openai import AsyncOpenAI
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    def weather(city: str) -> str:
        """Current weather for a city."""
        return f"sunny in {city}"

    with FakeOpenAIServer() as server:
        clients: list[Any] = []

        async def open_client() -> None:
            # Built on the runtime loop: its connection pool belongs to that loop.
            clients.append(AsyncOpenAI(base_url=server.base_url, api_key="local", max_retries=0))

        runtime.run(open_client)

        def factory_for(agent_id: str) -> Any:
            provider = OpenAIProvider(openai_client=clients[0])
            return lambda: PydanticAIAgent(agent_id, Agent(OpenAIChatModel("local-model", provider=provider)))

        agent_ids = ["oa-0", "oa-1", "oa-2"]
        for agent_id in agent_ids:
            runtime.register_agent(agent_id, factory_for(agent_id), AgentBridgeState(tools=[weather]))
        failures: list[str] = []
        replies: list[str] = []
        lock = threading.Lock()

        def driver(k: int) -> None:
            for turn in range(4):
                agent_id = agent_ids[(k + turn) % len(agent_ids)]
                city = f"city-{k}-{turn}"
                chunks = list(runtime.chat_stream(agent_id, city))
                with lock:
                    replies.append("".join(chunks))
                    if "".join(chunks) != f"it is sunny in {city} there." or len(chunks) < 2:
                        failures.append(f"{agent_id}: {chunks}")

        run_drivers(driver, 4, timeout=90)
        assert failures == [] and len(replies) == 16
        assert server.requests == 32  # a tool call and an answer per chat
        # One pool on the runtime loop: connections are reused across chats and threads.
        assert server.connections <= len(agent_ids) + 1 < server.requests, server.connections
        # Each agent had several chats: later requests carry the conversation so far.
        assert server.longest_history >= 1 + 4 * 4
        runtime.run(clients[0].close)
