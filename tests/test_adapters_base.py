"""The adapters' shared base (agybridge.adapters.base), without any SDK: what a third SDK's adapter
stands on. Runs on every supported Python."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from agybridge import AgentBridgeState, Deny, PolicyError, PythonRuntime, Tool
from agybridge.adapters.base import EMPTY_SCHEMA, ConversationAgent, HostTool, confirm_call, fire_hook, host_tools
from agybridge.state import dispatch_tool


class EchoAgent(ConversationAgent[str]):
    """The smallest adapter: every host tool is called with the message as its one argument."""

    async def chat(self, message: str) -> str:
        async with self._turn:
            outputs = []
            for host in host_tools(self.agent_id):
                denial = await host.confirm({"text": message}) if host.needs_confirmation else None
                if denial is not None:
                    outputs.append(f"{host.name} denied: {denial.reason}")
                    continue
                outputs.append(str(await host.call({"text": message}, confirmed=host.needs_confirmation)))
            self._keep([*self.history, message])
        return "; ".join(outputs)


def test_host_tools_describe_the_state_and_call_through_dispatch_tool(runtime: PythonRuntime) -> None:
    asked: list[str] = []

    def shout(text: str) -> str:
        """Upper-case it."""
        return text.upper()

    def secret(text: str) -> str:
        return "never"

    def policy(agent_id: str, tool_name: str, context: Any) -> Any:
        asked.append(tool_name)
        return Deny("classified") if tool_name == "secret" else True

    made: list[EchoAgent] = []
    state = AgentBridgeState(tools=[shout, Tool.from_function(secret, parameters={})], policies=[policy])
    runtime.register_agent("echo", lambda: made.append(EchoAgent("echo")) or made[-1], state)

    async def describe() -> list[HostTool]:
        return host_tools("echo")

    hosts = {h.name: h for h in runtime.run(describe)}
    assert hosts["shout"].description == "Upper-case it."
    assert hosts["shout"].json_schema["required"] == ["text"]
    assert hosts["secret"].json_schema == EMPTY_SCHEMA  # a tool that describes no parameters
    assert all(h.needs_confirmation and not h.is_async for h in hosts.values())

    assert runtime.chat("echo", "hi") == "HI; secret denied: classified"
    assert runtime.chat("echo", "yo") == "YO; secret denied: classified"
    # Asked once per call: at the confirm step, not again inside dispatch_tool (confirmed=True).
    assert asked == ["shout", "secret", "shout", "secret"]
    assert made[0].history == ("hi", "yo")
    assert state.stats.denied == 2 and state.stats.tool_calls == 2


def test_dispatch_tool_confirmed_skips_the_policies_and_unconfirmed_asks_them(runtime: PythonRuntime) -> None:
    state = AgentBridgeState(tools=[lambda: "ran"], policies=[lambda a, t, c: False])
    runtime.register_agent("c", lambda: EchoAgent("c"), state)
    name = next(iter(state.tools))

    async def confirmed() -> Any:
        return await dispatch_tool("c", name, confirmed=True)

    async def unconfirmed() -> Any:
        return await dispatch_tool("c", name)

    assert runtime.run(confirmed) == "ran"
    with pytest.raises(PermissionError, match="denied"):
        runtime.run(unconfirmed)


def test_confirm_call_fails_closed_on_a_broken_policy(runtime: PythonRuntime) -> None:
    def broken(agent_id: str, tool_name: str, context: Any) -> Any:
        return "maybe"

    runtime.register_agent("b", lambda: EchoAgent("b"), AgentBridgeState(policies=[broken]))

    async def ask() -> Any:
        return await confirm_call("b", "anything", {"x": 1}, call_id="c1")

    with pytest.raises(PolicyError, match="must return True, None, False or Deny"):
        runtime.run(ask)


def test_fire_hook_logs_and_counts_a_failing_hook_and_never_raises(
    runtime: PythonRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, Any]] = []
    done = threading.Event()

    def good(agent_id: str, event: str, context: Any) -> None:
        seen.append((event, dict(context)))
        done.set()

    def bad(agent_id: str, event: str, context: Any) -> None:
        raise RuntimeError("hook bug")

    state = AgentBridgeState(hooks={"before_tool": [bad, good]})
    runtime.register_agent("h", lambda: EchoAgent("h"), state)

    async def fire() -> None:
        await fire_hook("h", "before_tool", {"tool": "sdk_tool", "args": {"a": 1}})

    with caplog.at_level(logging.WARNING, logger="agybridge"):
        runtime.run(fire)
    assert done.is_set() and seen == [("before_tool", {"tool": "sdk_tool", "args": {"a": 1}})]
    assert state.stats.hook_errors == 1 and state.stats.hooks_fired == 2
    assert any("'before_tool'" in r.getMessage() and "hook bug" in r.getMessage() for r in caplog.records)


def test_conversation_agent_keeps_completed_turns_and_forgets_on_close(runtime: PythonRuntime) -> None:
    class Failing(EchoAgent):
        async def chat(self, message: str) -> str:
            if message == "fail":
                raise ValueError("model down")
            return await super().chat(message)

    made: list[Failing] = []
    runtime.register_agent("f", lambda: made.append(Failing("f")) or made[-1])
    runtime.chat("f", "one")
    with pytest.raises(ValueError, match="model down"):
        runtime.chat("f", "fail")
    runtime.chat("f", "two")
    history: Sequence[str] = made[0].history
    assert history == ("one", "two")
    runtime.unregister_agent("f")
    assert made[0].history == ()
