"""Per-agent bridge state, kept on the host side: tools, hooks, policies, their host loop.

Import these names from :mod:`agybridge` or :mod:`agybridge.state` (the public door, which
also holds the callbacks that use them); this module is the data alone, low in the layers so
that the commands and both wings can use it.

The agent SDK calls back with nothing but an agent id and a serialized context, so what a
callback needs of the host (the tool registry, the hook runner, the policy set, the loop that
async tools run on) is one :class:`AgentBridgeState` per agent, filed by id in
:data:`~agybridge.BRIDGE_STATE`. This module is that data and nothing that runs it: the
callbacks that use it (``dispatch_tool``, ``dispatch_hook``, ``dispatch_policy_confirm``) run on
the runtime loop and live in :mod:`agybridge._loop.callbacks`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agybridge._backends import AsyncioHost, HostLoop, TrioHost, current_host
from agybridge._origin import note_thread_sensitive
from agybridge.errors import UnknownToolError

__all__ = [
    "HOOK_EVENTS",
    "AgentBridgeState",
    "AsyncioHost",
    "BridgeStats",
    "Deny",
    "HookRunner",
    "HostLoop",
    "PolicySet",
    "Tool",
    "TrioHost",
    "current_host",
    "is_async_callable",
]

#: The hook events the bridge fires. ``before_chat``/``after_chat`` wrap every chat;
#: ``before_tool``/``after_tool`` wrap every tool call; ``on_error`` follows a failure.
HOOK_EVENTS: tuple[str, ...] = ("before_chat", "after_chat", "before_tool", "after_tool", "on_error")


# ------------------------------------------------------------------------------------------
# Tools, hooks, policies
# ------------------------------------------------------------------------------------------

_JSON_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
}


def is_async_callable(fn: Any) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    # An object whose __call__ is a coroutine function is an async tool too.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))  # noqa: B004


def _parameters_from_signature(signature: inspect.Signature) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        schema: dict[str, Any] = {}
        annotation = param.annotation
        if isinstance(annotation, str):
            annotation = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}.get(
                annotation
            )
        if annotation in _JSON_TYPES:
            schema["type"] = _JSON_TYPES[annotation]
        properties[name] = schema
        if param.default is param.empty:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required}


@dataclass(frozen=True)
class Tool:
    """A host function an agent may call by name, through :func:`dispatch_tool`.

    Frozen: make one with :meth:`from_function` (or let :class:`AgentBridgeState` do it for a
    plain function). A sync tool runs in one of the runtime's worker threads, or, if
    *thread_sensitive*, on the thread of the caller that sent the chat; an async tool runs on the
    host loop the agent was registered from (:meth:`PythonRuntime.aregister_agent`), or as its
    own task on the runtime loop.

    :param fn: the function; it is called with the context's ``"args"`` as keyword arguments.
    :param name: the name agents call it by.
    :param description: the one-line description a model sees.
    :param parameters: a JSON-schema-like description of the keyword arguments
        (``{"type": "object", "properties": {...}, "required": [...]}``); adapters (pydantic-ai)
        turn it into the tool schema the model sees.
    :param is_async: whether *fn* is a coroutine function (or an object whose ``__call__`` is).
    :param signature: *fn*'s signature, used to refuse arguments it cannot take
        (:class:`ContextError`); None if it has none.
    :param thread_sensitive: run this sync tool on the thread of the caller that sent the chat,
        never in a worker (ignored for async tools).
    """

    fn: Callable[..., Any]
    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    is_async: bool = False
    signature: inspect.Signature | None = None
    #: Run this (sync) tool on the thread of the caller that sent the chat, never in a worker.
    thread_sensitive: bool = False

    def __post_init__(self) -> None:
        if self.thread_sensitive:
            note_thread_sensitive()

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        thread_sensitive: bool = False,
    ) -> Tool:
        """Describe *fn* as a tool; *name*, *description* and *parameters* default from it.

        Callable from any thread, typically while building an :class:`AgentBridgeState` before
        registration.

        :param fn: a sync or async callable (a ``functools.partial`` of a coroutine function is async
            too).
        :param name: the tool's name (default: ``fn.__name__``).
        :param description: the model-facing description (default: the first line of *fn*'s
            docstring, or empty).
        :param parameters: the parameter description (default: derived from *fn*'s signature and
            annotations, ``str``/``int``/``float``/``bool``/``list``/``dict`` becoming JSON types).
        :param thread_sensitive: a sync tool that must run on the thread of the caller that sent the
            chat (a ``sqlite3`` connection, a ``threading.local``, a GUI toolkit), never in a worker.
            Its calls fail with :class:`CallerGoneError` when that caller stopped waiting or when
            there is no chat caller (a call from :meth:`PythonRuntime.run`).
        :returns: the new :class:`Tool`.
        :raises TypeError: *fn* is not callable.
        :raises ValueError: no non-empty name was given and *fn* has no ``__name__``.
        """
        if not callable(fn):
            raise TypeError(f"a tool must be callable, not {type(fn).__name__} {fn!r}")
        tool_name = name if name is not None else getattr(fn, "__name__", None)
        if not isinstance(tool_name, str) or not tool_name:
            raise ValueError(f"tool {fn!r} needs a non-empty name (pass name=...)")
        try:
            signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None
        if description is None:
            doc = inspect.getdoc(fn) or ""
            description = doc.strip().splitlines()[0] if doc.strip() else ""
        if parameters is None:
            parameters = _parameters_from_signature(signature) if signature is not None else {"type": "object"}
        return cls(
            fn, tool_name, description, dict(parameters), is_async_callable(fn), signature, bool(thread_sensitive)
        )


@dataclass(frozen=True)
class Deny:
    """Returned by a policy to refuse a tool call, with the reason the agent will see.

    The call then fails with :class:`PolicyDeniedError`, whose ``reason`` is *reason*; an SDK
    adapter (and :class:`~agybridge.testing.ScriptedAgent`) reports it to the model.

    :param reason: why the call was refused, in words a model can act on.
    """

    reason: str


#: A policy: ``policy(agent_id, tool_name, context) -> True | None | False | Deny(reason)``.
Policy = Callable[[str, str, Mapping[str, Any]], Any]
#: A hook: ``hook(agent_id, event, context) -> None``.
Hook = Callable[[str, str, Mapping[str, Any]], Any]


class HookRunner:
    """An agent's hooks, per event name.

    Hooks observe, they never change an outcome: each runs synchronously in one of the runtime's
    worker threads, never on the loop, in the copied context of the command that caused it; one
    that raises is logged and counted in ``stats.hook_errors`` (and, through
    :func:`dispatch_hook`, raised as :class:`HookError`). Build it, or let
    :class:`AgentBridgeState` build it from a mapping, before registering the agent; it is not
    locked, so add hooks from one thread at a time.

    :param hooks: event name (one of :data:`HOOK_EVENTS`) to the hooks to run on it, each
        ``hook(agent_id, event, context) -> None``.
    :raises ValueError: an unknown event name.
    :raises TypeError: a hook is not callable.
    """

    def __init__(self, hooks: Mapping[str, Iterable[Hook]] | None = None) -> None:
        self._hooks: dict[str, list[Hook]] = {}
        for event, fns in (hooks or {}).items():
            for fn in fns:
                self.add(event, fn)

    def add(self, event: str, fn: Hook) -> None:
        """Run ``fn(agent_id, event, context)`` on every *event*, after the hooks already added.

        :param event: one of :data:`HOOK_EVENTS`.
        :param fn: the hook; its return value is ignored.
        :raises ValueError: *event* is not one of :data:`HOOK_EVENTS`.
        :raises TypeError: *fn* is not callable.
        """
        if event not in HOOK_EVENTS:
            raise ValueError(f"unknown hook event {event!r}; expected one of {', '.join(HOOK_EVENTS)}")
        if not callable(fn):
            raise TypeError(f"a hook must be callable, not {type(fn).__name__} {fn!r}")
        self._hooks.setdefault(event, []).append(fn)

    def has(self, event: str) -> bool:
        """True if any hook listens to *event*, so firing an event nobody listens to costs nothing."""
        return bool(self._hooks.get(event))

    def for_event(self, event: str) -> list[Hook]:
        """The hooks for *event*, in the order they were added, as a new list (an empty one for an
        event without hooks or an unknown one).
        """
        return list(self._hooks.get(event, ()))


class PolicySet:
    """An agent's policies, consulted before every tool call; every one must approve.

    A policy is ``policy(agent_id, tool_name, context)`` returning ``True`` or ``None`` (approve),
    ``False`` or :class:`Deny` (refuse: the call fails with :class:`PolicyDeniedError`). It runs
    in one of the runtime's worker threads; one that raises, or returns anything else, refuses
    the call with :class:`PolicyError` (policies fail closed). Build it before registering the
    agent; it is not locked, so add policies from one thread at a time.

    :param policies: the policies, consulted in this order.
    :raises TypeError: a policy is not callable.
    """

    def __init__(self, policies: Iterable[Policy] = ()) -> None:
        self._policies: list[tuple[str, Policy]] = []
        for policy in policies:
            self.add(policy)

    def add(self, policy: Policy, name: str | None = None) -> None:
        """Add *policy*, consulted after the ones already added.

        :param policy: the policy callable.
        :param name: how denials and errors name it (default: the function's ``__name__``, or its
            repr).
        :raises TypeError: *policy* is not callable.
        """
        if not callable(policy):
            raise TypeError(f"a policy must be callable, not {type(policy).__name__} {policy!r}")
        label: str = name or str(getattr(policy, "__name__", repr(policy)))
        self._policies.append((label, policy))

    def __bool__(self) -> bool:
        return bool(self._policies)

    def __len__(self) -> int:
        return len(self._policies)

    def items(self) -> list[tuple[str, Policy]]:
        """The ``(name, policy)`` pairs in consultation order, as a new list."""
        return list(self._policies)


@dataclass
class BridgeStats:
    """Counters of one agent's callbacks (written on the runtime loop only)."""

    tool_calls: int = 0
    tool_errors: int = 0
    denied: int = 0
    hooks_fired: int = 0
    hook_errors: int = 0


