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
from collections.abc import Awaitable, Mapping
from typing import Any

from agybridge._backends._asyncio import bounded
from agybridge._dispatcher import Handler
from agybridge.commands import CallAgent, Chat, PyCommand, RegisterAgent, UnregisterAgent
from agybridge.config import RuntimeConfig
from agybridge.errors import AgentAlreadyRegisteredError, ChatTimeoutError, CommandCancelledError, UnknownAgentError
from agybridge.state import BRIDGE_STATE, AgentBridgeState, fire_hook_quietly

__all__ = ["AgentTable"]

logger = logging.getLogger("agybridge")


class _AgentSlot:
    """An agent object living on the runtime loop, with the chat and call tasks running on it."""

    __slots__ = ("agent", "chats")

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.chats: dict[Chat | CallAgent, asyncio.Task[Any]] = {}


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
            CallAgent: self.call,
            RegisterAgent: self.register,
            UnregisterAgent: self.unregister,
        }

    def ids(self) -> list[str]:
        """A snapshot of the registered ids (safe from any thread)."""
        return list(self._slots)

    # -- chat -------------------------------------------------------------------------------

    async def chat(self, cmd: Chat) -> str:
        """Run one chat turn, bounded as a whole (hooks included) by the chat timeout."""
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
                self._turn(cmd, slot),
                limit,
                lambda: ChatTimeoutError(
                    f"agent {cmd.agent_id!r} did not answer {cmd.describe()} within the {limit} s chat timeout"
                ),
            )
        finally:
            slot.chats.pop(cmd, None)

    async def call(self, cmd: CallAgent) -> Any:
        """Await one method of the agent; it fails like a chat if the agent goes away meanwhile.

        Bounded by the caller's round-trip timeout, not the chat timeout: a method is not a
        chat turn (no hooks, no inter-agent spacing).
        """
        slot = self._slots.get(cmd.agent_id)
        if slot is None:
            raise UnknownAgentError(cmd.agent_id)
        agent = slot.agent
        if cmd.agent_type is not None and not isinstance(agent, cmd.agent_type):
            raise TypeError(
                f"agent {cmd.agent_id!r} is a {type(agent).__qualname__}, not the "
                f"{cmd.agent_type.__qualname__} this handle was made for"
            )
        method = getattr(agent, cmd.method, None)
        if not callable(method):
            raise AttributeError(f"agent {cmd.agent_id!r} ({type(agent).__qualname__}) has no method {cmd.method!r}")
        task = asyncio.current_task()
        assert task is not None
        slot.chats[cmd] = task
        try:
            awaitable = method(*cmd.args, **cmd.kwargs)
            if not isinstance(awaitable, Awaitable):
                raise TypeError(
                    f"agent {cmd.agent_id!r}: {type(agent).__qualname__}.{cmd.method}() returned "
                    f"{type(awaitable).__name__}, not an awaitable; handles call async methods"
                )
            return await awaitable
        finally:
            slot.chats.pop(cmd, None)

    async def _turn(self, cmd: Chat, slot: _AgentSlot) -> str:
        state = BRIDGE_STATE.find(cmd.agent_id)
        if state is not None and state.hooks.has("before_chat"):
            await fire_hook_quietly(state, cmd.agent_id, "before_chat", {"message": cmd.message})
        try:
            await self._pass_chat_gate()
            # Nothing may suspend between the gate and this call: the spacing is measured
            # at the moment the agent starts, where a model request would go out.
            reply = await slot.agent.chat(cmd.message)
            if not isinstance(reply, str):
                raise TypeError(
                    f"agent {cmd.agent_id!r} returned {type(reply).__name__} from chat(); "
                    "the agent protocol requires a str reply"
                )
        except Exception as exc:
            if state is not None and state.hooks.has("on_error"):
                await fire_hook_quietly(state, cmd.agent_id, "on_error", {"message": cmd.message, "error": repr(exc)})
            raise
        if state is not None and state.hooks.has("after_chat"):
            await fire_hook_quietly(state, cmd.agent_id, "after_chat", {"message": cmd.message, "reply": reply})
        return reply

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
        chat = getattr(agent, "chat", None)
        if not callable(chat):
            raise TypeError(
                f"the factory for agent {cmd.agent_id!r} returned {type(agent).__name__}, "
                "which has no 'async def chat(message)' method"
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
