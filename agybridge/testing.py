"""Offline agents and models for your own tests (as ``trio.testing`` is for trio programs).

Nothing here needs a model provider or a network. :class:`ScriptedAgent` behaves like an SDK
agent and exists so the bridge can be demonstrated and tested end to end: on each chat it
"thinks" for a configurable simulated model latency, plans tool calls from the message,
calls them through :func:`~agybridge.dispatch_tool` with a serialized JSON context exactly
as an SDK would (so policies and hooks apply), honours policy denials by reporting them in
its answer, thinks again, and answers.

The plan is read from the message: every ``name(key=value, ...)`` in it is a call of tool
``name``; values that look like integers or floats are passed as numbers.

:func:`planning_model` is the same planner as a pydantic-ai ``FunctionModel`` (it needs
``pip install 'agybridge[pydantic-ai]'``), for testing pydantic-ai agents offline.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from agybridge import dispatch_tool
from agybridge.errors import PolicyDeniedError

if TYPE_CHECKING:
    from pydantic_ai.models.function import FunctionModel

__all__ = ["ScriptedAgent", "ToolCall", "plan_from_message", "planning_model"]

_CALL = re.compile(r"([A-Za-z_]\w*)\(([^()]*)\)")

ToolCall = tuple[str, dict[str, Any]]


def _value(text: str) -> Any:
    text = text.strip()
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def plan_from_message(message: str) -> list[ToolCall]:
    """The tool calls written in *message* as ``name(key=value, ...)``, in order."""
    calls: list[ToolCall] = []
    for name, raw_args in _CALL.findall(message):
        args: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in raw_args.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"tool call {name}({raw_args}) has an argument without '=': {part!r}")
            args[key.strip()] = _value(value)
        calls.append((name, args))
    return calls


class ScriptedAgent:
    """An offline stand-in for an SDK agent (``async def chat(message) -> str``).

    Register it like any agent (``runtime.register_agent("a1", lambda: ScriptedAgent("a1"),
    state)``); it lives on the runtime loop and only that loop calls it. Each chat plans tool
    calls from the message (``weather(city=Paris)``, see :func:`plan_from_message`), calls them
    through :func:`~agybridge.dispatch_tool` with a JSON context exactly as an SDK would (so
    policies and hooks apply), reports denials in its answer and keeps the conversation.

    :param agent_id: the id it is registered under (its tool calls name it).
    :param latency: the simulated model time, in seconds, before planning and again before
        answering (0 still suspends once each time, as a real model call would).
    :param planner: turns a message into ``(tool_name, kwargs)`` pairs (default:
        :func:`plan_from_message`).

    Attributes: ``history``, the conversation as ``(role, text)`` pairs (``"user"``, ``"tool"``,
    ``"assistant"``), so tests can check that successive chats continue it; ``turn``, the number
    of chats so far; ``closed``, True after :meth:`aclose`.
    """

    def __init__(
        self,
        agent_id: str,
        *,
        latency: float = 0.0,
        planner: Callable[[str], list[ToolCall]] = plan_from_message,
    ) -> None:
        self.agent_id = agent_id
        self.latency = latency
        self.planner = planner
        self.history: list[tuple[str, str]] = []
        self.turn = 0
        self.closed = False

    async def _think(self) -> None:
        # A real model call suspends the agent; so does the simulation, even at 0 latency.
        await asyncio.sleep(self.latency)

    async def chat(self, message: str) -> str:
        """One chat turn: think, call the planned tools in order, think, answer.

        Awaited on the runtime loop by the bridge (through :meth:`~agybridge.PythonRuntime.chat` and
        friends), never directly from another thread.

        :param message: the user's message, also the plan's source.
        :returns: ``"turn N: "`` followed by each tool's outcome (``name -> result`` or ``name denied
            (reason)``), or ``no tools needed``.
        :raises RuntimeError: the agent was closed.
        :raises Exception: a tool's own exception, or the bridge's (:class:`~agybridge.UnknownToolError`,
            :class:`~agybridge.ContextError`, :class:`~agybridge.PolicyError`, ...); policy denials are
            reported in the reply instead.
        """
        return "".join([chunk async for chunk in self.chat_stream(message)])

    async def chat_stream(self, message: str) -> AsyncIterator[str]:
        """The reply of ``chat()``, as it is made: the turn after the first think, then each tool's outcome."""
        if self.closed:
            raise RuntimeError(f"agent {self.agent_id!r} is closed")
        self.turn += 1
        self.history.append(("user", message))
        await self._think()
        yield f"turn {self.turn}: "
        outcomes: list[str] = []
        for index, (name, args) in enumerate(self.planner(message)):
            context = json.dumps({"args": args, "turn": self.turn, "call_id": f"{self.agent_id}:{self.turn}:{index}"})
            try:
                result = await dispatch_tool(self.agent_id, name, context)
            except PolicyDeniedError as denial:
                outcome = f"{name} denied ({denial.reason})"
                self.history.append(("tool", f"{name} denied"))
            else:
                outcome = f"{name} -> {result}"
                self.history.append(("tool", outcome))
            yield ("; " if outcomes else "") + outcome
            outcomes.append(outcome)
        await self._think()
        if not outcomes:
            yield "no tools needed"
        reply = f"turn {self.turn}: " + ("; ".join(outcomes) if outcomes else "no tools needed")
        self.history.append(("assistant", reply))

    async def aclose(self) -> None:
        """Mark the agent closed; later chats raise ``RuntimeError``. The runtime awaits it on its loop
        when the agent is unregistered or replaced, or the runtime stops.
        """
        self.closed = True


