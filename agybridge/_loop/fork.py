"""Surviving ``fork()``, on the loop's side: the record of registrations and their replay.

Services import their app, and with it a module-level runtime, before they fork workers
(gunicorn ``--preload``, uWSGI without ``lazy-apps``, Celery's prefork pool,
:mod:`multiprocessing`'s ``fork`` start method). The child has a copy of the runtime object
but only the thread that forked: the runtime thread, its loop, its worker threads are gone,
and any lock another thread held at that moment stays held forever in the copy.

So the child never touches the parent's parts. The first use of a runtime in a process other
than the one its parts were built in (detected by pid, so a fork made in C that bypasses
``os.register_at_fork``, as uWSGI and some extensions do, is caught too) builds a new loop
wing (:meth:`agybridge._loop.lifecycle.LoopWing.rebuilt_in_child`): queue, registry, agent
table, dispatcher, loop thread and worker pool, new and unlocked. What it keeps of the parent
is its configuration and the record of its agent registrations (id, factory, state), which
:class:`ForkGuard` keeps and replays on the new loop before any agent command runs there, so
the factories run again, in the child. In-flight work, held contexts and metrics stay with
the parent. ``RuntimeConfig(after_fork="error")`` makes a started runtime raise
:class:`ForkedRuntimeError` in the child instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from agybridge._backends._asyncio import start_task
from agybridge.commands import PyCommand, RegisterAgent, UnregisterAgent

__all__ = ["AFTER_FORK_MODES", "ForkGuard", "Registration"]

logger = logging.getLogger("agybridge")

#: The values of ``RuntimeConfig.after_fork``.
AFTER_FORK_MODES = ("restart", "error")

Handler = Callable[[Any], Awaitable[Any]]
Handlers = dict[type[PyCommand], Handler]
#: What a registration needs to be made again: the factory and the state.
Registration = tuple[Callable[[], Any], Any]


class ForkGuard:
    """Per loop wing: the pid it was built in, and its registrations, to replay in a child.

    The registrations are written on the runtime loop only (by the register and unregister
    handlers this guard wraps) and read in a child, where that loop is gone. A plain dict: an
    insert or a pop is atomic, so the child always copies a consistent one.
    """

    __slots__ = ("pid", "registrations", "replay")

    def __init__(self, replay: list[tuple[str, Registration]] | None = None) -> None:
        self.pid = os.getpid()
        self.registrations: dict[str, Registration] = {}
        #: In a rebuilt child: the parent's registrations still to be made again.
        self.replay: _Replay | None = _Replay(self, replay) if replay else None

    def handlers(
        self,
        handlers: Mapping[type[PyCommand], Handler],
        agent_ids: Callable[[], list[str]],
        register: Handler,
        install: Callable[[Handlers], None],
    ) -> Handlers:
        """*handlers* with the agent commands recording registrations (and, in a child, replaying).

        *agent_ids* lists the agents registered now, *register* makes one (the agent table's
        own handler), *install* hands the dispatcher its handlers once a replay has ended.
        """
        wrapped = dict(handlers)
        register_cmd, unregister_cmd = handlers[RegisterAgent], handlers[UnregisterAgent]

        async def record_register(cmd: RegisterAgent) -> None:
            await register_cmd(cmd)
            self.registrations.pop(cmd.agent_id, None)
            self.registrations[cmd.agent_id] = (cmd.factory, cmd.state)

        async def record_unregister(cmd: UnregisterAgent) -> None:
            try:
                await unregister_cmd(cmd)
            finally:
                if cmd.agent_id not in agent_ids():  # gone, even if its close was cut short
                    self.registrations.pop(cmd.agent_id, None)

        wrapped[RegisterAgent], wrapped[UnregisterAgent] = record_register, record_unregister
        replay = self.replay
        if replay is None:
            return wrapped
        # In a child: the first command of any kind starts the replay, and every command waits
        # for it to end, so a chat sent right after the first use finds its agent even when its
        # factory is a coroutine that suspends. Then the plain handlers are put back.
        replay.bind(wrapped, register, install)
        return {kind: replay.gated(handler) for kind, handler in wrapped.items()}


class _Replay:
    """The parent's registrations, made again on the child's new loop before its first command runs."""

    def __init__(self, guard: ForkGuard, registrations: list[tuple[str, Registration]]) -> None:
        self._guard = guard
        self._registrations = registrations
        self._done: asyncio.Event | None = None
        self._handlers: Handlers = {}
        self._register: Handler | None = None
        self._install: Callable[[Handlers], None] = lambda _handlers: None

    def bind(self, handlers: Handlers, register: Handler, install: Callable[[Handlers], None]) -> None:
        self._handlers, self._register, self._install = handlers, register, install

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
            start_task(asyncio.get_running_loop(), self._run(), contextvars.Context())
        await self._done.wait()

    async def _run(self) -> None:
        assert self._done is not None and self._register is not None
        record = self._guard.registrations
        pending, self._registrations = self._registrations, []
        try:
            for agent_id, (factory, state) in pending:
                from_parent = RegisterAgent(agent_id, factory, state)
                try:
                    await self._register(from_parent)
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
            self._guard.replay = None
            # Later commands pay nothing for the replay: the dispatcher gets the plain handlers.
            self._install(self._handlers)
