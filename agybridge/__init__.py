"""agybridge: drive asyncio agent code on one dedicated loop thread from anywhere.

Plain threads, other asyncio loops and trio send commands to a :class:`PythonRuntime`,
whose one thread runs every agent coroutine; agents call back into the host through
:func:`dispatch_tool`, :func:`dispatch_hook` and :func:`dispatch_policy_confirm`.
"""

from agybridge._context_managers import AsyncRemoteContext, RemoteContext
from agybridge._dispatcher import RuntimeMetrics
from agybridge._futures import CommandFuture
from agybridge._handles import AgentHandle, AioAgentHandle
from agybridge._select import IMPLEMENTATION, AgentRegistry, CommandQueue, Oneshot
from agybridge._wrap import AioWrapped, Wrapped
from agybridge.commands import CallAgent, Chat, PyCommand, RegisterAgent, Run, Shutdown, UnregisterAgent
from agybridge.config import (
    DEFAULT_CHAT_TIMEOUT_SECS,
    DEFAULT_INTER_AGENT_DELAY,
    RuntimeConfig,
    default_chat_timeout,
    default_operation_timeout,
)
from agybridge.errors import (
    AgentAlreadyRegisteredError,
    AgyBridgeError,
    BridgeTimeoutError,
    CallbackError,
    ChatTimeoutError,
    CommandCancelledError,
    ConfigError,
    ContextError,
    DeadlockError,
    ForkedRuntimeError,
    HookError,
    HostLoopError,
    OperationTimeoutError,
    PolicyDeniedError,
    PolicyError,
    QueueClosedError,
    RuntimeBusyError,
    RuntimeDiedError,
    RuntimeShutdownError,
    UnknownAgentError,
    UnknownToolError,
    WaitTimeoutError,
)
from agybridge.runtime import PythonRuntime
from agybridge.state import (
    BRIDGE_STATE,
    HOOK_EVENTS,
    AgentBridgeState,
    Deny,
    HookRunner,
    PolicySet,
    Tool,
    dispatch_hook,
    dispatch_policy_confirm,
    dispatch_tool,
    parse_context,
)

__version__ = "0.1.0"

__all__ = [
    "BRIDGE_STATE",
    "DEFAULT_CHAT_TIMEOUT_SECS",
    "DEFAULT_INTER_AGENT_DELAY",
    "HOOK_EVENTS",
    "IMPLEMENTATION",
    "AgentAlreadyRegisteredError",
    "AgentBridgeState",
    "AgentHandle",
    "AgentRegistry",
    "AgyBridgeError",
    "AioAgentHandle",
    "AioWrapped",
    "AsyncRemoteContext",
    "BridgeTimeoutError",
    "CallAgent",
    "CallbackError",
    "Chat",
    "ChatTimeoutError",
    "CommandCancelledError",
    "CommandFuture",
    "CommandQueue",
    "ConfigError",
    "ContextError",
    "DeadlockError",
    "Deny",
    "ForkedRuntimeError",
    "HookError",
    "HookRunner",
    "HostLoopError",
    "Oneshot",
    "OperationTimeoutError",
    "PolicyDeniedError",
    "PolicyError",
    "PolicySet",
    "PyCommand",
    "PythonRuntime",
    "QueueClosedError",
    "RegisterAgent",
    "RemoteContext",
    "Run",
    "RuntimeBusyError",
    "RuntimeConfig",
    "RuntimeDiedError",
    "RuntimeMetrics",
    "RuntimeShutdownError",
    "Shutdown",
    "Tool",
    "UnknownAgentError",
    "UnknownToolError",
    "UnregisterAgent",
    "WaitTimeoutError",
    "Wrapped",
    "__version__",
    "default_chat_timeout",
    "default_operation_timeout",
    "dispatch_hook",
    "dispatch_policy_confirm",
    "dispatch_tool",
    "parse_context",
]
