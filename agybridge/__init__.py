"""agybridge: drive asyncio agent code on one dedicated loop thread from anywhere.

This module only re-exports; see the API reference for each name.

Plain threads, other asyncio loops and trio send commands to a :class:`PythonRuntime`,
whose one thread runs every agent coroutine; agents call back into the host through
:func:`dispatch_tool`, :func:`dispatch_hook` and :func:`dispatch_policy_confirm`.
"""

from agybridge._caller.context_managers import AsyncRemoteContext, RemoteContext
from agybridge._caller.futures import CommandFuture
from agybridge._caller.handles import AgentHandle, AgentMethod, AioAgentHandle
from agybridge._caller.streams import AsyncStream, BlockingStream
from agybridge._caller.wrap import AioWrapped, Wrapped
from agybridge._loop.callbacks import dispatch_hook, dispatch_policy_confirm, dispatch_tool, parse_context
from agybridge._loop.dispatcher import RuntimeMetrics
from agybridge._registry import BRIDGE_STATE
from agybridge.config import (
    DEFAULT_CHAT_TIMEOUT_SECS,
    DEFAULT_INTER_AGENT_DELAY,
    RuntimeConfig,
    default_chat_timeout,
    default_operation_timeout,
)
from agybridge.errors import (
    AgentAlreadyRegisteredError,
    AgentOwnershipError,
    AgyBridgeError,
    BridgeTimeoutError,
    CallbackError,
    CallerGoneError,
    ChatTimeoutError,
    CommandCancelledError,
    CommandReusedError,
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
    StreamTimeoutError,
    ToolError,
    UnknownAgentError,
    UnknownToolError,
    WaitTimeoutError,
)
from agybridge.lowlevel import (
    IMPLEMENTATION,
    AgentRegistry,
    CallAgent,
    Channel,
    Chat,
    ChatStream,
    CommandQueue,
    Oneshot,
    PyCommand,
    RegisterAgent,
    Run,
    Shutdown,
    Stream,
    UnregisterAgent,
)
from agybridge.runtime import PythonRuntime
from agybridge.state import HOOK_EVENTS, AgentBridgeState, Deny, HookRunner, PolicySet, Tool

__version__ = "0.3.0"

__all__ = [
    "BRIDGE_STATE",
    "DEFAULT_CHAT_TIMEOUT_SECS",
    "DEFAULT_INTER_AGENT_DELAY",
    "HOOK_EVENTS",
    "IMPLEMENTATION",
    "AgentAlreadyRegisteredError",
    "AgentBridgeState",
    "AgentHandle",
    "AgentMethod",
    "AgentOwnershipError",
    "AgentRegistry",
    "AgyBridgeError",
    "AioAgentHandle",
    "AioWrapped",
    "AsyncRemoteContext",
    "AsyncStream",
    "BlockingStream",
    "BridgeTimeoutError",
    "CallAgent",
    "CallbackError",
    "CallerGoneError",
    "Channel",
    "Chat",
    "ChatStream",
    "ChatTimeoutError",
    "CommandCancelledError",
    "CommandFuture",
    "CommandQueue",
    "CommandReusedError",
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
    "Stream",
    "StreamTimeoutError",
    "Tool",
    "ToolError",
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
