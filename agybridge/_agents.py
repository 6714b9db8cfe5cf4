"""The agent table; runs on the runtime loop thread only.

Agents are objects with ``async def chat(message) -> str`` created on the runtime loop
(so everything they build belongs to it). This module keeps them in slots keyed by id,
runs one chat turn with its hooks inside the chat timeout, spaces chat starts by the
inter-agent delay, and closes agents when they are unregistered, replaced or the
runtime shuts down. Its methods are the handlers of the agent commands.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from agybridge._backends._asyncio import bounded
from agybridge._dispatcher import Handler
from agybridge._stream_producer import pump
from agybridge.commands import Chat, ChatStream, PyCommand, RegisterAgent, UnregisterAgent
from agybridge.config import RuntimeConfig
from agybridge.errors import AgentAlreadyRegisteredError, ChatTimeoutError, CommandCancelledError, UnknownAgentError
from agybridge.state import BRIDGE_STATE, AgentBridgeState, fire_hook_quietly

__all__ = ["AgentTable"]

logger = logging.getLogger("agybridge")


T = TypeVar("T")


def _checked_reply(agent_id: str, reply: object) -> str:
    if not isinstance(reply, str):
        raise TypeError(
            f"agent {agent_id!r} returned {type(reply).__name__} from chat(); the agent protocol requires a str reply"
        )
    return reply


async def _reply_chunks(agent_id: str, source: AsyncIterable[object], parts: list[str]) -> AsyncGenerator[str, None]:
    """The agent's chunks, each checked to be a str and recorded in *parts*.

    Closing this generator closes the agent's own stream at once (its ``finally`` blocks
    run now, on this loop), which ``async for`` alone would leave to garbage collection.
    """
    chunks = source.__aiter__()
    try:
        async for chunk in chunks:
            if not isinstance(chunk, str):
                raise TypeError(
                    f"agent {agent_id!r} yielded {type(chunk).__name__} from chat_stream(); "
                    "the agent protocol requires str chunks"
                )
            parts.append(chunk)
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def _one_chunk(agent_id: str, chat: Callable[[], Awaitable[object]]) -> AsyncGenerator[str, None]:
    # An agent with only chat() streams its whole reply as one chunk.
    yield _checked_reply(agent_id, await chat())


class _AgentSlot:
    """An agent object living on the runtime loop, with the chat tasks running on it."""

    __slots__ = ("agent", "chats")

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.chats: dict[Chat | ChatStream, asyncio.Task[Any]] = {}


class AgentTable:
    """The agents of one runtime and the chat turns running on them."""

    def __init__(self, config: RuntimeConfig) -> None:
        self._chat_timeout = config.chat_timeout
        self._inter_agent_delay = config.inter_agent_delay
        self._close_limit = max(config.shutdown_grace, 0.1)
        self._slots: dict[str, _AgentSlot] = {}
        self._last_chat_start = float("-inf")
        self._chat_gate: asyncio.Lock | None = None

    def handlers(self) -> Mapping[type[PyCommand], Handler]:
        """The command handlers this table provides, for the dispatcher."""
        return {
            Chat: self.chat,
            ChatStream: self.chat_stream,
            RegisterAgent: self.register,
            UnregisterAgent: self.unregister,
        }

    def ids(self) -> list[str]:
        """A snapshot of the registered ids (safe from any thread)."""
        return list(self._slots)

    # -- chat -------------------------------------------------------------------------------

    async def chat(self, cmd: Chat) -> str:
        """Run one chat turn, bounded as a whole (hooks included) by the chat timeout."""
        return await self._bounded_turn(cmd, self._turn)

    async def chat_stream(self, cmd: ChatStream) -> None:
        """Run one streamed chat turn into the command's channel; a chat in every other way."""
        await self._bounded_turn(cmd, self._streamed_turn)

    async def _bounded_turn(self, cmd: Chat | ChatStream, turn: Callable[[Any, _AgentSlot], Awaitable[T]]) -> T:
        slot = self._slots.get(cmd.agent_id)
        if slot is None:
            raise UnknownAgentError(cmd.agent_id)
        task = asyncio.current_task()
        assert task is not None
        slot.chats[cmd] = task
        try:
            limit = self._chat_timeout
            # A hanging hook must not stall a chat for longer than the agent itself may take.
            return await bounded(
                turn(cmd, slot),
                limit,
                lambda: ChatTimeoutError(
                    f"agent {cmd.agent_id!r} did not answer {cmd.describe()} within the {limit} s chat timeout"
                ),
            )
        finally:
            slot.chats.pop(cmd, None)

    async def _turn(self, cmd: Chat, slot: _AgentSlot) -> str:
        async def reply() -> str:
            agent = slot.agent
            if callable(getattr(agent, "chat", None)):
                return _checked_reply(cmd.agent_id, await agent.chat(cmd.message))
            # A streaming-only agent: a plain chat gets the joined chunks.
            parts: list[str] = []
            chunks = _reply_chunks(cmd.agent_id, agent.chat_stream(cmd.message), parts)
            try:
                async for _chunk in chunks:
                    pass
            finally:
                await chunks.aclose()
            return "".join(parts)

        return await self._hooked(cmd, reply)

    async def _streamed_turn(self, cmd: ChatStream, slot: _AgentSlot) -> str:
        async def reply() -> str:
            agent = slot.agent
            parts: list[str] = []
            if callable(getattr(agent, "chat_stream", None)):
                source: AsyncIterable[object] = agent.chat_stream(cmd.message)
            else:
                source = _one_chunk(cmd.agent_id, lambda: agent.chat(cmd.message))
            chunks = _reply_chunks(cmd.agent_id, source, parts)
            try:
                await pump(cmd.channel, chunks)
            finally:
                await chunks.aclose()
            return "".join(parts)

        return await self._hooked(cmd, reply)

    async def _hooked(self, cmd: Chat | ChatStream, reply: Callable[[], Awaitable[str]]) -> str:
        """Fire ``before_chat``, pass the gate, get the reply, then ``after_chat`` or ``on_error``."""
        state = BRIDGE_STATE.find(cmd.agent_id)
        if state is not None and state.hooks.has("before_chat"):
            await fire_hook_quietly(state, cmd.agent_id, "before_chat", {"message": cmd.message})
        try:
            await self._pass_chat_gate()
            # Nothing may suspend between the gate and the agent's call: the spacing is
            # measured at the moment the agent starts, where a model request would go out.
            text = await reply()
        except Exception as exc:
            if state is not None and state.hooks.has("on_error"):
                await fire_hook_quietly(state, cmd.agent_id, "on_error", {"message": cmd.message, "error": repr(exc)})
            raise
        if state is not None and state.hooks.has("after_chat"):
            await fire_hook_quietly(state, cmd.agent_id, "after_chat", {"message": cmd.message, "reply": text})
        return text

    async def _pass_chat_gate(self) -> None:
        """Let chats start one at a time, in arrival order, at least inter_agent_delay apart.

        The gap is measured from the moment the previous chat actually passed the gate, not
        from when a slot was reserved, so a chat that started late can never be followed too
        closely. The wait is part of the chat's time (its chat timeout bounds it); other
        command kinds never pass this gate.
        """
        delay = self._inter_agent_delay
        if delay <= 0:
            return
        loop = asyncio.get_running_loop()
        if self._chat_gate is None:
            self._chat_gate = asyncio.Lock()
        async with self._chat_gate:
            while (wait := self._last_chat_start + delay - loop.time()) > 0:
                await asyncio.sleep(wait)
            self._last_chat_start = loop.time()

    # -- register / unregister / close ------------------------------------------------------

    async def register(self, cmd: RegisterAgent) -> None:
        """Create the agent with its factory (on this loop) and install its bridge state."""
        if cmd.agent_id in self._slots and not cmd.replace:
            raise AgentAlreadyRegisteredError(cmd.agent_id)
        agent = cmd.factory()
        if isinstance(agent, Awaitable):
            agent = await agent
        if not (callable(getattr(agent, "chat", None)) or callable(getattr(agent, "chat_stream", None))):
            raise TypeError(
                f"the factory for agent {cmd.agent_id!r} returned {type(agent).__name__}, "
                "which has neither an 'async def chat(message)' nor an 'async def chat_stream(message)' method"
            )
        state = cmd.state if cmd.state is not None else AgentBridgeState()
        BRIDGE_STATE.insert(cmd.agent_id, state, replace=cmd.replace)
        if cmd.agent_id in self._slots:
            await self.remove(cmd.agent_id, "it was replaced", keep_state=True)
        self._slots[cmd.agent_id] = _AgentSlot(agent)

    async def unregister(self, cmd: UnregisterAgent) -> None:
        """Remove the agent: its chats fail, its tool calls are cancelled, it is closed."""
        if cmd.agent_id not in self._slots:
            raise UnknownAgentError(cmd.agent_id)
        await self.remove(cmd.agent_id, "it was unregistered")

    async def remove(self, agent_id: str, why: str, *, keep_state: bool = False) -> None:
        """Drop *agent_id* (and, unless *keep_state*, its bridge state), then ``aclose()`` it."""
        slot = self._slots.pop(agent_id, None)
        if not keep_state:
            state = BRIDGE_STATE.find(agent_id)
            if state is not None:
                try:
                    BRIDGE_STATE.remove(agent_id)
                except UnknownAgentError:
                    pass
                state.cancel_inflight()
        if slot is None:
            return
        for chat, task in list(slot.chats.items()):
            chat.oneshot.set_exception(
                CommandCancelledError(f"agent {agent_id!r} went away while {chat.describe()} was in flight: {why}")
            )
            task.cancel()
        aclose = getattr(slot.agent, "aclose", None)
        if callable(aclose):
            try:
                limit = self._close_limit
                await bounded(aclose(), limit, lambda: TimeoutError(f"aclose() took over {limit} s"))
            except Exception:
                logger.exception("agent %r: aclose() failed", agent_id)

    async def close_all(self, why: str) -> None:
        """Remove every agent (shutdown)."""
        for agent_id in list(self._slots):
            await self.remove(agent_id, why)
