"""The async libraries agybridge serves, one module each: ``_asyncio`` and ``_trio``.

This package answers the two questions the rest of agybridge asks about its caller
("which library is running me?" and "where would a host tool run?") in one place, and
picks the library-specific way to await a :class:`~agybridge.Oneshot`.

The exactly-once rule for a caller that gives up (cancellation or timeout): the caller
tries to complete the oneshot itself (``cancel()`` or ``set_exception(timeout)``). If that
wins, the outcome of the command *is* that cancellation or timeout and ``abort()`` tells
the runtime to stop the remote work. If it loses, a result was already delivered: a trio
caller receives it (trio then delivers the cancellation at its next checkpoint); an asyncio
caller still propagates its own ``CancelledError`` (swallowing a task's cancellation breaks
``TaskGroup`` and ``timeout()``), and the command's recorded outcome stays the result.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol

from agybridge._backends import _asyncio, _trio
from agybridge._select import Oneshot

__all__ = ["AsyncLibrary", "HostLoop", "await_oneshot", "current_async_library", "current_host"]

AsyncLibrary = Literal["asyncio", "trio"]


class HostLoop(Protocol):
    """An event loop on the host side that can run an async tool and report back."""

    def spawn(
        self,
        fn: Callable[..., Awaitable[Any]],
        kwargs: Mapping[str, Any],
        shot: Oneshot,
        context: contextvars.Context | None = None,
    ) -> Callable[[], None]:
        """Start ``fn(**kwargs)`` on the host loop in *context* (a copy of the tool call's),
        complete *shot* with its outcome, and return a function that cancels it (callable
        from any thread). Raises :class:`HostLoopError` if the loop is already gone."""
        ...

    def gone(self) -> str | None:
        """Why the loop can no longer run a tool ("is closed", ...), or None while it can."""
        ...

    def describe(self) -> str:
        """The loop, for messages."""
        ...


def current_async_library() -> AsyncLibrary:
    """Name the async library running the current task; RuntimeError outside both."""
    if _trio.in_trio_run():
        return "trio"
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "this coroutine must be awaited from asyncio or trio; from plain threads use the "
            "blocking API (send_command, chat, run)"
        ) from None
    return "asyncio"


def current_host() -> HostLoop | None:
    """The host loop of the calling code: its trio run, its asyncio loop, or None."""
    if _trio.in_trio_run():
        import trio

        return _trio.TrioHost(trio.lowlevel.current_trio_token())
    try:
        return _asyncio.AsyncioHost(asyncio.get_running_loop())
    except RuntimeError:
        return None


async def await_oneshot(
    shot: Oneshot,
    timeout: float | None,
    on_timeout: Callable[[], BaseException],
    abort: Callable[[], object],
    spin: float = 0.0,
) -> Any:
    """Wait for *shot* under asyncio or trio and return its result (or raise its error).

    *timeout* (seconds, None for none) completes the oneshot with ``on_timeout()`` if it is
    still pending then; *abort* is called whenever this waiter's cancellation or timeout
    is what completed the oneshot, to stop the remote work.

    *spin* > 0: if the caller's loop has nothing else ready to run, first poll for up to
    *spin* seconds (GIL released) before suspending. An idle loop would otherwise go to
    sleep in its selector and pay an OS wake-up for the answer; polling delays nothing
    because nothing else was runnable.
    """
    if current_async_library() == "trio":
        return await _trio.await_oneshot(shot, timeout, on_timeout, abort, spin)
    return await _asyncio.await_oneshot(shot, timeout, on_timeout, abort, spin)
