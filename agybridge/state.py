"""Per-agent bridge state and the callbacks agent code makes into the host.

The agent SDK calls back with nothing but an agent id and a serialized context, so the
per-agent state (tool registry, hook runner, policy set) lives in a registry keyed by agent
id: :data:`BRIDGE_STATE`, which resolves to the calling runtime's own registry. Its lock is
held only for the map operation itself, never across an ``await``: a look-up returns the
state object and every slow step (a tool, a hook, a policy) runs after the lock is gone.

Host-side work never runs on the runtime loop: synchronous tools, hooks and policies run in
worker threads (the runtime's executor), and an async tool runs on the host loop it was
registered from (an asyncio loop or a trio run), so the runtime loop keeps serving every
other coroutine while a tool works. A thread-sensitive sync tool runs on the thread of the
caller whose chat caused it. Every callback runs in a copy of the context of the command
that caused it, so the caller's context variables (a tracing span, say) reach it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agybridge import _callers, _select
from agybridge._backends import HostLoop, current_host
from agybridge._backends._asyncio import AsyncioHost
from agybridge._backends._trio import TrioHost
from agybridge._callbacks import call_tool_guarded, guard_async_tool, run_tool_guarded, safe_repr
from agybridge._loop_thread import current_owner, run_as_owner
from agybridge._registry import BridgeStateView
from agybridge.errors import (
    CommandCancelledError,
    ContextError,
    HookError,
    HostLoopError,
    PolicyDeniedError,
    PolicyError,
    UnknownToolError,
)

__all__ = [
    "BRIDGE_STATE",
    "HOOK_EVENTS",
    "AgentBridgeState",
    "AsyncioHost",
    "Deny",
    "HookRunner",
    "HostLoop",
    "PolicySet",
    "Tool",
    "TrioHost",
    "current_host",
    "dispatch_hook",
    "dispatch_policy_confirm",
    "dispatch_tool",
    "parse_context",
]

logger = logging.getLogger("agybridge")

#: The hook events the bridge fires. ``before_chat``/``after_chat`` wrap every chat;
#: ``before_tool``/``after_tool`` wrap every tool call; ``on_error`` follows a failure.
HOOK_EVENTS: tuple[str, ...] = ("before_chat", "after_chat", "before_tool", "after_tool", "on_error")

#: Agent id -> :class:`AgentBridgeState`, resolved per runtime: on a runtime's thread it is
#: that runtime's own registry (``runtime.bridge_state``); see :mod:`agybridge._registry`.
BRIDGE_STATE = BridgeStateView(_select.AgentRegistry())


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


def _is_async_callable(fn: Any) -> bool:
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
            _callers.note_thread_sensitive()

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
            fn, tool_name, description, dict(parameters), _is_async_callable(fn), signature, bool(thread_sensitive)
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
            _callers.note_thread_sensitive()
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

    def cancel_inflight(self) -> None:
        """Mark the agent gone and cancel its running tool calls (runtime loop only, on unregister)."""
        self.closed = True
        for task in list(self._inflight):
            task.cancel()


# ------------------------------------------------------------------------------------------
# Context parsing
# ------------------------------------------------------------------------------------------


def parse_context(context: str | bytes | Mapping[str, Any] | None) -> dict[str, Any]:
    """Turn a serialized callback context into a dict, or raise :class:`ContextError`.

    A context is a JSON object (as text, bytes or an already-decoded mapping). Its optional
    ``"args"`` member, an object with str keys, holds the tool's keyword arguments; other members
    are metadata passed to hooks and policies. A pure function: call it from any thread.

    :param context: JSON text or bytes, a mapping, or None (no arguments).
    :returns: a new dict that always has an ``"args"`` dict.
    :raises ContextError: invalid or too deeply nested JSON, not an object, or ``"args"`` not an
        object with str keys; the message says which.
    """
    if context is None:
        return {"args": {}}
    if isinstance(context, (str, bytes, bytearray)):
        try:
            decoded = json.loads(context)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ContextError(f"context is not valid JSON: {exc}") from None
        except RecursionError:
            raise ContextError(
                "context is nested too deeply for the JSON parser; flatten it (the tool arguments "
                "and metadata must be a JSON object of reasonable depth)"
            ) from None
    elif isinstance(context, Mapping):
        decoded = dict(context)
    else:
        raise ContextError(f"context must be JSON text or a dict, not {type(context).__name__}")
    if not isinstance(decoded, dict):
        raise ContextError(f"context must be a JSON object, not a JSON {type(decoded).__name__}")
    args = decoded.setdefault("args", {})
    if not isinstance(args, dict):
        raise ContextError(f"context 'args' must be a JSON object of keyword arguments, not {type(args).__name__}")
    for key in args:
        if not isinstance(key, str):
            raise ContextError(f"context 'args' keys must be strings, not {key!r}")
    return decoded


# ------------------------------------------------------------------------------------------
# Dispatch
# ------------------------------------------------------------------------------------------


def _run_hooks_sync(agent_id: str, event: str, hooks: list[Hook], context: Mapping[str, Any]) -> int:
    first_error: BaseException | None = None
    for hook in hooks:
        try:
            hook(agent_id, event, context)
        except BaseException as exc:  # noqa: BLE001 - any kind, even SystemExit: reported below
            if first_error is None:
                first_error = exc
    if first_error is not None:
        raise HookError(
            agent_id, event, f"hook for event {event!r} of agent {agent_id!r} raised {safe_repr(first_error)}"
        ) from first_error
    return len(hooks)


async def _in_worker(fn: Callable[..., Any], *args: Any) -> Any:
    # run_in_executor copies no context: run the callback in a copy of the command's own.
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        None, _callers.callback_context().run, functools.partial(run_as_owner, current_owner(), fn, *args)
    )


async def dispatch_hook(agent_id: str, event: str, context: str | bytes | Mapping[str, Any] | None = None) -> None:
    """Run agent *agent_id*'s hooks for *event* in a worker thread.

    Every hook runs even if one raises; the first failure is then raised as :class:`HookError`
    naming the agent and the event, with the hook's exception as ``__cause__``. The bridge itself
    fires the chat and tool events (and only logs their failures); this is for agent code firing
    them on its own.

    Await it on the runtime loop, from agent code (inside a chat, a stream or a ``run`` command
    of the runtime the agent is registered on): that is where :data:`BRIDGE_STATE` resolves to the
    agent's runtime, where the worker threads are that runtime's, and where the sending caller's
    context is copied from. It is a coroutine function and not thread-safe; never call it from
    another thread or loop.

    :param agent_id: the agent whose hooks run.
    :param event: one of :data:`HOOK_EVENTS`.
    :param context: the context handed to every hook (see :func:`parse_context`).
    :raises UnknownAgentError: no agent is registered under *agent_id*.
    :raises AgentOwnershipError: (off a runtime thread only) several runtimes registered it.
    :raises ValueError: *event* is not one of :data:`HOOK_EVENTS`.
    :raises ContextError: *context* cannot be parsed.
    :raises HookError: a hook raised (anything, ``SystemExit`` included).
    """
    state: AgentBridgeState = BRIDGE_STATE.get(agent_id)
    if event not in HOOK_EVENTS:
        raise ValueError(f"unknown hook event {event!r}; expected one of {', '.join(HOOK_EVENTS)}")
    hooks = state.hooks.for_event(event)
    if not hooks:
        return
    parsed = parse_context(context)
    state.stats.hooks_fired += len(hooks)
    await _in_worker(_run_hooks_sync, agent_id, event, hooks, parsed)


async def fire_hook_quietly(state: AgentBridgeState, agent_id: str, event: str, context: Mapping[str, Any]) -> None:
    """Fire *event*; a failing hook is logged (agent id and event named), never raised.

    Used around chats and tool calls, where hooks observe and must not change the outcome.
    """
    hooks = state.hooks.for_event(event)
    if not hooks:
        return
    state.stats.hooks_fired += len(hooks)
    try:
        await _in_worker(_run_hooks_sync, agent_id, event, hooks, context)
    except HookError as exc:
        state.stats.hook_errors += 1
        try:
            logger.warning("%s", exc, exc_info=exc.__cause__)
        except BaseException:  # noqa: BLE001 - a hook's exception that cannot even be logged
            logger.warning("%s (its traceback could not be formatted)", exc)


def _confirm_sync(
    agent_id: str, tool_name: str, policies: list[tuple[str, Policy]], context: Mapping[str, Any]
) -> None:
    for name, policy in policies:
        try:
            verdict = policy(agent_id, tool_name, context)
        except BaseException as exc:
            raise PolicyError(
                agent_id,
                "policy",
                f"policy {name!r} raised {safe_repr(exc)} while checking tool {tool_name!r} for agent {agent_id!r}; "
                "the call is refused (policies fail closed)",
            ) from exc
        if verdict is None or verdict is True:
            continue
        if verdict is False:
            raise PolicyDeniedError(agent_id, tool_name, name, "denied")
        if isinstance(verdict, Deny):
            raise PolicyDeniedError(agent_id, tool_name, name, verdict.reason)
        raise PolicyError(
            agent_id,
            "policy",
            f"policy {name!r} returned {safe_repr(verdict)}; a policy must return True, None, False or Deny(reason)",
        )


async def dispatch_policy_confirm(
    agent_id: str, tool_name: str, context: str | bytes | Mapping[str, Any] | None = None
) -> None:
    """Ask every policy of *agent_id* whether *tool_name* may run, in a worker thread.

    Returns None when all approve. :func:`dispatch_tool` does this itself before every tool call;
    call it for actions the agent takes without a tool.

    Await it on the runtime loop, from agent code (inside a chat, a stream or a ``run`` command
    of the runtime the agent is registered on): that is where :data:`BRIDGE_STATE` resolves to the
    agent's runtime, where the worker threads are that runtime's, and where the sending caller's
    context is copied from. It is a coroutine function and not thread-safe; never call it from
    another thread or loop.

    :param agent_id: the agent whose policies are asked.
    :param tool_name: the name policies see.
    :param context: the context handed to every policy (see :func:`parse_context`).
    :raises UnknownAgentError: no agent is registered under *agent_id*.
    :raises AgentOwnershipError: (off a runtime thread only) several runtimes registered it.
    :raises ContextError: *context* cannot be parsed.
    :raises PolicyDeniedError: a policy refused (``False`` or :class:`Deny`); it names the agent,
        the tool, the policy and its reason.
    :raises PolicyError: a policy raised, or returned something other than ``True``, ``None``,
        ``False`` or :class:`Deny` (fail closed).
    """
    state: AgentBridgeState = BRIDGE_STATE.get(agent_id)
    await _confirm(state, agent_id, tool_name, parse_context(context))


async def _confirm(state: AgentBridgeState, agent_id: str, tool_name: str, context: Mapping[str, Any]) -> None:
    if not state.policies:
        return
    try:
        await _in_worker(_confirm_sync, agent_id, tool_name, state.policies.items(), context)
    except PolicyDeniedError:
        state.stats.denied += 1
        raise


async def _run_tool(agent_id: str, state: AgentBridgeState, tool: Tool, args: dict[str, Any]) -> Any:
    if not tool.is_async:
        if state.runs_on_caller(tool):
            call = functools.partial(call_tool_guarded, agent_id, tool.name, tool.fn, args)
            return await _callers.run_on_caller(call, agent_id, tool.name)
        loop = asyncio.get_running_loop()
        guarded = functools.partial(call_tool_guarded, agent_id, tool.name, tool.fn, args)
        return await loop.run_in_executor(
            None, _callers.callback_context().run, functools.partial(run_as_owner, current_owner(), guarded)
        )
    host = state.host
    if host is None:
        return await tool.fn(**args)
    _callers.check_host_not_blocked(host, agent_id, tool.name)
    owner = current_owner()  # the runtime whose loop this is: its core makes the oneshot
    shot = owner.core.Oneshot() if owner is not None else _select.Oneshot()
    cancel = host.spawn(guard_async_tool(agent_id, tool.name, tool.fn), args, shot, _callers.callback_context())
    # A host loop that stops or closes after the call was sent would never answer: watch it.
    return await _callers.watch_remote(shot, cancel, lambda: _host_gone(host))


def _host_gone(host: HostLoop) -> HostLoopError | None:
    # A host written before gone()/describe() existed is simply never reported gone.
    gone = getattr(host, "gone", None)
    why = gone() if callable(gone) else None
    if why is None:
        return None
    describe = getattr(host, "describe", None)
    name = describe() if callable(describe) else repr(host)
    return HostLoopError(f"the {name} this agent's async tools were registered from {why}")


async def dispatch_tool(
    agent_id: str,
    tool_name: str,
    context: str | bytes | Mapping[str, Any] | None = None,
    *,
    confirmed: bool = False,
) -> Any:
    """Run host tool *tool_name* of agent *agent_id* with the arguments in *context*.

    What an agent SDK calls when its model asks for a tool. In order: look the agent and the tool
    up, parse the context and check the arguments against the tool's signature, ask the policies,
    fire ``before_tool``, run the tool on the host side (sync: a worker thread, or the chat
    caller's thread if thread-sensitive; async: the host loop it was registered from, or its own
    task on this loop), fire ``after_tool`` (or ``on_error``) and return the tool's result. Hooks
    that fail are logged, never raised. Every step runs in a copy of the context of the caller
    that sent the command.

    Await it on the runtime loop, from agent code (inside a chat, a stream or a ``run`` command
    of the runtime the agent is registered on): that is where :data:`BRIDGE_STATE` resolves to the
    agent's runtime, where the worker threads are that runtime's, and where the sending caller's
    context is copied from. It is a coroutine function and not thread-safe; never call it from
    another thread or loop.

    :param agent_id: the agent whose tool runs.
    :param tool_name: the tool's name.
    :param context: JSON text or bytes, or a mapping, whose ``"args"`` member holds the tool's
        keyword arguments (None: no arguments).
    :param confirmed: the policies already approved this very call, through
        :func:`dispatch_policy_confirm` in an SDK's own approval step (the OpenAI Agents SDK
        adapter's ``needs_approval``), so they are not asked a second time: a policy that asks a
        person, or counts calls, sees each call exactly once.
    :returns: what the tool returned.
    :raises Exception: the tool's own exception, unchanged, with its original traceback.
    :raises ToolError: the tool raised something that cannot cross the bridge as it is
        (``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, other ``BaseException``
        subclasses, ``StopIteration``); ``__cause__`` is the original.
    :raises UnknownAgentError: no agent is registered under *agent_id*.
    :raises AgentOwnershipError: (off a runtime thread only) several runtimes registered it.
    :raises UnknownToolError: the agent has no such tool.
    :raises ContextError: *context* cannot be parsed, or the tool cannot take its arguments.
    :raises PolicyDeniedError: a policy refused the call.
    :raises PolicyError: a policy raised or returned nonsense (fail closed).
    :raises CallerGoneError: a thread-sensitive tool's caller stopped waiting, or there is none.
    :raises HostLoopError: the host loop of an async tool is stopped, closed or finished.
    :raises DeadlockError: an async tool's host loop is blocked in a blocking call waiting for
        this very command.
    :raises CommandCancelledError: the agent was unregistered while the tool ran, or the tool's
        task was cancelled.
    """
    state: AgentBridgeState = BRIDGE_STATE.get(agent_id)
    tool = state.tool(agent_id, tool_name)
    parsed = parse_context(context)
    args: dict[str, Any] = parsed["args"]
    if tool.signature is not None:
        try:
            tool.signature.bind(**args)
        except TypeError as exc:
            raise ContextError(
                f"tool {tool_name!r} of agent {agent_id!r} cannot take arguments {args!r}: {exc}"
            ) from None
    state.stats.tool_calls += 1
    if not confirmed:
        await _confirm(state, agent_id, tool_name, parsed)
    if state.hooks.has("before_tool"):
        await fire_hook_quietly(state, agent_id, "before_tool", {"tool": tool_name, "args": args})

    inner = asyncio.get_running_loop().create_task(
        run_tool_guarded(agent_id, tool_name, lambda: _run_tool(agent_id, state, tool, args))
    )
    state._inflight.add(inner)
    try:
        await asyncio.wait((inner,))
    except asyncio.CancelledError:
        inner.cancel()
        raise
    finally:
        state._inflight.discard(inner)
    if inner.cancelled():
        raise CommandCancelledError(
            f"agent {agent_id!r} was unregistered while its tool {tool_name!r} was running"
            if state.closed
            else f"tool {tool_name!r} of agent {agent_id!r} was cancelled"
        )
    error = inner.exception()
    if error is not None:
        state.stats.tool_errors += 1
        if state.hooks.has("on_error"):
            await fire_hook_quietly(
                state, agent_id, "on_error", {"tool": tool_name, "args": args, "error": safe_repr(error)}
            )
        raise error
    result = inner.result()
    if state.hooks.has("after_tool"):
        await fire_hook_quietly(state, agent_id, "after_tool", {"tool": tool_name, "args": args, "result": result})
    return result
