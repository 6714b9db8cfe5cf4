"""Containment of what host callbacks raise, so nothing they raise can kill or stall the bridge.

A tool, hook or policy may raise anything. Two kinds of exception cannot cross the bridge as
they are: ``BaseException`` subclasses that are not ``Exception`` (``SystemExit``,
``KeyboardInterrupt``, ``GeneratorExit``, ...) make an asyncio task re-raise them out of the
event loop, killing the runtime thread; ``StopIteration`` cannot be stored in an asyncio
future at all, so the call it ended would never complete. This module names those kinds and
turns them into a :class:`~agybridge.ToolError` that carries the original as its cause.
Cancellation (asyncio's, or trio's ``Cancelled``) is the one ``BaseException`` left alone
in async callbacks, because it is how the bridge stops them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from agybridge.errors import ToolError

__all__ = [
    "call_tool_guarded",
    "escapes",
    "guard_async_tool",
    "log_failure",
    "run_tool_guarded",
    "safe_repr",
    "tool_error",
]


def escapes(exc: BaseException) -> bool:
    """Would *exc* break the bridge if it crossed it unchanged?"""
    return not isinstance(exc, Exception) or isinstance(exc, (StopIteration, StopAsyncIteration))


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, asyncio.CancelledError):
        return True
    trio = sys.modules.get("trio")
    return trio is not None and isinstance(exc, trio.Cancelled)


def safe_repr(value: object) -> str:
    """``repr(value)``, or a stand-in when that raises: a callback's exception (or a policy's
    verdict) goes into messages, and a hostile ``__repr__`` must not escape from there."""
    try:
        return repr(value)
    except BaseException:  # noqa: BLE001 - even a KeyboardInterrupt from __repr__ stays here
        return f"<{type(value).__name__} object (its repr() raised)>"


def log_failure(logger: logging.Logger, message: str, *args: object) -> None:
    """``logger.exception(...)`` that cannot raise: formatting a hostile exception's
    traceback can raise anything, and the clean-up that logs it must go on."""
    try:
        logger.exception(message, *args)
    except BaseException:  # noqa: BLE001 - log without the traceback, or not at all
        try:
            logger.error(message + " (its traceback could not be formatted)", *args)
        except BaseException:  # noqa: BLE001
            pass


def tool_error(agent_id: str, tool_name: str, exc: BaseException) -> ToolError:
    """The error a tool call fails with when the tool raised *exc* of an escaping kind."""
    error = ToolError(
        agent_id,
        tool_name,
        f"tool {tool_name!r} of agent {agent_id!r} raised {safe_repr(exc)}; "
        "the tool call fails with this error, the runtime keeps running",
    )
    error.__cause__ = exc
    return error


def call_tool_guarded(agent_id: str, tool_name: str, fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    """Call a sync tool in a worker thread; an escaping exception becomes a :class:`ToolError`.

    It must be converted here, in the worker: a ``StopIteration`` that reached the asyncio
    future would be refused by it, and the tool call would hang.
    """
    try:
        return fn(**kwargs)
    except BaseException as exc:
        if escapes(exc):
            raise tool_error(agent_id, tool_name, exc) from exc
        raise


async def run_tool_guarded(agent_id: str, tool_name: str, body: Callable[[], Awaitable[Any]]) -> Any:
    """Await a tool call on the runtime loop; an escaping exception becomes a :class:`ToolError`.

    The last line of defence for every kind of tool (an async tool on this loop, a tool
    on a host loop whose oneshot holds a ``SystemExit``): nothing but a cancellation or an
    ``Exception`` may leave the task the tool runs in.
    """
    try:
        return await body()
    except BaseException as exc:
        if escapes(exc) and not _is_cancellation(exc):
            raise tool_error(agent_id, tool_name, exc) from exc
        raise


def guard_async_tool(agent_id: str, tool_name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap an async tool so that, on a host loop too, it can only end in a result, an
    ``Exception`` or a cancellation: a ``KeyboardInterrupt`` escaping a host task would
    otherwise stop the host's own loop."""

    async def guarded(**kwargs: Any) -> Any:
        return await run_tool_guarded(agent_id, tool_name, lambda: fn(**kwargs))

    return guarded
