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
    """No agent is registered under the given id (also a ``KeyError``).

    Raised by a chat, a handle call or an unregister of an unknown id, and by the ``dispatch_*``
    callbacks. Picklable.

    :ivar agent_id: the id that was looked up.
    """

    def __init__(self, agent_id: object) -> None:
        self.agent_id = agent_id
        super().__init__(f"unknown agent id {agent_id!r}: no agent is registered under it")

    def __reduce__(self) -> tuple[type[UnknownAgentError], tuple[object]]:
        return (type(self), (self.agent_id,))


class AgentAlreadyRegisteredError(AgyBridgeError, ValueError):
    """An agent id is already registered on this runtime and ``replace=True`` was not given (also a
    ``ValueError``).

    :ivar agent_id: the id that is taken.
    """

    def __init__(self, agent_id: object) -> None:
        self.agent_id = agent_id
        super().__init__(f"agent id {agent_id!r} is already registered; unregister it first or pass replace=True")

    def __reduce__(self) -> tuple[type[AgentAlreadyRegisteredError], tuple[object]]:
        return (type(self), (self.agent_id,))


class AgentOwnershipError(AgyBridgeError, LookupError):
    """Agent state asked for, or offered, across an ownership boundary (also a ``LookupError``).

    Each runtime owns its agents and each agent its :class:`AgentBridgeState`: an id looked up
    through :data:`BRIDGE_STATE` off every runtime thread that more than one runtime registered
    (use :attr:`PythonRuntime.bridge_state` there), or a state object registered for a second
    agent, raises this. The message names the owners.

    :ivar agent_id: the id concerned.
    :ivar owners: how each owning runtime is named (its thread name and identity).
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
    """The agent has no tool of that name; the message lists the tools it has (also a ``KeyError``).

    :ivar agent_id: the agent whose tools were searched.
    :ivar tool_name: the name asked for.
    :ivar known: the agent's tool names, sorted.
    """

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
    """A push was made to a :class:`CommandQueue` after ``close()`` (also a ``RuntimeError``); the
    runtime turns it into :class:`RuntimeShutdownError` for its callers.
    """


class RuntimeShutdownError(QueueClosedError):
    """The runtime is shut down (or shutting down) and will not run this command: it was sent after
    shutdown began, or outlasted the shutdown grace and was cancelled.
    """


class RuntimeDiedError(RuntimeShutdownError):
    """The runtime thread ended unexpectedly (its loop stopped or crashed); the message and
    ``__cause__`` say why. Pending and later commands fail with it; make a new runtime.
    """


class CommandReusedError(AgyBridgeError, RuntimeError):
    """A command object was sent a second time, or carries an already completed oneshot; each
    :class:`PyCommand` is single-use (also a ``RuntimeError``). The first send's outcome stands.
    """


class RuntimeBusyError(AgyBridgeError, RuntimeError):
    """The runtime already has ``max_in_flight`` commands in flight (back-pressure, also a
    ``RuntimeError``); the refused command was not scheduled. Retry later or raise the limit.
    """


class DeadlockError(AgyBridgeError, RuntimeError):
    """A blocking call could never finish (also a ``RuntimeError``).

    Raised at once instead of hanging: a blocking call (``chat``, ``run``, ``shutdown``,
    ``future.result()``, ``enter``, ...) made on the runtime's own thread; a blocking
    :meth:`~PythonRuntime.chat` made on the host loop (asyncio loop or trio run) that must run the
    agent's async tools; any other blocking call made on a loop thread as soon as one of its tool
    calls is sent to that blocked loop. The message names the agent and the loop and the ``a*``
    call to use instead.
    """


class HostLoopError(AgyBridgeError, RuntimeError):
    """The host loop an async tool was registered from is stopped, closed or finished, so the tool
    call can never run there (also a ``RuntimeError``). Also raised when the loop ends while the
    request is queued or the tool is running.
    """


class CallerGoneError(AgyBridgeError, RuntimeError):
    """A thread-sensitive tool could not run on its caller's thread (also a ``RuntimeError``): the
    caller that sent the chat stopped waiting (timed out, cancelled), its loop is gone, or there
    is none (a call from ``run()``). The tool is never run on another thread instead.
    """


class ForkedRuntimeError(AgyBridgeError, RuntimeError):
    """A runtime with ``RuntimeConfig(after_fork="error")``, started in a parent process, was used in
    a forked child, where its thread does not exist (also a ``RuntimeError``); make a new runtime in
    the child. With the default ``after_fork="restart"`` the runtime restarts in the child instead.
    """


class BridgeTimeoutError(AgyBridgeError, TimeoutError):
    """Base class of agybridge's timeouts (also a builtin ``TimeoutError``)."""


