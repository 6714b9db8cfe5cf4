"""The loop wing of one runtime: its parts, built together, and how they stop or die.

:class:`LoopWing` builds everything of a runtime that lives on (or feeds) its loop thread:
the command queue, the dispatcher, the agent table, the registry and the thread itself,
wired to each other. The facade holds one and hands the caller's wing a
:class:`~agybridge._caller.send.LoopDoor` made from it.

Shutdown is two steps. :meth:`LoopWing.begin_shutdown` runs on whatever thread asked:
refusing new work (closing the queue) and the thread's state change are one atomic step,
then the rest is handed to the loop. There, the commands still queued (accepted before the
shutdown) are started, :meth:`LoopWing._shutdown_sequence` gives them and every other
in-flight command the grace, closes the agents, empties the
registry and lets the thread finish. A loop that dies instead (its thread's ``run_forever``
raised) runs :meth:`LoopWing._on_death` on the dying thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import CoroutineType, ModuleType
from typing import Any

from agybridge._loop.agents import AgentTable
from agybridge._loop.dispatcher import Dispatcher, RuntimeMetrics
from agybridge._loop.fork import ForkGuard
from agybridge._loop.holder import HeldCount, Holder, release_idle
from agybridge._loop.streams import run_stream, stop_stream
from agybridge._loop.thread import NEW, RUNNING, LoopThread
from agybridge._registry import release_state
from agybridge._select import AgentRegistry
from agybridge.commands import PyCommand, Run, Stream
from agybridge.config import RuntimeConfig

__all__ = ["LoopWing", "run_coroutine"]

logger = logging.getLogger("agybridge")

# The parent's wings, as copied into a forked child: never used, never collected (see
# LoopWing.rebuilt_in_child).
_INHERITED: list[LoopWing] = []


def run_coroutine(cmd: Run) -> Awaitable[Any]:
    """The handler of :class:`~agybridge.Run` commands: ``fn(*args, **kwargs)``, for the
    dispatcher to await.

    A plain function returning the awaitable, not a coroutine awaiting it: the body of every
    ``run()`` would otherwise pay one more coroutine (and frame) for nothing.
    """
    awaitable = cmd.fn(*cmd.args, **cmd.kwargs)
    if type(awaitable) is not CoroutineType and not isinstance(awaitable, Awaitable):
        raise TypeError(
            f"run() expects a coroutine function, but {cmd.describe()} returned "
            f"{type(awaitable).__name__} {awaitable!r}, which is not awaitable"
        )
    return awaitable


class LoopWing:
    """The parts of one runtime that the loop thread owns, wired together.

    *owner* is what :func:`~agybridge._origin.current_owner` names on the thread (the
    runtime); *on_exit* is the runtime's ``atexit`` shutdown; *held* counts the idle held
    contexts (they are in flight, yet no caller waits behind them).
    """

    def __init__(
        self,
        core: ModuleType,
        config: RuntimeConfig,
        *,
        owner: Any,
        on_exit: Callable[[], None],
        fork: ForkGuard | None = None,
    ) -> None:
        self.core = core
        self.config = config
        self._owner, self._on_exit = owner, on_exit
        #: The pid these parts belong to, and the registrations a forked child makes again.
        self.fork = fork if fork is not None else ForkGuard()
        #: The idle held contexts (in flight, yet no caller waits behind them).
        self.held = HeldCount()
        # The queue wakes the loop through its own descriptor (an eventfd), read by the
        # dispatcher in the loop's reader callback: see _watch_queue.
        self.queue = core.CommandQueue()
        self.registry: AgentRegistry = core.AgentRegistry()
        self.agents = AgentTable(config, self.registry)
        plain: dict[type[PyCommand], Any] = {Run: run_coroutine, Stream: run_stream, **self.agents.handlers()}
        handlers = self.fork.handlers(plain, self.agents.ids, self.agents.register, self._install)
        self.dispatcher = Dispatcher(self.queue, handlers, config.loop_spin)
        # Callers waiting for a command's clean-up (see when_finished); released at close.
        self._finish_waiters: set[Any] = set()
        self.thread = LoopThread(
            name=config.thread_name,
            use_uvloop=config.use_uvloop,
            worker_threads=config.worker_threads,
            close_grace=config.shutdown_grace,
            owner=owner,
            on_death=self._on_death,
            on_closing=self._on_closing,
            on_exit=on_exit,
            on_loop=self._watch_queue,
            stopped=core.Oneshot(),
        )

    def _install(self, handlers: Mapping[type[PyCommand], Callable[[Any], Awaitable[Any]]]) -> None:
        self.dispatcher.set_handlers(handlers)

    # -- any thread -------------------------------------------------------------------------

    def make_holder(self, source: Any) -> Holder:
        """The holder of a context manager that ``enter()`` holds open on this loop."""
        core = self.core
        return Holder(source, core.Oneshot(), core.Oneshot(), core.Oneshot(), self.held)

    def rebuilt_in_child(self) -> LoopWing:
        """In a forked child: a new wing for this process, as this one's parent would have made it.

        This wing (the parent's copy) is disowned and kept alive, never closed: its loop
        shares the parent's epoll instance and descriptors (fork copies descriptors, not what
        they point to), so closing or collecting it here could unregister the parent's own
        wake-ups. The new wing makes the parent's agents again on its first command, unless the
        parent's runtime had stopped, or ``after_fork="error"`` refuses the child (its commands
        then raise :class:`~agybridge.ForkedRuntimeError`).
        """
        parent_pid = self.fork.pid
        state = self.thread.disown()
        _INHERITED.append(self)
        refuse = self.config.after_fork == "error" and state != NEW
        registrations = list(self.fork.registrations.items())
        for _agent_id, (_factory, bridge_state) in registrations:
            release_state(bridge_state)  # it belonged to the parent's registry
            bridge_state.forget_inflight()
        replay = registrations if state in (NEW, RUNNING) and not refuse else None
        wing = LoopWing(self.core, self.config, owner=self._owner, on_exit=self._on_exit, fork=ForkGuard(replay))
        if state not in (NEW, RUNNING):
            wing.queue.close()
            wing.thread.end_as(self.thread, state)  # shut down or dead in the parent: the same here
        if refuse:
            wing.thread.belongs_to(parent_pid)  # its commands raise ForkedRuntimeError
        return wing

    def abort(self, cmd: PyCommand) -> None:
        """The caller completed *cmd* (cancel or timeout): stop its task on the loop."""
        self.thread.call_soon_threadsafe(self.dispatcher.abort, cmd)

    def stop_stream(self, cmd: PyCommand) -> None:
        """The consumer of *cmd* left: stop its producer on the loop (see ``stop_stream``)."""
        self.thread.call_soon_threadsafe(stop_stream, cmd, self.dispatcher.abort)

    def when_finished(self, cmd: PyCommand) -> Any:
        """A oneshot completed once *cmd*'s task has ended on the loop (its clean-up ran).

        Scheduled after the abort or stop requests this thread made before, so it sees
        their effect; completed at once if the loop is gone.
        """
        shot = self.core.Oneshot()
        waiters = self._finish_waiters
        waiters.add(shot)
        shot.add_done_callback(waiters.discard)
        if not self.thread.call_soon_threadsafe(self.dispatcher.notify_finished, cmd, shot):
            shot.set_result(None)
        return shot

    def ensure_running(self) -> None:
        """Start the thread unless it runs (raises if it was shut down or died)."""
        if not self.thread.is_running:
            self.thread.start()

    def metrics(self) -> RuntimeMetrics:
        """A consistent snapshot of the dispatcher's counters."""
        return self.dispatcher.metrics()

    def begin_shutdown(self, grace: float) -> None:
        """Refuse new work and start the shutdown on the loop; idempotent, from any thread."""
        leftovers: list[PyCommand] = []
        # Refusing new work and the state change are one step under the lifecycle lock.
        previous = self.thread.begin_stop(lambda _previous: leftovers.extend(self.queue.close()))
        if previous == NEW:
            self.dispatcher.fail_queued(leftovers)
        elif previous == RUNNING and not self.thread.call_soon_threadsafe(self._on_shutdown, grace, leftovers):
            self.dispatcher.fail_queued(leftovers)  # the loop is already gone

    # -- the loop thread --------------------------------------------------------------------

    def _watch_queue(self, loop: asyncio.AbstractEventLoop) -> None:
        # Once, before the loop runs: a push made before this is not lost (the descriptor
        # stays readable until read), so the first drain picks it up.
        loop.add_reader(self.queue.fileno(), self.dispatcher.on_readable)

    def _on_shutdown(self, grace: float, leftovers: list[PyCommand]) -> None:
        # Accepted before the shutdown: they get the grace, as the running ones do.
        self.dispatcher.run_leftovers(leftovers)
        asyncio.get_running_loop().create_task(self._shutdown_sequence(grace))

    async def _shutdown_sequence(self, grace: float) -> None:
        try:
            grace = await release_idle(self.held, self.dispatcher.active_tasks, grace)
            await self.dispatcher.stop_all(grace)
            await self.agents.close_all("the runtime shut down")
            self.registry.clear()  # states put there by hand, too
        finally:
            self.thread.finish_stop()

    def _on_closing(self) -> None:
        # The loop is closing: account what never finished, and release every caller
        # waiting for a clean-up (nothing more will run).
        self.dispatcher.reap_all()
        for shot in list(self._finish_waiters):
            shot.set_result(None)
        loop = self.thread.loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self.queue.fileno())

    def _on_death(self, cause: BaseException | None, reason: str) -> None:
        # On the dying loop thread: refuse new work and fail everything in flight, then free
        # the agent ids (a new runtime may register them) and close the agents, best effort.
        self.dispatcher.fail_for_death(self.queue.close(), cause, reason)
        forgotten = self.agents.forget_all()
        self.registry.clear()  # states put there by hand, too: nothing of a dead runtime is found
        loop = self.thread.loop
        if forgotten and loop is not None and not loop.is_running() and not loop.is_closed():
            try:
                loop.run_until_complete(self.agents.close_forgotten(forgotten, f"the runtime thread died ({reason})"))
            except BaseException:
                logger.exception("closing the agents of a dead runtime failed")
