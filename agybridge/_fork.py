"""Surviving ``fork()``: a runtime made before the fork works in the child, as if made there.

Services import their app, and with it a module-level runtime, before they fork workers
(gunicorn ``--preload``, uWSGI without ``lazy-apps``, Celery's prefork pool,
:mod:`multiprocessing`'s ``fork`` start method). The child has a copy of the runtime object
but only the thread that forked: the runtime thread, its loop, its worker threads are gone,
and any lock another thread held at that moment stays held forever in the copy.

So the child never touches the parent's parts. The first use of a runtime in a process other
than the one its parts were built in (detected by pid, so a fork made in C that bypasses
``os.register_at_fork``, as uWSGI and some extensions do, is caught too) rebuilds them all:
queue, registry, agent table, dispatcher, loop thread and worker pool, new and unlocked.
What the rebuilt runtime keeps of the parent is exactly two things: its configuration, and
the record of its agent registrations (id, factory, state), which it replays on its new loop
before any agent command runs there, so the factories run again, in the child. In-flight
work, held contexts and metrics stay with the parent. A runtime shut down (or dead) in the
parent stays so in the child; ``RuntimeConfig(after_fork="error")`` makes a started runtime
raise :class:`ForkedRuntimeError` in the child instead of restarting.

Process-wide state has the same problem: :func:`process_lock` gives each process its own
lock (made on first use in that process, so never one a vanished thread holds), and
:mod:`agybridge._registry` resets its runtime set and state owners by pid with it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from agybridge._backends._asyncio import start_task
from agybridge._dispatcher import Handler
from agybridge._loop_thread import DIED, NEW, RUNNING
from agybridge.commands import PyCommand, RegisterAgent, UnregisterAgent

if TYPE_CHECKING:
    from agybridge._agents import AgentTable
    from agybridge.runtime import PythonRuntime

__all__ = ["AFTER_FORK_MODES", "ForkGuard", "adopt", "process_lock"]

logger = logging.getLogger("agybridge")

#: The values of ``RuntimeConfig.after_fork``.
AFTER_FORK_MODES = ("restart", "error")

# One lock per (process id, purpose). ``dict.setdefault`` is atomic, so every thread of a new
# process gets the same new lock, which no thread of the parent can be holding.
_PROCESS_LOCKS: dict[tuple[int, str], threading.Lock] = {}


def process_lock(purpose: str) -> threading.Lock:
    """This process's own lock for *purpose* (a new one in every forked child)."""
    key = (os.getpid(), purpose)
    lock = _PROCESS_LOCKS.get(key)
    if lock is None:
        lock = _PROCESS_LOCKS.setdefault(key, threading.Lock())
        for stale in [k for k in list(_PROCESS_LOCKS) if k[0] != key[0]]:  # list(): one atomic copy
            _PROCESS_LOCKS.pop(stale, None)  # the parent's, copied into this child
    return lock


# The parent's parts, as copied into this child: never used, never collected (see adopt).
_INHERITED: list[tuple[Any, ...]] = []

Handlers = dict[type[PyCommand], Handler]
#: What a registration needs to be made again: the factory and the state.
Registration = tuple[Callable[[], Any], Any]


class ForkGuard:
    """Per runtime: the pid its parts were built in, and its registrations, to replay in a child.

    The registrations are written on the runtime loop only (by the register and unregister
    handlers this guard wraps) and read by :func:`adopt` in a child, where that loop is gone.
    A plain dict: an insert or a pop is atomic, so the child always copies a consistent one.
    """

    __slots__ = ("pid", "registrations", "replay")

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.registrations: dict[str, Registration] = {}
        #: In a rebuilt child runtime: the replay of the parent's registrations, until it ends.
        self.replay: _Replay | None = None

    def handlers(
        self, table: AgentTable, handlers: Mapping[type[PyCommand], Handler]
    ) -> dict[type[PyCommand], Handler]:
        """*handlers* with the agent commands recording registrations (and, in a child, replaying)."""
        wrapped = dict(handlers)
        register, unregister = handlers[RegisterAgent], handlers[UnregisterAgent]

        async def record_register(cmd: RegisterAgent) -> None:
            await register(cmd)
            self.registrations.pop(cmd.agent_id, None)
            self.registrations[cmd.agent_id] = (cmd.factory, cmd.state)

        async def record_unregister(cmd: UnregisterAgent) -> None:
            try:
                await unregister(cmd)
            finally:
                if cmd.agent_id not in table.ids():  # gone, even if its close was cut short
                    self.registrations.pop(cmd.agent_id, None)

        wrapped[RegisterAgent], wrapped[UnregisterAgent] = record_register, record_unregister
        replay = self.replay
        if replay is None:
            return wrapped
        # In a child: the first command of any kind starts the replay, and every command waits
        # for it to end, so a chat sent right after the first use finds its agent even when its
        # factory is a coroutine that suspends. Then the plain handlers are put back.
        replay.handlers = wrapped
        return {kind: replay.gated(handler) for kind, handler in wrapped.items()}


