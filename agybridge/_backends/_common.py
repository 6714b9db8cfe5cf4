"""Types shared by the per-library modules (kept apart so they import nothing of each other)."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from agybridge._select import Oneshot

__all__ = ["Abort", "HostLoop", "OnTimeout"]

#: Makes the error a waiter's own timeout completes the oneshot with.
OnTimeout = Callable[[], BaseException]
#: Stops the remote work after a waiter's cancellation or timeout won the oneshot.
Abort = Callable[[], object]


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
