"""What every agent SDK adapter shares, so that wiring a new SDK is one small file.

An adapter turns an agent's :class:`~agybridge.AgentBridgeState` into what its SDK understands:

- :func:`host_tools` lists the agent's host tools as :class:`HostTool` objects: a name, a
  description and a JSON schema to declare to the SDK, whether the agent's policies must approve
  each call (``needs_confirmation``), and the two coroutines an SDK tool body and an
  SDK approval step await: :meth:`HostTool.call` (through :func:`~agybridge.dispatch_tool`, so the
  tool runs on the host side) and :meth:`HostTool.confirm` (through
  :func:`~agybridge.dispatch_policy_confirm`).
- :func:`fire_hook` forwards an SDK lifecycle event to the host's hooks through
  :func:`~agybridge.dispatch_hook`; a failing hook is logged and counted, never raised into the
  SDK's run, because hooks observe and must not change an outcome.
- :class:`ConversationAgent` is the agent object's skeleton: its id, the conversation it carries
  from turn to turn, and the lock that takes one agent's chats one at a time (a conversation has
  one order; different agents still run concurrently).

Everything here runs on the runtime loop, inside a chat, a stream or a ``run`` command, where
:data:`~agybridge.BRIDGE_STATE` resolves to the agent's runtime.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

# The public API only, as every user of the bridge (the package's layout may move under it).
from agybridge import (
    BRIDGE_STATE,
    AgentBridgeState,
    HookError,
    PolicyDeniedError,
    dispatch_hook,
    dispatch_policy_confirm,
    dispatch_tool,
)
from agybridge import Tool as BridgeTool

__all__ = ["EMPTY_SCHEMA", "ConversationAgent", "HostTool", "confirm_call", "fire_hook", "host_tools"]

logger = logging.getLogger("agybridge")

#: The schema declared for a tool that describes no parameters.
EMPTY_SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {}}

Item = TypeVar("Item")


@dataclass(frozen=True)
class HostTool:
    """One host tool of one agent, as an adapter declares it to an SDK and calls it.

    :param agent_id: the agent whose tool this is.
    :param name: the name the model calls it by.
    :param description: the model-facing description (may be empty).
    :param json_schema: the JSON schema of its keyword arguments (never empty: a tool that
        describes none gets :data:`EMPTY_SCHEMA`).
    :param needs_confirmation: the agent has policies, so each call must be approved by them; an
        SDK with an approval step declares the tool as needing approval and decides it with
        :meth:`confirm`.
    :param is_async: the host function is a coroutine function (it runs on the host loop that
        registered the agent).
    """

    agent_id: str
    name: str
    description: str
    json_schema: Mapping[str, Any]
    needs_confirmation: bool
    is_async: bool

    @classmethod
    def of(cls, agent_id: str, state: AgentBridgeState, tool: BridgeTool) -> HostTool:
        """Describe *tool* of the agent whose bridge state is *state*."""
        return cls(
            agent_id=agent_id,
            name=tool.name,
            description=tool.description,
            json_schema=dict(tool.parameters) or dict(EMPTY_SCHEMA),
            needs_confirmation=bool(state.policies),
            is_async=tool.is_async,
        )

    async def call(self, args: Mapping[str, Any], *, confirmed: bool = False) -> Any:
        """Run the tool on the host side through :func:`~agybridge.dispatch_tool` and return its result.

        :param args: the keyword arguments the model gave.
        :param confirmed: :meth:`confirm` already approved this very call, so the policies are not
            asked again.
        :raises Exception: whatever :func:`~agybridge.dispatch_tool` raises (the tool's own error,
            :class:`~agybridge.PolicyDeniedError`, ...), unchanged.
        """
        return await dispatch_tool(self.agent_id, self.name, {"args": dict(args)}, confirmed=confirmed)

    async def confirm(self, args: Mapping[str, Any], **metadata: Any) -> PolicyDeniedError | None:
        """Ask the agent's policies whether this call may run, through :func:`~agybridge.dispatch_policy_confirm`.

        :param args: the keyword arguments of the call the model asked for.
        :param metadata: more members of the context the policies see (a call id, say).
        :returns: None if every policy approves, else the denial (which names the policy and its
            reason, for the model).
        :raises PolicyError: a policy raised or returned nonsense: the call is refused and the error
            is raised, as for every agent (policies fail closed).
        """
        return await confirm_call(self.agent_id, self.name, args, **metadata)


async def confirm_call(
    agent_id: str, tool_name: str, args: Mapping[str, Any], **metadata: Any
) -> PolicyDeniedError | None:
    """Ask agent *agent_id*'s policies whether a call of *tool_name* may run (any tool the SDK asks
    approval for, a host tool or not), through :func:`~agybridge.dispatch_policy_confirm`.

    :returns: None if every policy approves, else the denial.
    :raises PolicyError: a policy raised or returned nonsense (policies fail closed).
    """
    try:
        await dispatch_policy_confirm(agent_id, tool_name, {**metadata, "args": dict(args)})
    except PolicyDeniedError as denial:
        return denial
    return None


def host_tools(agent_id: str) -> list[HostTool]:
    """The host tools of agent *agent_id*, read from its bridge state now.

    Read at every chat, so that tools added to the state before a chat are offered in it.

    :raises UnknownAgentError: no agent is registered under *agent_id*.
    """
    state: AgentBridgeState = BRIDGE_STATE.get(agent_id)
    return [HostTool.of(agent_id, state, tool) for tool in list(state.tools.values())]


async def fire_hook(agent_id: str, event: str, context: Mapping[str, Any]) -> None:
    """Forward an SDK lifecycle event to the host's hooks for *event* (through :func:`~agybridge.dispatch_hook`).

    The hooks run in a worker thread, in the context of the caller that sent the chat. A hook
    that raises is logged (agent and event named) and counted in ``stats.hook_errors``, never
    raised: the SDK's run goes on as if no hook had failed.
    """
    try:
        await dispatch_hook(agent_id, event, context)
    except HookError as exc:
        BRIDGE_STATE.get(agent_id).stats.hook_errors += 1
        try:
            logger.warning("%s", exc, exc_info=exc.__cause__)
        except BaseException:  # noqa: BLE001 - a hook's exception that cannot even be logged
            logger.warning("%s (its traceback could not be formatted)", exc)


class ConversationAgent(Generic[Item]):
    """The skeleton of an SDK agent object: an id, one conversation, one turn at a time.

    A subclass implements ``chat`` (and ``chat_stream``) by running its SDK inside
    ``async with self._turn:``, starting from :attr:`history` and storing the finished turn's
    conversation with ``self._keep(items)``. A turn that fails, or that a streaming consumer leaves early,
    is not recorded: the next chat continues from the last complete one.

    :param agent_id: the id the agent is registered under (its tool calls and hooks name it).
    """

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self._history: list[Item] = []
        self._turn = asyncio.Lock()

    @property
    def history(self) -> Sequence[Item]:
        """The conversation so far (every item of every completed chat)."""
        return tuple(self._history)

    def _keep(self, items: Sequence[Item]) -> None:
        """Record *items* as the whole conversation after a completed turn."""
        self._history = list(items)

    async def aclose(self) -> None:
        """Forget the conversation; the runtime awaits it on its loop when the agent is unregistered or
        replaced, or the runtime stops.
        """
        self._history = []
