"""AgentTable.call (the CallAgent handler) on a plain asyncio loop, with no runtime thread."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import ModuleType

import pytest
from conftest import make_config

from agybridge import BRIDGE_STATE, CallAgent, CommandCancelledError, RegisterAgent, UnknownAgentError
from agybridge._loop.agents import AgentTable

pytestmark = pytest.mark.timeout(20)


class Agent:
    def __init__(self) -> None:
        self.stalled = asyncio.Event()

    async def chat(self, message: str) -> str:
        return message

    async def double(self, x: int, *, plus: int = 0) -> int:
        await asyncio.sleep(0)
        return 2 * x + plus

    async def stall(self) -> None:
        self.stalled.set()
        await asyncio.sleep(30)

    def plain(self) -> int:
        return 1


@pytest.fixture(autouse=True)
def clean_bridge_state() -> Iterator[None]:
    yield
    BRIDGE_STATE.clear()


def test_call_awaits_the_named_method_with_its_arguments(core: ModuleType) -> None:
    async def body() -> None:
        table = AgentTable(make_config())
        agent = Agent()
        await table.register(RegisterAgent("a", lambda: agent, oneshot=core.Oneshot()))
        assert table.handlers()[CallAgent] == table.call
        cmd = CallAgent("a", "double", (3,), {"plus": 1}, agent_type=Agent, oneshot=core.Oneshot())
        assert await table.call(cmd) == 7
        with pytest.raises(UnknownAgentError):
            await table.call(CallAgent("b", "double", (1,)))
        with pytest.raises(AttributeError, match="no method 'nope'"):
            await table.call(CallAgent("a", "nope"))
        with pytest.raises(TypeError, match="plain is not a coroutine function"):
            await table.call(CallAgent("a", "plain"))
        with pytest.raises(TypeError, match="not the int"):
            await table.call(CallAgent("a", "double", (1,), agent_type=int))
        with pytest.raises(TypeError, match="non-empty str"):
            CallAgent("a", "")

    asyncio.run(body())


def test_removing_the_agent_fails_and_cancels_its_calls(core: ModuleType) -> None:
    async def body() -> None:
        table = AgentTable(make_config())
        agent = Agent()
        await table.register(RegisterAgent("a", lambda: agent, oneshot=core.Oneshot()))
        cmd = CallAgent("a", "stall", oneshot=core.Oneshot())
        task = asyncio.ensure_future(table.call(cmd))
        await agent.stalled.wait()
        await table.remove("a", "it was unregistered")
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(CommandCancelledError, match="unregistered"):
            cmd.oneshot.result(0)

    asyncio.run(body())
