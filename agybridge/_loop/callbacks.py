"""The host callbacks agent code makes from the runtime loop: ``dispatch_tool``,
``dispatch_hook``, ``dispatch_policy_confirm``, and the context they run in.

The agent SDK calls back with nothing but an agent id and a serialized context, so each
callback looks the agent's state up in :data:`~agybridge.BRIDGE_STATE` (the lock is held only
for the map operation, never across an ``await``) and every slow step runs after it.

Host-side work never runs on the runtime loop: synchronous tools, hooks and policies run in
worker threads (the runtime's executor), and an async tool runs on the host loop it was
registered from (an asyncio loop or a trio run), so the runtime loop keeps serving every
other coroutine while a tool works. A thread-sensitive sync tool runs on the thread of the
caller whose chat caused it. Every callback runs in a copy of the context of the command
that caused it, so the caller's context variables (a tracing span, say) reach it.

Runs on the runtime loop thread (the coroutines) and in its workers (the sync steps).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from agybridge import _select
from agybridge._agent_state import HOOK_EVENTS, AgentBridgeState, Deny, Hook, Policy, Tool
from agybridge._backends import HostLoop, await_oneshot, host_key
from agybridge._loop.containment import (
    call_tool_guarded,
    escapes,
    guard_async_tool,
    run_tool_guarded,
    safe_repr,
    tool_error,
)
from agybridge._origin import Work, current_caller, current_owner, run_as_owner, set_caller
from agybridge._registry import BRIDGE_STATE
from agybridge.errors import (
    CallerGoneError,
    CommandCancelledError,
    ContextError,
    DeadlockError,
    HookError,
    HostLoopError,
    PolicyDeniedError,
    PolicyError,
)

__all__ = [
    "callback_context",
    "dispatch_hook",
    "dispatch_policy_confirm",
    "dispatch_tool",
    "fire_hook_quietly",
    "parse_context",
]

logger = logging.getLogger("agybridge")

#: How often a call waiting on another thread's loop checks that the loop is still there.
POLL_SECONDS = 0.05


def callback_context() -> contextvars.Context:
    """A copy of the current (command's) context for a callback, without the caller marker.

    The callback may send commands of its own; they must not inherit this chat's caller.
    """
    ctx = contextvars.copy_context()
    if current_caller() is not None:
        set_caller(ctx, None)
    return ctx


def check_host_not_blocked(host: HostLoop, agent_id: str, tool_name: str) -> None:
    """Before sending an async tool to *host*: fail at once if this command's caller blocks it."""
    caller = current_caller()
    if caller is None or caller.blocked_host is None or caller.blocked_host is not host_key(host):
        return
    message = (
        f"async tool {tool_name!r} of agent {agent_id!r} must run on {host.describe()}, whose thread is "
        f"blocked waiting for this very call, so it could never run; on that loop await the 'a*' call "
        "(runtime.achat / runtime.arun) instead of the blocking one"
    )
    caller.shot.set_exception(DeadlockError(message))  # the blocked caller raises it at once
    raise DeadlockError(message)


def _new_oneshot() -> Any:
    owner = current_owner()  # the runtime whose loop this is: its core makes the oneshot
    return owner.core.Oneshot() if owner is not None else _select.Oneshot()


async def watch_remote(shot: Any, abort: Callable[[], object], check: Callable[[], BaseException | None]) -> Any:
    """Await *shot*, completed on another thread's loop; fail it with ``check()`` once that
    reports the loop gone (a loop that stopped or closed would otherwise never answer)."""
    loop = asyncio.get_running_loop()
    timer: list[asyncio.TimerHandle] = []

    def tick() -> None:
        if shot.done():
            return
        error = check()
        if error is not None:
            if shot.set_exception(error):
                abort()
            return
        timer[0] = loop.call_later(POLL_SECONDS, tick)

    timer.append(loop.call_later(POLL_SECONDS, tick))
    try:
        return await await_oneshot(shot, None, TimeoutError, abort)
    finally:
        timer[0].cancel()


async def run_on_caller(fn: Callable[[], Any], agent_id: str, tool_name: str) -> Any:
    """Run thread-sensitive *fn* on the thread of the caller whose chat caused this call.

    *fn* is the tool itself: what it raises is contained here (a ``ToolError`` for the kinds
    that cannot cross), except an interrupt of a blocked sync caller, which leaves that
    caller's call and cancels the command instead (see :class:`~agybridge._origin.Work`).
    """
    caller = current_caller()
    if caller is None:
        raise CallerGoneError(
            f"tool {tool_name!r} of agent {agent_id!r} is thread-sensitive, but this call was not made on behalf "
            "of a chat() / achat() caller waiting for it, so there is no caller thread to run it on"
        )
    shot = _new_oneshot()

    def convert(exc: BaseException) -> BaseException:
        return tool_error(agent_id, tool_name, exc) if escapes(exc) else exc

    # As the runtime's callback, like a tool in its worker threads: BRIDGE_STATE finds its agents.
    work = Work(functools.partial(run_as_owner, current_owner(), fn), callback_context(), shot, convert)
    caller.post(work)
    return await watch_remote(shot, shot.cancel, caller.gone)


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
        None, callback_context().run, functools.partial(run_as_owner, current_owner(), fn, *args)
    )


async def dispatch_hook(agent_id: str, event: str, context: str | bytes | Mapping[str, Any] | None = None) -> None:
    """Run agent *agent_id*'s hooks for *event* in a worker thread.

    Every hook runs even if one raises; the first failure is then raised as :class:`HookError`
    naming the agent and the event, with the hook's exception as ``__cause__``. The bridge itself
    fires the chat and tool events (and only logs their failures); this is for agent code firing
    them on its own.

    Await it where :func:`dispatch_tool` is awaited, on the runtime loop from agent code (that
    function says why); never call it from another thread or loop.

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

    Await it where :func:`dispatch_tool` is awaited, on the runtime loop from agent code (that
    function says why); never call it from another thread or loop.

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
            return await run_on_caller(functools.partial(tool.fn, **args), agent_id, tool.name)
        loop = asyncio.get_running_loop()
        guarded = functools.partial(call_tool_guarded, agent_id, tool.name, tool.fn, args)
        return await loop.run_in_executor(
            None, callback_context().run, functools.partial(run_as_owner, current_owner(), guarded)
        )
    host = state.host
    if host is None:
        return await tool.fn(**args)
    check_host_not_blocked(host, agent_id, tool.name)
    owner = current_owner()  # the runtime whose loop this is: its core makes the oneshot
    shot = owner.core.Oneshot() if owner is not None else _select.Oneshot()
    cancel = host.spawn(guard_async_tool(agent_id, tool.name, tool.fn), args, shot, callback_context())
    # A host loop that stops or closes after the call was sent would never answer: watch it.
    return await watch_remote(shot, cancel, lambda: _host_gone(host))


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
    state.tool_started(inner)
    try:
        await asyncio.wait((inner,))
    except asyncio.CancelledError:
        inner.cancel()
        raise
    finally:
        state.tool_finished(inner)
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
