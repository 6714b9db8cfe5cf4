"""The caller behind a command, as the runtime loop sees it: for thread-sensitive tools and
for deadlocks on a host loop.

Two questions about "who sent this command?" are answered here, through one context
variable set in the command's context before it is submitted (so every tool call the
command causes, in any task the agent spawns, finds it):

* A **thread-sensitive** sync tool must run on the caller's own thread. A blocked sync
  caller then serves its own tool calls while it waits (as asgiref's
  ``CurrentThreadExecutor`` does for Django); an asyncio or trio caller gets the call
  scheduled on its loop's thread. A caller that stopped waiting fails the call with
  :class:`CallerGoneError` instead of it running elsewhere.
* A **blocking** call made on a thread whose own loop (asyncio loop or trio run) hosts
  async tools the call needs can never finish: the loop cannot run while its thread is
  blocked. ``chat()`` is refused up front when the agent's tools live there; any other
  blocking call fails the moment one of its tool calls is sent to the blocked loop.

Both cost nothing on the fast path: until a host loop or a thread-sensitive tool exists, a
blocking caller checks one flag; after that, no caller object is made unless the calling
thread runs a loop, or the chat's agent has a thread-sensitive tool.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import queue
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from agybridge import _select
from agybridge._backends import HostLoop, _seen, await_oneshot
from agybridge._backends._asyncio import AsyncioHost
from agybridge._backends._trio import TrioHost, checkpoint_if_cancelled, in_trio_run
from agybridge._loop_thread import current_owner, run_as_owner
from agybridge.commands import Chat, PyCommand
from agybridge.errors import CallerGoneError, DeadlockError

__all__ = [
    "BlockingCaller",
    "Caller",
    "LoopCaller",
    "before_async_send",
    "blocking_caller",
    "callback_context",
    "check_host_not_blocked",
    "note_thread_sensitive",
    "run_on_caller",
    "watch_remote",
]

#: The caller of the command whose context this is (unset: nobody needs to know).
_CALLER: ContextVar[Caller | None] = ContextVar("agybridge_caller", default=None)

#: Becomes True for good once any thread-sensitive tool or state exists; until then the
#: callers skip the per-chat look-up entirely.
_thread_sensitive_seen = False

#: How often a call waiting on another thread's loop checks that the loop is still there.
POLL_SECONDS = 0.05


def note_thread_sensitive() -> None:
    """A thread-sensitive tool or state was made: chats start looking for them."""
    global _thread_sensitive_seen
    _thread_sensitive_seen = True
    _seen.enable()


def _wants_caller_thread(agent_id: str, registry: Any) -> bool:
    # The sending runtime's own registry: through BRIDGE_STATE, off every runtime thread, an id
    # two runtimes both registered is ambiguous (AgentOwnershipError), yet this chat has one.
    state = registry.find(agent_id)
    return state is not None and bool(state.has_thread_sensitive_tools())


def _host_key(host: HostLoop | None) -> object | None:
    if isinstance(host, AsyncioHost):
        return host.loop
    if isinstance(host, TrioHost):
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


def _running_host_key() -> object | None:
    """The loop running on this thread (an asyncio loop or a trio run's token), or None."""
    loop = asyncio._get_running_loop()
    if loop is not None:
        return loop
    if _maybe_trio() and in_trio_run():
        import trio

        token: object = trio.lowlevel.current_trio_token()
        return token
    return None


class _Work:
    """One thread-sensitive tool call, to be run on the caller's thread."""

    __slots__ = ("ctx", "fn", "shot")

    def __init__(self, fn: Callable[[], Any], ctx: contextvars.Context, shot: Any) -> None:
        self.fn = fn
        self.ctx = ctx
        self.shot = shot

    def run(self, caller_shot: Any, *, reraise: bool) -> None:
        """Run the call (on the caller's thread) unless it was withdrawn or its caller left."""
        if self.shot.done():
            return  # the tool call was cancelled before it started
        if caller_shot.done():
            self.shot.set_exception(CallerGoneError("the caller stopped waiting before its tool call could run"))
            return
        try:
            result = self.ctx.run(self.fn)
        except BaseException as exc:
            self.shot.set_exception(exc)
            if reraise and not isinstance(exc, Exception):
                raise  # Ctrl-C in a blocked sync caller still interrupts it
        else:
            self.shot.set_result(result)


class Caller:
    """Base of the caller kinds; ``blocked_host`` is the loop a blocking caller holds up."""

    blocked_host: object | None = None
    shot: Any

    def post(self, work: _Work) -> None:
        """Run *work* on the caller's thread, or fail it with :class:`CallerGoneError`."""
        raise NotImplementedError

    def gone(self) -> BaseException | None:
        """The error for a call that can no longer reach this caller, or None."""
        raise NotImplementedError


class BlockingCaller(Caller):
    """A sync caller blocked in ``send_command``; it runs posted work while it waits."""

    def __init__(self, cmd: PyCommand, blocked_host: object | None, serves: bool) -> None:
        self.shot = cmd.oneshot
        self.label = cmd.describe()
        self.blocked_host = blocked_host
        self.thread = threading.current_thread().name
        self._inbox: queue.SimpleQueue[_Work | None] | None = queue.SimpleQueue() if serves else None
        self._lock = threading.Lock()
        self._closed = False

    def gone(self) -> BaseException | None:
        if self._closed or self.shot.done():
            return CallerGoneError(
                f"the thread {self.thread!r} that sent {self.label} stopped waiting (it timed out, was "
                "interrupted or got its answer), so its thread-sensitive tool call cannot run there"
            )
        return None

    def post(self, work: _Work) -> None:
        with self._lock:
            error = self.gone() if self._inbox is not None else CallerGoneError("this caller serves no tool calls")
            if error is None and self._inbox is not None:
                self._inbox.put(work)
                return
        work.shot.set_exception(error)

    def wait(self, limit: float, spin: float) -> bool:
        """Wait for the command's outcome (True) or *limit* seconds (False), serving posted work."""
        try:
            if self._inbox is None:
                return bool(self.shot.wait(limit, spin))
            return self._serve(self._inbox, limit)
        finally:
            self._close()

    def _serve(self, inbox: queue.SimpleQueue[_Work | None], limit: float) -> bool:
        # The oneshot's completion and a posted call both arrive in the inbox, so one blocking
        # get() wakes for either; the fast path (no thread-sensitive tool) never gets here.
        self.shot.add_done_callback(lambda _shot: inbox.put(None))
        deadline = time.monotonic() + limit
        while True:
            remaining = min(deadline - time.monotonic(), threading.TIMEOUT_MAX)
            if remaining <= 0:
                return bool(self.shot.done())
            try:
                work = inbox.get(timeout=remaining)
            except queue.Empty:
                return bool(self.shot.done())
            if work is None:
                return True
            work.run(self.shot, reraise=True)

    def _close(self) -> None:
        with self._lock:
            self._closed = True
        if self._inbox is None:
            return
        while True:
            try:
                work = self._inbox.get_nowait()
            except queue.Empty:
                return
            if work is not None:
                work.shot.set_exception(self.gone())


class LoopCaller(Caller):
    """An asyncio or trio caller awaiting the command: tool calls run on its loop's thread."""

    def __init__(self, cmd: PyCommand) -> None:
        self.shot = cmd.oneshot
        self.label = cmd.describe()
        if in_trio_run():
            import trio

            self._schedule: Callable[[Callable[[], None]], object] = trio.lowlevel.current_trio_token().run_sync_soon
            self._where = "trio run"
        else:
            self._schedule = asyncio.get_running_loop().call_soon_threadsafe
            self._where = "asyncio loop"

    def gone(self) -> BaseException | None:
        if self.shot.done():
            return CallerGoneError(
                f"the {self._where} task that sent {self.label} stopped waiting (cancelled, timed out or "
                "answered), so its thread-sensitive tool call cannot run there"
            )
        return None

    def post(self, work: _Work) -> None:
        error = self.gone()
        if error is None:
            try:
                self._schedule(lambda: work.run(self.shot, reraise=False))
                return
            except RuntimeError:  # the loop is closed / the run finished (RunFinishedError)
                error = CallerGoneError(f"the {self._where} that sent {self.label} is gone")
        work.shot.set_exception(error)


# -- caller side ------------------------------------------------------------------------------


def blocking_caller(cmd: PyCommand, registry: Any) -> BlockingCaller | None:
    """For ``send_command``, before submitting: the caller object, or None on the fast path.

    Raises :class:`DeadlockError` for a ``chat()`` made on the loop that hosts the agent's
    async tools.
    """
    if not _seen.caller_checks:
        return None  # the fast path: no host loop, no thread-sensitive tool anywhere
    here = _running_host_key()
    serves = _thread_sensitive_seen and type(cmd) is Chat and _wants_caller_thread(cmd.agent_id, registry)
    if here is None and not serves:
        return None
    if here is not None and isinstance(cmd, Chat):
        _refuse_chat_on_its_host(cmd, here, registry)
    caller = BlockingCaller(cmd, here, serves)
    cmd.context.run(_CALLER.set, caller)
    return caller


def _refuse_chat_on_its_host(cmd: Chat, here: object, registry: Any) -> None:
    state = registry.find(cmd.agent_id)
    if state is None or state.host is None or _host_key(state.host) is not here:
        return
    if any(tool.is_async for tool in list(state.tools.values())):
        raise DeadlockError(
            f"chat() with agent {cmd.agent_id!r} would block {state.host.describe()}, which runs that agent's "
            "async tools, so they could never run; on this loop use 'await runtime.achat(...)'"
        )


async def before_async_send(cmd: PyCommand, registry: Any) -> None:
    """For ``asend_command``, before submitting: trio's cancelled-scope rule, the loop caller."""
    if asyncio._get_running_loop() is None and in_trio_run():
        try:
            await checkpoint_if_cancelled()  # an already-cancelled scope never submits
        except BaseException:
            if isinstance(cmd, PyCommand):
                cmd.oneshot.cancel()
            raise
    if _thread_sensitive_seen and type(cmd) is Chat and _wants_caller_thread(cmd.agent_id, registry):
        cmd.context.run(_CALLER.set, LoopCaller(cmd))


# -- runtime loop side ------------------------------------------------------------------------


def callback_context() -> contextvars.Context:
    """A copy of the current (command's) context for a callback, without the caller marker.

    The callback may send commands of its own; they must not inherit this chat's caller.
    """
    ctx = contextvars.copy_context()
    if _CALLER.get() is not None:
        ctx.run(_CALLER.set, None)
    return ctx


def check_host_not_blocked(host: HostLoop, agent_id: str, tool_name: str) -> None:
    """Before sending an async tool to *host*: fail at once if this command's caller blocks it."""
    caller = _CALLER.get()
    if caller is None or caller.blocked_host is None or caller.blocked_host is not _host_key(host):
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
    """Run thread-sensitive *fn* on the thread of the caller whose chat caused this call."""
    caller = _CALLER.get()
    if caller is None:
        raise CallerGoneError(
            f"tool {tool_name!r} of agent {agent_id!r} is thread-sensitive, but this call was not made on behalf "
            "of a chat() / achat() caller waiting for it, so there is no caller thread to run it on"
        )
    shot = _new_oneshot()
    # As the runtime's callback, like a tool in its worker threads: BRIDGE_STATE finds its agents.
    work = _Work(functools.partial(run_as_owner, current_owner(), fn), callback_context(), shot)
    caller.post(work)
    return await watch_remote(shot, shot.cancel, caller.gone)