def _word_chunks(text: str) -> list[str]:
    """*text* in word-sized chunks that join back to it exactly."""
    chunks = re.findall(r"\S+\s*", text)
    return chunks or [text]


def planning_model(latency: float = 0.0) -> FunctionModel:
    """A pydantic-ai ``FunctionModel`` that plans like :class:`ScriptedAgent`.

    It calls the tools written in the prompt (``name(k=v)``), then answers from their
    results, reporting denials the way :class:`ScriptedAgent` does, after *latency* seconds
    of simulated model time per request. It streams too (``Agent.iter``/``run_stream``):
    tool calls as deltas, the answer word by word, the first word after *latency* and the
    rest spread over another *latency*, as a model streaming its tokens would.
    """
    from pydantic_ai.messages import (
        ModelMessage,
        ModelRequest,
        ModelResponse,
        RetryPromptPart,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
        UserPromptPart,
    )
    from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

    def user_prompts(messages: list[ModelMessage]) -> list[str]:
        prompts: list[str] = []
        for message in messages:
            if isinstance(message, ModelRequest):
                prompts.extend(str(p.content) for p in message.parts if isinstance(p, UserPromptPart))
        return prompts

    def failed(part: Any) -> bool:
        return isinstance(part, RetryPromptPart) or getattr(part, "outcome", None) in ("retried", "failed", "denied")

    def plan(messages: list[ModelMessage]) -> str | list[ToolCall]:
        """The answer's text, or the tool calls to make first."""
        last = messages[-1]
        results = [p for p in getattr(last, "parts", ()) if isinstance(p, (ToolReturnPart, RetryPromptPart))]
        turn = len(user_prompts(messages))
        if results:
            summary = [
                f"{part.tool_name} denied ({part.content})" if failed(part) else f"{part.tool_name} -> {part.content}"
                for part in results
            ]
            return f"turn {turn}: " + "; ".join(summary)
        calls = plan_from_message(user_prompts(messages)[-1])
        return calls or f"turn {turn}: no tools needed"

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await asyncio.sleep(latency)
        planned = plan(messages)
        if isinstance(planned, str):
            return ModelResponse(parts=[TextPart(planned)])
        return ModelResponse(parts=[ToolCallPart(name, args) for name, args in planned])

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        await asyncio.sleep(latency)
        planned = plan(messages)
        if isinstance(planned, str):
            chunks = _word_chunks(planned)
            for index, chunk in enumerate(chunks):
                if index:
                    await asyncio.sleep(latency / len(chunks))
                yield chunk
            return
        for index, (name, args) in enumerate(planned):
            yield {index: DeltaToolCall(name=name, json_args=json.dumps(args), tool_call_id=f"call-{index}")}

    return FunctionModel(respond, stream_function=stream)
