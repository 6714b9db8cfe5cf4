"""The agent table; runs on the runtime loop thread only.

Agents are objects with ``async def chat(message) -> str`` created on the runtime loop
(so everything they build belongs to it). This module keeps them in slots keyed by id,
runs one chat turn with its hooks inside the chat timeout, spaces chat starts by the
inter-agent delay, and closes agents when they are unregistered, replaced or the
runtime shuts down. Its methods are the handlers of the agent commands.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from agybridge._agent_state import AgentBridgeState, is_async_callable
from agybridge._backends._asyncio import bounded
from agybridge._loop.callbacks import fire_hook_quietly
from agybridge._loop.containment import log_failure, safe_repr
from agybridge._loop.dispatcher import Handler
from agybridge._loop.streams import pump
from agybridge._registry import BRIDGE_STATE, claim_state, release_state
from agybridge._select import AgentRegistry
from agybridge.commands import CallAgent, Chat, ChatStream, PyCommand, RegisterAgent, UnregisterAgent
from agybridge.config import RuntimeConfig
from agybridge.errors import AgentAlreadyRegisteredError, ChatTimeoutError, CommandCancelledError, UnknownAgentError

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


def _check_agent(agent_id: str, agent: object) -> None:
    """Refuse an object that is no agent, naming the agent and what is missing.

    An agent defines ``async def chat(message) -> str``, ``async def chat_stream(message)``
    (an async generator of str chunks), or both.
    """
    chat = getattr(agent, "chat", None)
    stream = getattr(agent, "chat_stream", None)
    if callable(stream) and inspect.iscoroutinefunction(stream) and not inspect.isasyncgenfunction(stream):
        # 'async def chat_stream(...): return ...' makes a coroutine, not an async iterator:
        # every streamed chat would fail, so it is refused here, at registration.
        raise TypeError(
            f"the factory for agent {agent_id!r} returned {type(agent).__name__}, whose 'chat_stream' is a "
            "coroutine function, not an async generator function; chat_stream must 'yield' str chunks"
        )
    if callable(chat) and is_async_callable(chat):
        return
    if chat is None and callable(stream) and (inspect.isasyncgenfunction(stream) or is_async_callable(stream)):
        return
    if callable(chat):
        what = "a 'chat' that is not a coroutine function"
    elif callable(stream):
        what = "a 'chat_stream' that is not an async generator function"
    else:
        what = "no 'chat' method"
    raise TypeError(
        f"the factory for agent {agent_id!r} returned {type(agent).__name__}, which has {what}; agents must "
        "define 'async def chat(message) -> str' or 'async def chat_stream(message)' yielding str chunks"
    )


class _AgentSlot:
    """An agent object living on the runtime loop, with the chat and call tasks running on it."""

    __slots__ = ("agent", "chats")

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.chats: dict[Chat | ChatStream | CallAgent, asyncio.Task[Any]] = {}


class AgentTable:
    """The agents of one runtime and the chat turns running on them."""

    def __init__(self, config: RuntimeConfig, registry: AgentRegistry | None = None) -> None:
        #: The bridge states of these agents; only this table writes to it. A runtime passes
        #: its own; a table with no runtime (tests on a plain loop) uses the default one.
        self.registry = registry if registry is not None else BRIDGE_STATE.default
        self._chat_timeout = config.chat_timeout
        self._inter_agent_delay = config.inter_agent_delay
        self._close_limit = max(config.shutdown_grace, 0.1)
        self._slots: dict[str, _AgentSlot] = {}
        self._closing: set[asyncio.Task[None]] = set()  # agents being closed, kept from the GC
        self._last_chat_start = float("-inf")
        self._chat_gate: asyncio.Lock | None = None

    def handlers(self) -> Mapping[type[PyCommand], Handler]:
        """The command handlers this table provides, for the dispatcher."""
        return {
            Chat: self.chat,
            ChatStream: self.chat_stream,
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
        return await self._bounded_turn(cmd, self._turn)

    async def chat_stream(self, cmd: ChatStream) -> str:
        """Run one streamed chat turn into the command's channel; a chat in every other way."""
        return await self._bounded_turn(cmd, self._streamed_turn)

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
        if not is_async_callable(method):
            # Refused before it is called: a sync method would run on the runtime loop.
            raise TypeError(
                f"agent {cmd.agent_id!r}: {type(agent).__qualname__}.{cmd.method} is not a coroutine function "
                "(async def); handles call async methods only"
            )
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
        state = self.registry.find(cmd.agent_id)
        if state is not None and state.hooks.has("before_chat"):
            await fire_hook_quietly(state, cmd.agent_id, "before_chat", {"message": cmd.message})
        try:
            await self._pass_chat_gate()
            # Nothing may suspend between the gate and the agent's call: the spacing is
            # measured at the moment the agent starts, where a model request would go out.
            text = await reply()
        except Exception as exc:
            if state is not None and state.hooks.has("on_error"):
                await fire_hook_quietly(
                    state, cmd.agent_id, "on_error", {"message": cmd.message, "error": safe_repr(exc)}
                )
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
        _check_agent(cmd.agent_id, agent)
        state = cmd.state if cmd.state is not None else AgentBridgeState()
        claim_state(state, self.registry, cmd.agent_id)
        previous = self.registry.find(cmd.agent_id)
        try:
            self.registry.insert(cmd.agent_id, state, replace=cmd.replace)
        except BaseException:
            if previous is not state:
                release_state(state)
            raise
        if previous is not None and previous is not state:
            release_state(previous)
        # The new agent takes the slot before the old one is closed: a caller that gives up
        # (timeout, cancel) during that close leaves the table and the registry agreeing.
        old = self._slots.get(cmd.agent_id)
        self._slots[cmd.agent_id] = _AgentSlot(agent)
        if old is not None:
            await self._close_slot(cmd.agent_id, old, "it was replaced")

    async def unregister(self, cmd: UnregisterAgent) -> None:
        """Remove the agent: its chats fail, its tool calls are cancelled, it is closed."""
        if cmd.agent_id not in self._slots:
            raise UnknownAgentError(cmd.agent_id)
        await self.remove(cmd.agent_id, "it was unregistered")

    def _drop_state(self, agent_id: str) -> None:
        """Take *agent_id*'s bridge state out of the registry, free it for another agent and
        cancel the callbacks it still has in flight."""
        state = self.registry.find(agent_id)
        if state is not None:
            try:
                self.registry.remove(agent_id)
            except UnknownAgentError:
                pass
            release_state(state)
            state.cancel_inflight()

    async def remove(self, agent_id: str, why: str, *, keep_state: bool = False) -> None:
        """Drop *agent_id* (and, unless *keep_state*, its bridge state), then ``aclose()`` it."""
        slot = self._slots.pop(agent_id, None)
        if not keep_state:
            self._drop_state(agent_id)
        if slot is not None:
            await self._close_slot(agent_id, slot, why)

    async def _close_slot(self, agent_id: str, slot: _AgentSlot, why: str) -> None:
        """Fail the chats of a slot already out of the table, then ``aclose()`` its agent."""
        for chat, task in list(slot.chats.items()):
            chat.oneshot.set_exception(
                CommandCancelledError(f"agent {agent_id!r} went away while {chat.describe()} was in flight: {why}")
            )
            task.cancel()
        aclose = getattr(slot.agent, "aclose", None)
        if callable(aclose):
            # The agent is out of the table: its close runs in a task of its own, so the
            # command that removed it may be cancelled meanwhile (an agent unregistering
            # itself from its own chat cancels exactly that command) without cutting it short.
            # The remover waits at most the close limit, even for an aclose() that swallows
            # its cancellation; such a close is cancelled and left behind.
            closing = asyncio.get_running_loop().create_task(self._aclose(agent_id, aclose))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            done, _ = await asyncio.wait((closing,), timeout=self._close_limit)
            if not done:
                closing.cancel()
                logger.error("agent %r: aclose() took over %s s; it was cancelled", agent_id, self._close_limit)

    async def _aclose(self, agent_id: str, aclose: Callable[[], Awaitable[Any]]) -> None:
        try:
            await aclose()
        except asyncio.CancelledError:
            raise
        except BaseException:  # noqa: BLE001 - even KeyboardInterrupt: the other agents still close
            log_failure(logger, "agent %r: aclose() failed", agent_id)

    async def close_all(self, why: str) -> None:
        """Remove every agent (shutdown); one agent's failure never stops the others closing."""
        cancelled: asyncio.CancelledError | None = None
        for agent_id in list(self._slots):
            try:
                await self.remove(agent_id, why)
            except asyncio.CancelledError as exc:
                cancelled = exc  # finish closing the rest, then honour the cancellation
        if cancelled is not None:
            raise cancelled

    def forget_all(self) -> list[tuple[str, _AgentSlot]]:
        """Drop every agent and its bridge state at once, without awaiting (the loop died).

        Their tool calls are cancelled; the slots are returned so the caller can still try
        to fail their chats and ``aclose()`` them (:meth:`close_forgotten`).
        """
        forgotten = list(self._slots.items())
        self._slots.clear()
        for agent_id, _slot in forgotten:
            self._drop_state(agent_id)
        return forgotten

    async def close_forgotten(self, forgotten: list[tuple[str, _AgentSlot]], why: str) -> None:
        """Best-effort ``aclose()`` of agents :meth:`forget_all` dropped."""
        for agent_id, slot in forgotten:
            try:
                await self._close_slot(agent_id, slot, why)
            except BaseException:  # noqa: BLE001 - best effort on a dead runtime
                log_failure(logger, "agent %r: closing after the runtime died failed", agent_id)
