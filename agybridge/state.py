"""Per-agent bridge state and the callbacks agent code makes into the host: the public door.

The agent SDK calls back with nothing but an agent id and a serialized context, so the
per-agent state (tool registry, hook runner, policy set) lives in a registry keyed by agent
id: :data:`BRIDGE_STATE`, which resolves to the calling runtime's own registry. Its lock is
held only for the map operation itself, never across an ``await``.

This module only re-exports, so every name stays importable where it always was: the data
(:class:`AgentBridgeState`, :class:`Tool`, :class:`HookRunner`, :class:`PolicySet`,
:class:`Deny`) from :mod:`agybridge._agent_state`, the registry from :mod:`agybridge._registry`
and the callbacks (:func:`dispatch_tool`, :func:`dispatch_hook`,
:func:`dispatch_policy_confirm`, :func:`parse_context`), which run on the runtime loop, from
:mod:`agybridge._loop.callbacks`.
"""

from agybridge._agent_state import (
    HOOK_EVENTS,
    AgentBridgeState,
    AsyncioHost,
    BridgeStats,
    Deny,
    Hook,
    HookRunner,
    HostLoop,
    Policy,
    PolicySet,
    Tool,
    TrioHost,
    current_host,
)
from agybridge._loop.callbacks import dispatch_hook, dispatch_policy_confirm, dispatch_tool, parse_context
from agybridge._registry import BRIDGE_STATE

__all__ = [
    "BRIDGE_STATE",
    "HOOK_EVENTS",
    "AgentBridgeState",
    "AsyncioHost",
    "BridgeStats",
    "Deny",
    "Hook",
    "HookRunner",
    "HostLoop",
    "Policy",
    "PolicySet",
    "Tool",
    "TrioHost",
    "current_host",
    "dispatch_hook",
    "dispatch_policy_confirm",
    "dispatch_tool",
    "parse_context",
]