class AgentBridgeState:
    """Everything the host side knows about one agent: its tools, hooks, policies and host loop.

    Build one per agent and pass it to :meth:`PythonRuntime.register_agent`, which files it in
    that runtime's :attr:`~PythonRuntime.bridge_state` under the agent's id, where
    :func:`dispatch_tool` finds it from the id alone. One state serves one agent: registering it
    for a second raises :class:`AgentOwnershipError`; after its agent is unregistered or replaced
    it is free again.

    Thread rules: build and fill it on any one thread before registering; once registered it is
    read on the runtime loop and in worker threads, so add no tools, hooks or policies to it then.

    :param tools: :class:`Tool` objects, or functions described with :meth:`Tool.from_function`.
    :param hooks: a :class:`HookRunner`, or a mapping of event name to hooks.
    :param policies: a :class:`PolicySet`, or an iterable of policies.
    :param host: where async tools run; :meth:`PythonRuntime.aregister_agent` sets it to the
        caller's loop, and None runs them as tasks on the runtime loop.
    :param thread_sensitive: run *every* sync tool of this agent on the thread of the caller that
        sent the chat, as :meth:`Tool.from_function`'s *thread_sensitive* does for one tool.
    :raises TypeError: a tool, hook or policy is not callable.
    :raises ValueError: an unknown hook event, or a tool without a name.

    Its ``stats`` attribute counts the agent's callbacks (written on the runtime loop only; read
    it anywhere as a snapshot): ``tool_calls``, ``tool_errors`` (tools that raised), ``denied``
    (calls refused by a policy), ``hooks_fired`` and ``hook_errors`` (hooks that raised, logged).
    """

    def __init__(
        self,
        tools: Iterable[Tool | Callable[..., Any]] = (),
        hooks: HookRunner | Mapping[str, Iterable[Hook]] | None = None,
        policies: PolicySet | Iterable[Policy] = (),
        host: HostLoop | None = None,
        *,
        thread_sensitive: bool = False,
    ) -> None:
        self.thread_sensitive = bool(thread_sensitive)
        if self.thread_sensitive:
            note_thread_sensitive()
        self.tools: dict[str, Tool] = {}
        for tool in tools:
            self.add_tool(tool)
        self.hooks = hooks if isinstance(hooks, HookRunner) else HookRunner(hooks)
        self.policies = policies if isinstance(policies, PolicySet) else PolicySet(policies)
        self.host = host
        self.stats = BridgeStats()
        self.closed = False
        self._inflight: set[asyncio.Task[Any]] = set()

    def add_tool(
        self,
        tool: Tool | Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        thread_sensitive: bool = False,
    ) -> Tool:
        """Register a tool, replacing one of the same name; call it before the agent is registered.

        :param tool: a :class:`Tool`, or a function to describe with :meth:`Tool.from_function`
            (*name*, *description*, *parameters* and *thread_sensitive* are passed on to it and
            ignored for a :class:`Tool`).
        :returns: the registered :class:`Tool`.
        :raises TypeError: *tool* is not callable.
        :raises ValueError: it has no usable name.
        """
        if not isinstance(tool, Tool):
            tool = Tool.from_function(
                tool, name=name, description=description, parameters=parameters, thread_sensitive=thread_sensitive
            )
        self.tools[tool.name] = tool
        return tool

    def runs_on_caller(self, tool: Tool) -> bool:
        """Does *tool* run on its caller's thread (a sync tool, thread-sensitive by itself or by this
        state)?
        """
        return not tool.is_async and (tool.thread_sensitive or self.thread_sensitive)

    def has_thread_sensitive_tools(self) -> bool:
        """True if a chat with this agent may need its caller's thread; chats with agents that have no
        such tool pay nothing for the feature.
        """
        return any(self.runs_on_caller(tool) for tool in list(self.tools.values()))

    def tool(self, agent_id: str, name: str) -> Tool:
        """The tool called *name*.

        :param agent_id: the agent's id, for the error message.
        :param name: the tool's name.
        :raises UnknownToolError: there is no such tool; the message lists the agent's tools.
        :raises TypeError: *name* is not a str.
        """
        if not isinstance(name, str):
            raise TypeError(f"tool_name must be a str, not {type(name).__name__} {name!r}")
        tool = self.tools.get(str.__str__(name))  # a plain str: no user __hash__ runs here
        if tool is None:
            raise UnknownToolError(agent_id, name, sorted(self.tools))
        return tool

    def bind_host(self, host: HostLoop | None) -> None:
        """Set the host loop async tools run on; :meth:`PythonRuntime.aregister_agent` does it for you
        with the caller's loop, before registration.
        """
        self.host = host

    def tool_started(self, task: asyncio.Task[Any]) -> None:
        """A tool call of this agent runs as *task* (runtime loop only): unregister cancels it.

        :meta private:
        """
        self._inflight.add(task)

    def tool_finished(self, task: asyncio.Task[Any]) -> None:
        """The tool call running as *task* ended (runtime loop only).

        :meta private:
        """
        self._inflight.discard(task)

    def forget_inflight(self) -> None:
        """In a forked child: the running tool calls were the parent's loop's; none runs here.

        :meta private:
        """
        self._inflight.clear()

    def cancel_inflight(self) -> None:
        """Mark the agent gone and cancel its running tool calls (runtime loop only, on unregister)."""
        self.closed = True
        for task in list(self._inflight):
            task.cancel()