class _Replay:
    """The parent's registrations, made again on the child's new loop before its first command runs."""

    def __init__(self, runtime: PythonRuntime, registrations: list[tuple[str, Registration]]) -> None:
        self._runtime = runtime
        self._registrations = registrations
        self._done: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        #: The handlers without the gate, for the dispatcher once the replay has ended.
        self.handlers: Handlers = {}

    def gated(self, handler: Handler) -> Handler:
        async def after_replay(cmd: Any) -> Any:
            if self._registrations or (self._done is not None and not self._done.is_set()):
                await self.wait()
            return await handler(cmd)

        return after_replay

    async def wait(self) -> None:
        if self._done is None:
            self._done = asyncio.Event()
            # In an empty context: not the context of whichever command came first.
            self._task = start_task(asyncio.get_running_loop(), self._run(), contextvars.Context())
        await self._done.wait()

    async def _run(self) -> None:
        assert self._done is not None
        runtime = self._runtime
        table = runtime._agents
        record = runtime._fork.registrations
        pending, self._registrations = self._registrations, []
        try:
            for agent_id, (factory, state) in pending:
                cmd = RegisterAgent(agent_id, factory, state, oneshot=runtime.core.Oneshot())
                try:
                    await table.register(cmd)
                except Exception:
                    logger.exception(
                        "agent %r could not be registered again in the forked child (pid %d); it is not "
                        "registered there",
                        agent_id,
                        os.getpid(),
                    )
                else:
                    record.pop(agent_id, None)
                    record[agent_id] = (factory, state)
        finally:
            self._done.set()
            runtime._fork.replay = None
            # Later commands pay nothing for the replay: the dispatcher gets the plain handlers.
            runtime._dispatcher._handlers.update(self.handlers)


def adopt(runtime: PythonRuntime) -> None:
    """Make *runtime*'s parts this process's: rebuild them in a forked child (see the module doc).

    Called by ``PythonRuntime._here`` when the pid differs from the one its parts were built
    in; serialised per process, so threads of a new worker racing to the first use rebuild once.
    Never raises: with ``after_fork="error"`` the rebuilt runtime refuses commands instead.
    """
    from agybridge import _registry

    with process_lock("adopt"):
        guard = runtime._fork
        pid = os.getpid()
        if guard.pid == pid:
            return  # another thread of this process adopted it first
        old = runtime._thread
        state = old._state  # the parent's state at the fork, frozen in this copy
        refuse = runtime.config.after_fork == "error" and state != NEW
        # The parent's copy must never act in this child: if the fork was made on its thread,
        # its loop may run on here, and its end must not report a death into the new parts.
        old._on_death = lambda _cause, _reason: None
        old._on_closing = old._on_exit = lambda: None
        old._state = "closed"
        # Kept alive, never closed: the parent's loop shares its epoll instance and self-pipe
        # with the parent (fork copies descriptors, not what they point to), so closing or
        # collecting it here could unregister the parent's own wake-up from the parent's loop.
        _INHERITED.append((old, runtime._dispatcher, runtime._agents, runtime._queue, runtime._registry))
        registrations = list(guard.registrations.items())
        for _agent_id, (_factory, bridge_state) in registrations:
            _registry.release_state(bridge_state)  # it belonged to the parent's registry
            inflight = getattr(bridge_state, "_inflight", None)
            if inflight is not None:
                inflight.clear()  # tool calls of the parent's loop
        fresh = ForkGuard()
        # Published last: until the parts below are all built, another thread of this child
        # must not take the fast path of PythonRuntime._here (it waits on the lock instead).
        fresh.pid = guard.pid
        if state in (NEW, RUNNING) and registrations and not refuse:
            fresh.replay = _Replay(runtime, registrations)
        runtime._fork = fresh
        runtime._build_parts()
        if state not in (NEW, RUNNING):
            # Shut down, shutting down or dead in the parent: the same here, without a thread.
            runtime._thread.begin_stop(lambda _previous: runtime._queue.close())
            if state == DIED:
                runtime._thread._state = DIED
                runtime._thread._death, runtime._thread._death_reason = old._death, old._death_reason
        if refuse:
            # after_fork="error": the new loop thread counts as the parent's, so every command
            # raises ForkedRuntimeError (LoopThread.check_fork), while metrics, agent_ids and
            # shutdown answer for an empty runtime and BRIDGE_STATE finds nothing of it here.
            runtime._thread.belongs_to(guard.pid)
        else:
            _registry.track_runtime(runtime)
        fresh.pid = pid
        logger.debug("PythonRuntime rebuilt in forked child %d (parent state %s)", pid, state)
