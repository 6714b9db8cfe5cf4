"""pydantic-ai agents on the agybridge runtime (``pip install 'agybridge[pydantic-ai]'``).

:class:`PydanticAIAgent` wraps a pydantic-ai ``Agent`` so that it satisfies the agent
protocol (``async def chat(message) -> str``) and runs on the runtime loop. Every host tool
in the agent's :class:`~agybridge.AgentBridgeState` is offered to the model as a
pydantic-ai tool whose schema is the bridge tool's parameter description and whose body is
:func:`~agybridge.dispatch_tool`, so policies and hooks apply exactly as for any agent. A
policy denial reaches the model as that tool call's error (``ModelRetry``), so the model
can carry on without it.

Successive chats with the same agent continue one conversation: the adapter keeps the
message history and passes it to the next run. Chats with the same agent are taken one
at a time (a conversation has one order); different agents run concurrently.

``chat_stream`` runs the same agent run node by node (``Agent.iter``) and streams each
model response's text deltas as they arrive, so tool calls, policies and hooks behave as
in ``chat``; the history is kept once the run completes (a turn the consumer left early
is not recorded).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic_ai import Agent, ModelRetry, Tool
from pydantic_ai.messages import ModelMessage, PartDeltaEvent, PartStartEvent, TextPart, TextPartDelta
from pydantic_ai.toolsets import FunctionToolset

from agybridge import PolicyDeniedError
from agybridge.adapters.base import ConversationAgent, HostTool, host_tools
from agybridge.testing import planning_model

__all__ = ["PydanticAIAgent", "bridge_tools", "demo_agent_factory", "pydantic_ai_agent"]


def _bridge_tool(host: HostTool) -> Tool[Any]:
    async def call_host(**kwargs: Any) -> Any:
        # The policies are asked inside dispatch_tool: pydantic-ai runs the tool directly.
        try:
            return await host.call(kwargs)
        except PolicyDeniedError as denial:
            raise ModelRetry(str(denial)) from denial

    sdk_tool: Tool[Any] = Tool.from_schema(
        call_host, name=host.name, description=host.description or None, json_schema=dict(host.json_schema)
    )
    return sdk_tool


def bridge_tools(agent_id: str) -> list[Tool[Any]]:
    """The agent's host tools (from ``BRIDGE_STATE``) as pydantic-ai tools."""
    return [_bridge_tool(host) for host in host_tools(agent_id)]


def _text_of(event: object) -> str:
    """The text an event of a streamed model response adds (empty for every other event)."""
    if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
        return event.part.content
    if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
        return event.delta.content_delta
    return ""


class PydanticAIAgent(ConversationAgent[ModelMessage]):
    """A pydantic-ai ``Agent`` that satisfies agybridge's agent protocol.

    Create it on the runtime loop (through :func:`pydantic_ai_agent`, a factory for
    ``register_agent``), like every agent object. Its ``history`` is the conversation so far
    (every message of every completed chat).
    """

    def __init__(self, agent_id: str, agent: Agent[Any, Any]) -> None:
        super().__init__(agent_id)
        self.agent = agent

    async def chat(self, message: str) -> str:
        """One chat turn: run the pydantic-ai agent on *message*, continuing the conversation.

        Awaited on the runtime loop by the bridge (through :meth:`~agybridge.PythonRuntime.chat` and
        friends). Concurrent chats with one agent take turns, so each continues the history the
        previous one left. The agent's host tools are read from its bridge state at every chat, so
        tools added later are offered too; a policy denial reaches the model as that tool call's
        error.

        :param message: the user prompt.
        :returns: the run's output (``str()`` of it if the agent's output type is not ``str``).
        :raises Exception: whatever pydantic-ai raises (a model error, a tool error it gave up
            retrying, ``UsageLimitExceeded``, ...), unchanged.
        """
        async with self._turn:
            # Built per chat, so tools added to the bridge state later are offered too.
            toolset = FunctionToolset(bridge_tools(self.agent_id))
            result = await self.agent.run(message, message_history=self._history or None, toolsets=[toolset])
            self._keep(result.all_messages())
        output = result.output
        return output if isinstance(output, str) else str(output)

    async def chat_stream(self, message: str) -> AsyncIterator[str]:
        """The reply's text as the model streams it; tool calls run between its responses."""
        async with self._turn:
            toolset = FunctionToolset(bridge_tools(self.agent_id))
            async with self.agent.iter(message, message_history=self._history or None, toolsets=[toolset]) as run:
                async for node in run:
                    if not Agent.is_model_request_node(node):
                        continue  # tool calls run as the run advances past this node
                    async with node.stream(run.ctx) as events:
                        async for event in events:
                            text = _text_of(event)
                            if text:
                                yield text
            self._keep(run.all_messages())


def pydantic_ai_agent(agent_id: str, make_agent: Callable[[], Agent[Any, Any]]) -> Callable[[], PydanticAIAgent]:
    """A factory for ``register_agent``: the pydantic-ai Agent is built on the runtime loop."""
    return lambda: PydanticAIAgent(agent_id, make_agent())


def demo_agent_factory(agent_id: str, *, latency: float = 0.0) -> Callable[[], PydanticAIAgent]:
    """The demo's pydantic-ai agent: a real ``Agent`` driven by :func:`agybridge.testing.planning_model`."""
    return pydantic_ai_agent(agent_id, lambda: Agent(planning_model(latency), name=agent_id))
