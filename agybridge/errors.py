"""The agybridge exception hierarchy.

Every error agybridge raises derives from :class:`AgyBridgeError` *and* from the builtin
whose meaning it carries (``KeyError`` for unknown ids, ``TimeoutError`` for timeouts, ...),
so callers can catch either the precise type or the familiar builtin. Messages name the
thing that was wrong (agent id, tool, command, limit) so the cause can be fixed from the
message alone.
"""

from __future__ import annotations

import concurrent.futures

__all__ = [
    "AgentAlreadyRegisteredError",
    "AgentOwnershipError",
    "AgyBridgeError",
    "BridgeTimeoutError",
    "CallbackError",
    "CallerGoneError",
    "ChatTimeoutError",
    "CommandCancelledError",
    "CommandReusedError",
    "ConfigError",
    "ContextError",
    "DeadlockError",
    "ForkedRuntimeError",
    "HookError",
    "HostLoopError",
    "OperationTimeoutError",
    "PolicyDeniedError",
    "PolicyError",
    "QueueClosedError",
    "RuntimeBusyError",
    "RuntimeDiedError",
    "RuntimeShutdownError",
    "StreamTimeoutError",
    "ToolError",
    "UnknownAgentError",
    "UnknownToolError",
    "WaitTimeoutError",
]


class AgyBridgeError(Exception):
    """Base class of every error raised by agybridge itself."""


class _KeyErrorMessage(KeyError):
    # KeyError.__str__ shows repr(args[0]) (quotes and escaped newlines); these errors carry
    # a full sentence, so show it as written.
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(AgyBridgeError, ValueError):
    """A configuration value or environment variable is invalid."""


class UnknownAgentError(AgyBridgeError, _KeyErrorMessage):
    """No agent is registered under the given id."""

    def __init__(self, agent_id: object) -> None:
        self.agent_id = agent_id
        super().__init__(f"unknown agent id {agent_id!r}: no agent is registered under it")

    def __reduce__(self) -> tuple[type[UnknownAgentError], tuple[object]]:
        return (type(self), (self.agent_id,))


class AgentAlreadyRegisteredError(AgyBridgeError, ValueError):
    """An agent id is already registered and ``replace=True`` was not given."""

    def __init__(self, agent_id: object) -> None:
        self.agent_id = agent_id
        super().__init__(f"agent id {agent_id!r} is already registered; unregister it first or pass replace=True")

    def __reduce__(self) -> tuple[type[AgentAlreadyRegisteredError], tuple[object]]:
        return (type(self), (self.agent_id,))


class AgentOwnershipError(AgyBridgeError, LookupError):
    """Agent state asked for, or offered, across an ownership boundary.

    Each runtime owns its agents and each agent its :class:`AgentBridgeState`: an id looked
    up off every runtime thread that more than one runtime registered, or a state object
    registered for a second agent, raises this. The message names the owners.
    """

    def __init__(self, agent_id: object, owners: list[str], message: str | None = None) -> None:
        self.agent_id = agent_id
        self.owners = owners
        super().__init__(
            message
            or f"agent id {agent_id!r} is registered on {len(owners)} runtimes ({', '.join(owners)}); "
            "outside a runtime's thread look it up with runtime.bridge_state"
        )

    def __reduce__(self) -> tuple[type[AgentOwnershipError], tuple[object, list[str], str]]:
        return (type(self), (self.agent_id, self.owners, str(self)))


class UnknownToolError(AgyBridgeError, _KeyErrorMessage):
    """The agent has no tool of that name; the message lists the tools it has."""

    def __init__(self, agent_id: str, tool_name: object, known: list[str]) -> None:
        self.agent_id = agent_id
        self.tool_name = tool_name
        self.known = known
        listing = ", ".join(repr(name) for name in known) if known else "none"
        super().__init__(f"agent {agent_id!r} has no tool {tool_name!r} (its tools: {listing})")

    def __reduce__(self) -> tuple[type[UnknownToolError], tuple[str, object, list[str]]]:
        return (type(self), (self.agent_id, self.tool_name, self.known))


class ContextError(AgyBridgeError, ValueError):
    """A serialized callback context could not be parsed or has the wrong shape."""


class QueueClosedError(AgyBridgeError, RuntimeError):
    """A push was made to a :class:`CommandQueue` after ``close()``."""


