"""pydantic-ai agents streaming through the bridge: offline with FunctionModel, and over real HTTP.

Skipped only when the ``pydantic-ai`` extra is not installed (AGYBRIDGE_REQUIRE_PYDANTIC_AI=1
turns that into a failure, as in test_pydantic_ai.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
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


class FakeOpenAIServer:
    """``/v1/chat/completions`` with ``stream: true`` on 127.0.0.1, in its own thread and loop.

    A user message gets a streamed ``tool_calls`` delta for ``weather(city=<message>)``; a
    tool result gets the answer streamed in several ``content`` deltas. HTTP/1.1 keep-alive,
    so ``connections`` counts the TCP connections the client's pool opened.
    """

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.longest_history = 0
        self.port = 0
        self._ready = threading.Event()
        self._stop: Any = None
        self._loop: Any = None
        self._thread = threading.Thread(target=self._main, name="fake-openai-server", daemon=True)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        assert self._ready.wait(10), "the fake server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _main(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            async with server:
                await asyncio.wait_for(self._stop.wait(), 120)  # a bounded lifetime

        asyncio.run(serve())

    @staticmethod
    def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": "chatcmpl-local",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "local-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    def _events(self, request: dict[str, Any]) -> list[bytes]:
        last = request["messages"][-1]
        if last["role"] == "tool":
            words = ["it ", "is ", f"{last['content']} ", "there."]
            events = [self._chunk({"role": "assistant", "content": ""})]
            events += [self._chunk({"content": word}) for word in words]
            events.append(self._chunk({}, "stop"))
        else:
            args = json.dumps({"city": last["content"]})
            call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}
            events = [self._chunk({"role": "assistant", "tool_calls": [call]})]
            for part in (args[:5], args[5:]):
                events.append(self._chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
            events.append(self._chunk({}, "tool_calls"))
        return [*events, b"data: [DONE]\n\n"]

    async def _connection(self, reader: Any, writer: Any) -> None:
        import h11

        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.SEND_BODY:
                        return
                    continue
                if isinstance(event, h11.Request):
                    body = b""
                    while not isinstance(event, h11.EndOfMessage):
                        event = conn.next_event()
                        if event is h11.NEED_DATA:
                            conn.receive_data(await reader.read(65536))
                        elif isinstance(event, h11.Data):
                            body += event.data
                    self.requests += 1
                    request = json.loads(body)
                    self.longest_history = max(self.longest_history, len(request["messages"]))
                    assert request.get("stream") is True
                    headers = [("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]
                    writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
                    for sse in self._events(request):
                        writer.write(conn.send(h11.Data(data=sse)))
                        await writer.drain()
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (ConnectionError, h11.RemoteProtocolError):
            return
        finally:
            writer.close()


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
