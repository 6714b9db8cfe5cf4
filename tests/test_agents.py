"""The agent table on a plain asyncio loop, with no runtime thread: slots, chat turns, spacing, closing."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from conftest import make_config

from agybridge import (
    BRIDGE_STATE,
    AgentAlreadyRegisteredError,
    AgentBridgeState,
    Chat,
    ChatTimeoutError,
    CommandCancelledError,
    RegisterAgent,
    UnknownAgentError,
    UnregisterAgent,
)
from agybridge._loop.agents import AgentTable

pytestmark = pytest.mark.timeout(20)


class Agent:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.closed = 0
        self.started: list[float] = []

    async def chat(self, message: str) -> str:
        self.started.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.delay)
        return f"re:{message}"

    async def aclose(self) -> None:
        self.closed += 1


@pytest.fixture(autouse=True)
def clean_bridge_state() -> Iterator[None]:
    yield
    BRIDGE_STATE.clear()


def on_loop(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


def register(
    core: ModuleType, agent_id: str, agent: Any, state: AgentBridgeState | None = None, **kw: Any
) -> RegisterAgent:
    return RegisterAgent(agent_id, lambda: agent, state, oneshot=core.Oneshot(), **kw)


def chat(core: ModuleType, agent_id: str, message: str) -> Chat:
    return Chat(agent_id, message, oneshot=core.Oneshot())


def test_register_chat_and_refuse_duplicates_and_unknown_ids(core: ModuleType) -> None:
    async def body() -> None:
        table = AgentTable(make_config())
        agent = Agent()
        await table.register(register(core, "a", agent))
        assert table.ids() == ["a"]
        assert await asyncio.create_task(table.chat(chat(core, "a", "hi"))) == "re:hi"
        with pytest.raises(AgentAlreadyRegisteredError, match="'a'"):
            await table.register(register(core, "a", Agent()))
        with pytest.raises(UnknownAgentError, match="'nobody'"):
            await asyncio.create_task(table.chat(chat(core, "nobody", "hi")))

    on_loop(body)


def test_replace_closes_the_old_agent_and_keeps_the_bridge_state(core: ModuleType) -> None:
    async def body() -> None:
        table = AgentTable(make_config())
        old, new = Agent(), Agent()
        state = AgentBridgeState()
        await table.register(register(core, "a", old, state))
        await table.register(register(core, "a", new, state, replace=True))
        assert old.closed == 1 and new.closed == 0
        assert BRIDGE_STATE.get("a") is state
        assert await asyncio.create_task(table.chat(chat(core, "a", "x"))) == "re:x"

    on_loop(body)


def test_a_factory_that_makes_no_agent_is_refused(core: ModuleType) -> None:
    async def body() -> None:
        table = AgentTable(make_config())
        with pytest.raises(TypeError, match=r"'bad'.*chat"):
            await table.register(register(core, "bad", object()))
        assert table.ids() == []

    on_loop(body)


def test_chat_timeout_bounds_the_turn(core: ModuleType) -> None:
    async def body() -> None:
        table = AgentTable(make_config(chat_timeout=0.05))
        await table.register(register(core, "slow", Agent(delay=30)))
        with pytest.raises(ChatTimeoutError, match=r"'slow'.*0\.05 s chat timeout"):
            await asyncio.create_task(table.chat(chat(core, "slow", "hi")))

    on_loop(body)


def test_a_reply_that_is_not_a_str_is_an_error_naming_the_agent(core: ModuleType) -> None:
    class Numbers:
        async def chat(self, message: str) -> int:
            return 42

    async def body() -> None:
        table = AgentTable(make_config())
        await table.register(register(core, "n", Numbers()))
        with pytest.raises(TypeError, match="'n' returned int"):
            await asyncio.create_task(table.chat(chat(core, "n", "hi")))

    on_loop(body)


def test_chat_starts_are_spaced_by_the_inter_agent_delay(core: ModuleType) -> None:
    delay = 0.03

    async def body() -> None:
        table = AgentTable(make_config(inter_agent_delay=delay))
        agents = [Agent(), Agent(), Agent()]
        for i, agent in enumerate(agents):
            await table.register(register(core, f"a{i}", agent))
        await asyncio.gather(*(table.chat(chat(core, f"a{i % 3}", str(i))) for i in range(6)))
        starts = sorted(t for agent in agents for t in agent.started)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert len(starts) == 6 and min(gaps) >= delay - 1e-3, gaps

    on_loop(body)


def test_unregister_fails_chats_in_flight_closes_the_agent_and_drops_its_state(core: ModuleType) -> None:
    async def body() -> None:
        table = AgentTable(make_config())
        agent = Agent(delay=30)
        await table.register(register(core, "a", agent))
        cmd = chat(core, "a", "hi")
        task = asyncio.create_task(table.chat(cmd))
        while not agent.started:
            await asyncio.sleep(0)
        await table.unregister(UnregisterAgent("a", oneshot=core.Oneshot()))
        error = cmd.oneshot.exception(0)
        assert isinstance(error, CommandCancelledError) and "unregistered" in str(error)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert agent.closed == 1 and table.ids() == [] and BRIDGE_STATE.find("a") is None
        with pytest.raises(UnknownAgentError):
            await table.unregister(UnregisterAgent("a", oneshot=core.Oneshot()))

    on_loop(body)


def test_hooks_fire_around_a_chat_in_worker_threads(core: ModuleType) -> None:
    seen: list[tuple[str, str, bool]] = []
    loop_thread: list[int] = []

    def hook(agent_id: str, event: str, context: Any) -> None:
        seen.append((agent_id, event, threading.get_ident() != loop_thread[0]))

    async def body() -> None:
        loop_thread.append(threading.get_ident())
        table = AgentTable(make_config())
        state = AgentBridgeState(hooks={"before_chat": [hook], "after_chat": [hook]})
        await table.register(register(core, "h", Agent(), state))
        assert await asyncio.create_task(table.chat(chat(core, "h", "x"))) == "re:x"

    on_loop(body)
    assert seen == [("h", "before_chat", True), ("h", "after_chat", True)]


def test_close_all_closes_every_agent(core: ModuleType) -> None:
    async def body() -> None:
        table = AgentTable(make_config())
        agents = [Agent(), Agent()]
        for i, agent in enumerate(agents):
            await table.register(register(core, f"a{i}", agent))
        await table.close_all("the runtime shut down")
        assert [a.closed for a in agents] == [1, 1] and table.ids() == []
        assert BRIDGE_STATE.ids() == []

    on_loop(body)