class RuntimeShutdownError(QueueClosedError):
    """The runtime is shut down (or shutting down) and will not run this command."""


class RuntimeDiedError(RuntimeShutdownError):
    """The runtime thread ended unexpectedly; the message and ``__cause__`` say why."""


class CommandReusedError(AgyBridgeError, RuntimeError):
    """A command object was sent a second time; each :class:`PyCommand` is single-use."""


class RuntimeBusyError(AgyBridgeError, RuntimeError):
    """The runtime already has ``max_in_flight`` commands in flight (back-pressure)."""


class DeadlockError(AgyBridgeError, RuntimeError):
    """A blocking call could never finish: it was made on the runtime's own thread, or on
    the host loop (asyncio loop or trio run) that must run the async tools it needs."""


class HostLoopError(AgyBridgeError, RuntimeError):
    """The host loop an async tool was registered from has closed or finished."""


class CallerGoneError(AgyBridgeError, RuntimeError):
    """A thread-sensitive tool could not run on its caller's thread: the caller that sent
    the chat stopped waiting (timed out, cancelled), its loop is gone, or there is none."""


class ForkedRuntimeError(AgyBridgeError, RuntimeError):
    """A runtime created in a parent process was used in a forked child."""


class BridgeTimeoutError(AgyBridgeError, TimeoutError):
    """Base class of agybridge's timeouts (also a builtin ``TimeoutError``)."""


class WaitTimeoutError(BridgeTimeoutError):
    """``Oneshot.result(timeout)`` / ``wait`` gave up before the oneshot completed."""


class OperationTimeoutError(BridgeTimeoutError):
    """A command's round trip exceeded its operation timeout."""


class ChatTimeoutError(BridgeTimeoutError):
    """One ``agent.chat()`` exceeded the chat timeout."""


class StreamTimeoutError(BridgeTimeoutError):
    """A stream produced no item within its per-item timeout; the message names the stream."""


class CommandCancelledError(AgyBridgeError, concurrent.futures.CancelledError):
    """The command was cancelled before it produced a result.

    This is an ``Exception`` (like ``concurrent.futures.CancelledError``), *not*
    ``asyncio.CancelledError``: an awaiting task that was not itself cancelled must not
    receive a cancellation it would mistake for its own.
    """


class PolicyDeniedError(AgyBridgeError, PermissionError):
    """A policy refused a tool call; the message names the agent, the tool and the reason."""

    def __init__(self, agent_id: str, tool_name: str, policy: str, reason: str) -> None:
        self.agent_id = agent_id
        self.tool_name = tool_name
        self.policy = policy
        self.reason = reason
        super().__init__(f"policy {policy!r} denied tool {tool_name!r} for agent {agent_id!r}: {reason}")

    def __reduce__(self) -> tuple[type[PolicyDeniedError], tuple[str, str, str, str]]:
        return (type(self), (self.agent_id, self.tool_name, self.policy, self.reason))


class CallbackError(AgyBridgeError):
    """A host callback (hook or policy) raised; ``__cause__`` is the original exception."""

    def __init__(self, agent_id: str, event: str, message: str) -> None:
        self.agent_id = agent_id
        self.event = event
        super().__init__(message)

    def __reduce__(self) -> tuple[type[CallbackError], tuple[str, str, str]]:
        return (type(self), (self.agent_id, self.event, str(self)))


class HookError(CallbackError):
    """A hook callback raised."""


class PolicyError(CallbackError):
    """A policy callback raised (the tool call is refused: policies fail closed)."""


class ToolError(CallbackError):
    """A tool raised something that cannot travel as an ordinary exception.

    ``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, other ``BaseException``
    subclasses and ``StopIteration`` would kill the runtime thread or stall the chat if they
    crossed the bridge as they are, so the tool call fails with this error instead;
    ``__cause__`` is the original exception. Ordinary exceptions propagate unchanged.
    """

    def __init__(self, agent_id: str, tool_name: str, message: str) -> None:
        self.tool_name = tool_name
        super().__init__(agent_id, "tool", message)

    def __reduce__(self) -> tuple[type[CallbackError], tuple[str, str, str]]:
        return (type(self), (self.agent_id, self.tool_name, str(self)))
