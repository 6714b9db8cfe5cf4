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
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, TypeVar

from agybridge._backends import _asyncio, _trio
from agybridge._backends._common import Abort, HostLoop, OnTimeout
from agybridge._select import Oneshot

__all__ = [
    "AsyncLibrary",
    "AsyncioHost",
    "HostLoop",
    "TrioHost",
    "await_oneshot",
    "checkpoint_if_cancelled",
    "current_async_library",
    "current_host",
    "current_scheduler",
    "host_key",
    "in_trio_run",
    "running_host_key",
    "shielded_under_trio",
]

AsyncioHost = _asyncio.AsyncioHost
TrioHost = _trio.TrioHost
in_trio_run = _trio.in_trio_run
checkpoint_if_cancelled = _trio.checkpoint_if_cancelled

AsyncLibrary = Literal["asyncio", "trio"]
T = TypeVar("T")


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
        return _trio.TrioHost(_trio.current_token())
    try:
        return _asyncio.AsyncioHost(asyncio.get_running_loop())
    except RuntimeError:
        return None


def await_oneshot(
    shot: Oneshot, timeout: float | None, on_timeout: OnTimeout, abort: Abort, spin: float = 0.0
) -> Coroutine[Any, Any, Any]:
    """Wait for *shot* under asyncio or trio and return its result (or raise its error): await it.

    A plain function returning the running library's own coroutine, so an awaited round trip
    pays no coroutine layer for the choice of library.

    *timeout* (seconds, None for none) completes the oneshot with ``on_timeout()`` if it is
    still pending then; *abort* is called whenever this waiter's cancellation or timeout
    is what completed the oneshot, to stop the remote work.

    *spin* > 0: if the caller's loop has nothing else ready to run, first poll for up to
    *spin* seconds (GIL released) before suspending. An idle loop would otherwise go to
    sleep in its selector and pay an OS wake-up for the answer; polling delays nothing
    because nothing else was runnable.
    """
    if current_async_library() == "trio":
        return _trio.await_oneshot(shot, timeout, on_timeout, abort, spin)
    return _asyncio.await_oneshot(shot, timeout, on_timeout, abort, spin)


def current_scheduler() -> tuple[Callable[[Callable[[], None]], object], str]:
    """For the calling task's loop: a thread-safe "run this soon there" and the loop's kind."""
    if _trio.in_trio_run():
        return _trio.current_token().run_sync_soon, "trio run"
    return asyncio.get_running_loop().call_soon_threadsafe, "asyncio loop"


def host_key(host: HostLoop | None) -> object | None:
    """What identifies *host*'s loop: the asyncio loop, or the trio run's token."""
    if isinstance(host, _asyncio.AsyncioHost):
        return host.loop
    if isinstance(host, _trio.TrioHost):
        token: object = host.token
        return token
    return None


def _maybe_trio() -> bool:
    """A cheap "might this thread be in a trio run?": trio names itself in sniffio's thread-local.

    ``trio.lowlevel.in_trio_run()`` costs an AttributeError on every thread outside a run,
    which every blocking call would pay once trio is imported; this check costs a dict look-up.
    """
    sniffio = sys.modules.get("sniffio")
    return sniffio is not None and getattr(sniffio.thread_local, "name", None) == "trio"


def running_host_key() -> object | None:
    """The loop running on this thread (an asyncio loop or a trio run's token), or None."""
    loop = asyncio._get_running_loop()
    if loop is not None:
        return loop
    if _maybe_trio() and _trio.in_trio_run():
        token: object = _trio.current_token()
        return token
    return None


async def shielded_under_trio(awaitable: Awaitable[T]) -> T:
    """Await *awaitable*; under trio shielded from the caller's cancel scope.

    trio's cancellation is level-triggered: a clean-up awaited inside a cancelled scope
    would be cancelled at once. asyncio's is edge-triggered and needs no shield.
    """
    if _trio.in_trio_run():
        result: T = await _trio.shielded(awaitable)
        return result
    return await awaitable
