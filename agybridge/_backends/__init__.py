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
from typing import Any, Literal

from agybridge._backends import _asyncio, _trio
from agybridge._backends._common import Abort, HostLoop, OnTimeout
from agybridge._select import Oneshot

__all__ = ["AsyncLibrary", "HostLoop", "await_oneshot", "current_async_library", "current_host"]

AsyncLibrary = Literal["asyncio", "trio"]


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
    shot: Oneshot, timeout: float | None, on_timeout: OnTimeout, abort: Abort, spin: float = 0.0
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
    library = _trio if current_async_library() == "trio" else _asyncio
    return await library.await_oneshot(shot, timeout, on_timeout, abort, spin)