class WaitTimeoutError(BridgeTimeoutError):
    """``Oneshot.result(timeout)`` / ``wait`` gave up before the oneshot completed."""


class OperationTimeoutError(BridgeTimeoutError):
    """A command's round trip exceeded its operation timeout (the caller's ``timeout`` or
    ``config.operation_timeout``); the command's task is cancelled. The message names the
    command, the agent and the limit.
    """


class ChatTimeoutError(BridgeTimeoutError):
    """One chat turn (``agent.chat()`` with its hooks) exceeded ``config.chat_timeout``; the message
    names the agent and the limit.
    """


class StreamTimeoutError(BridgeTimeoutError):
    """A stream produced no item within its per-item timeout; the message names the stream."""


class CommandCancelledError(AgyBridgeError, concurrent.futures.CancelledError):
    """The command was cancelled before it produced a result.

    This is an ``Exception`` (like ``concurrent.futures.CancelledError``), *not*
    ``asyncio.CancelledError``: an awaiting task that was not itself cancelled must not
    receive a cancellation it would mistake for its own.
    """


class PolicyDeniedError(AgyBridgeError, PermissionError):
    """A policy refused a tool call (also a ``PermissionError``); the message names the agent, the
    tool, the policy and its reason. Picklable.

    :ivar agent_id: the agent that asked.
    :ivar tool_name: the tool it asked for.
    :ivar policy: the refusing policy's name.
    :ivar reason: the :class:`Deny` reason, or ``"denied"`` for ``False``.
    """

    def __init__(self, agent_id: str, tool_name: str, policy: str, reason: str) -> None:
        self.agent_id = agent_id
        self.tool_name = tool_name
        self.policy = policy
        self.reason = reason
        super().__init__(f"policy {policy!r} denied tool {tool_name!r} for agent {agent_id!r}: {reason}")

    def __reduce__(self) -> tuple[type[PolicyDeniedError], tuple[str, str, str, str]]:
        return (type(self), (self.agent_id, self.tool_name, self.policy, self.reason))


class CallbackError(AgyBridgeError):
    """A host callback failed; ``__cause__`` is the original exception. Picklable.

    :ivar agent_id: the agent whose callback failed.
    :ivar event: the hook event, ``"policy"`` or ``"tool"``.
    """

    def __init__(self, agent_id: str, event: str, message: str) -> None:
        self.agent_id = agent_id
        self.event = event
        super().__init__(message)

    def __reduce__(self) -> tuple[type[CallbackError], tuple[str, str, str]]:
        return (type(self), (self.agent_id, self.event, str(self)))


class HookError(CallbackError):
    """A hook raised. The bridge logs (and counts) failing hooks around chats and tool calls; only
    :func:`dispatch_hook` raises this.
    """


class PolicyError(CallbackError):
    """A policy raised, or returned something other than ``True``, ``None``, ``False`` or
    :class:`Deny`; the tool call is refused (policies fail closed).
    """


class ToolError(CallbackError):
    """A tool raised something that cannot travel as an ordinary exception.

    ``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, other ``BaseException`` subclasses
    and ``StopIteration`` would kill the runtime thread or stall the chat if they crossed the
    bridge as they are, so the tool call fails with this error instead; ``__cause__`` is the
    original exception. Ordinary exceptions propagate unchanged.

    :ivar tool_name: the tool that raised (``event`` is ``"tool"``).
    """

    def __init__(self, agent_id: str, tool_name: str, message: str) -> None:
        self.tool_name = tool_name
        super().__init__(agent_id, "tool", message)

    def __reduce__(self) -> tuple[type[CallbackError], tuple[str, str, str]]:
        return (type(self), (self.agent_id, self.tool_name, str(self)))
