"""PythonRuntime: the public facade, callable from any thread or loop.

The work is split by the thread that owns it: :mod:`agybridge._loop_thread` owns the
thread and its loop, :mod:`agybridge._dispatcher` runs commands on that loop and accounts
their outcomes, :mod:`agybridge._agents` keeps the agents and their chat turns. This module
only submits commands, waits for their oneshots (blocking, or under asyncio or trio), and
orchestrates shutdown. Each command's :class:`~agybridge.Oneshot` is completed exactly
once (result, exception, timeout, cancellation or shutdown); whoever completes it first
decides the outcome, and the others observe that they lost (``False``) and step aside.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterable, Awaitable, Callable
from types import ModuleType, TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from agybridge import _callers, _select, _validate
from agybridge._agents import AgentTable
from agybridge._backends import await_oneshot, current_host
from agybridge._context_managers import (
    AsyncRemoteContext,
    HeldCount,
    RemoteContext,
    RemoteContextSource,
    release_idle,
)
from agybridge._dispatcher import Dispatcher, RuntimeMetrics
from agybridge._fork import ForkGuard, adopt
from agybridge._futures import CommandFuture
from agybridge._handles import AgentHandle
from agybridge._loop_thread import NEW, RUNNING, LoopThread
from agybridge._registry import track_runtime
from agybridge._select import AgentRegistry
from agybridge._stream_consumer import AsyncStream, BlockingStream
from agybridge._stream_producer import end_channel_with, run_stream, stop_stream
from agybridge._wrap import Wrapped
from agybridge.commands import (
    Chat,
    ChatStream,
    PyCommand,
    RegisterAgent,
    Run,
    Shutdown,
    Stream,
    UnregisterAgent,
    callable_name,
)
from agybridge.config import RuntimeConfig
from agybridge.errors import (
    CommandReusedError,
    DeadlockError,
    OperationTimeoutError,
    QueueClosedError,
    RuntimeBusyError,
)
from agybridge.state import AgentBridgeState

__all__ = ["PythonRuntime", "RuntimeMetrics", "caller_spin_budget"]

logger = logging.getLogger("agybridge")

T = TypeVar("T")
A = TypeVar("A")
P = ParamSpec("P")

_COMMANDS = "a PyCommand (Chat, CallAgent, Run, RegisterAgent, UnregisterAgent, Shutdown)"


def caller_spin_budget(configured: float, in_flight: int) -> float:
    """How long a caller should poll for its answer before parking.

    Spinning pays only when the answer is microseconds away: when the command just
    submitted is the only one in flight. Behind other commands the wait outlasts any
    spin, and the spinner only takes a core from the runtime thread.
    """
    return configured if in_flight <= 1 else 0.0


async def _run_coroutine(cmd: Run) -> Any:
    awaitable = cmd.fn(*cmd.args, **cmd.kwargs)
    if not isinstance(awaitable, Awaitable):
        raise TypeError(
            f"run() expects a coroutine function, but {cmd.describe()} returned "
            f"{type(awaitable).__name__} {awaitable!r}, which is not awaitable"
        )
    return await awaitable


class PythonRuntime:
    """Owns the ``agy-bridge-python-runtime`` thread and its asyncio loop.

    Every agent object and every coroutine it runs lives on that one loop; callers reach it with
    commands through a multi-producer queue, and each command runs as its own task there, so
    commands are never serialized.

    Thread-safe: every public method may be called from any thread; the ``a``-prefixed coroutines
    may be awaited from asyncio (any loop) or trio. Blocking methods raise :class:`DeadlockError`
    when called on the runtime's own thread. The thread starts on :meth:`start`, on entering the
    context manager (``with`` or ``async with``, which also shut it down), or lazily on the first
    command.

    :param config: the runtime's settings (:class:`RuntimeConfig`; the defaults if None).
    :param core: the hot-path implementation (``agybridge._core`` or ``agybridge._core_py``). It
        defaults to the one :data:`agybridge.IMPLEMENTATION` names and exists so tests and
        benchmarks can compare both in one process.
    :raises TypeError: *config* is not a :class:`RuntimeConfig`.
    """

    def __init__(self, config: RuntimeConfig | None = None, *, core: ModuleType | None = None) -> None:
        if config is not None and not isinstance(config, RuntimeConfig):
            raise TypeError(f"config must be a RuntimeConfig, not {type(config).__name__}")
        self.config = config if config is not None else RuntimeConfig()
        self._core = core if core is not None else _select.core
        self._oneshot = self._core.Oneshot
        self._fork = ForkGuard()
        self._build_parts()
        track_runtime(self)

    def _build_parts(self) -> None:
        """Make the parts that live in one process: at construction, and again in a forked child."""
        self._queue = self._core.CommandQueue(self._wake)
        self._op_timeout = self.config.round_trip_timeout
        self._caller_spin = self.config.caller_spin
        self._registry: AgentRegistry = self._core.AgentRegistry()
        self._agents = AgentTable(self.config, self._registry)
        # Context managers held open by enter(): in flight, but idle until their caller exits
        # them, so they must not stop a caller from spinning for its answer.
        self._held = HeldCount()
        handlers = self._fork.handlers(
            self._agents, {Run: _run_coroutine, Stream: run_stream, **self._agents.handlers()}
        )
        self._dispatcher = Dispatcher(self._queue, handlers, self.config.loop_spin)
        # Bound once: the wake-up path runs on every idle->busy transition of the queue.
        self._on_wake = self._dispatcher.on_wake
        self._thread = LoopThread(
            name=self.config.thread_name,
            use_uvloop=self.config.use_uvloop,
            worker_threads=self.config.worker_threads,
            close_grace=self.config.shutdown_grace,
            owner=self,
            on_death=self._on_death,
            on_closing=self._dispatcher.reap_all,
            on_exit=self._shutdown_at_exit,
            stopped=self._oneshot(),
        )

    def _here(self) -> None:
        """Make this runtime's parts belong to this process: a no-op but in a forked child.

        Called first by every public entry point. In a child (any fork, detected by pid) the parts
        are rebuilt and the agents registered again (see :mod:`agybridge._fork`); with
        ``config.after_fork == "error"`` a runtime started before the fork refuses commands instead.
        """
        if self._fork.pid != os.getpid():
            adopt(self)

    def __repr__(self) -> str:
        return (
            f"<PythonRuntime {self._thread.state} impl={self.implementation} in_flight={self._dispatcher.in_flight()}>"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def core(self) -> ModuleType:
        """The core module this runtime runs on (``agybridge._core`` or ``agybridge._core_py``).

        Read it from any thread; it never changes. Tests use it to build commands with the same
        core's :class:`Oneshot`.
        """
        return self._core

    @property
    def bridge_state(self) -> AgentRegistry:
        """This runtime's own registry of agent bridge states: what :data:`BRIDGE_STATE` means on
        its loop thread and in its worker threads.

        Only this runtime writes to it (:meth:`register_agent` inserts, :meth:`unregister_agent`
        removes, shutdown and thread death empty it); read it from any thread. Off every runtime
        thread, use it instead of ``BRIDGE_STATE`` when several runtimes register the same id
        (``BRIDGE_STATE`` raises :class:`AgentOwnershipError` there).
        """
        self._here()
        return self._registry

    @property
    def implementation(self) -> str:
        """``"cython"`` or ``"python"``: the core this runtime runs on. Readable from any thread."""
        name: str = self._core.IMPLEMENTATION
        return name

    @property
    def is_running(self) -> bool:
        """True between a successful start and the beginning of shutdown (or the thread's death).

        A snapshot, readable from any thread: by the time the caller acts on it, another thread may
        have shut the runtime down.
        """
        self._here()
        return self._thread.is_running

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The runtime's event loop, for code that must schedule onto it directly.

        Starts the runtime if it was never started; after shutdown it is the closed loop. Only
        ``call_soon_threadsafe`` and :func:`asyncio.run_coroutine_threadsafe` may be used on it from
        other threads; prefer :meth:`run`, :meth:`submit` or :meth:`wrap`, which give the
        cancellation, timeout and shutdown guarantees.

        :raises RuntimeShutdownError: it was never started and the runtime is already shut down.
        :raises RuntimeDiedError: the thread could not start.
        """
        self._here()
        if self._thread.loop is None:
            self.start()
        loop = self._thread.loop
        assert loop is not None
        return loop

    def start(self) -> PythonRuntime:
        """Start the runtime thread if it is not running yet, and wait until its loop runs.

        Idempotent and callable from any thread (on the runtime's own thread it returns at once).
        Not needed before other calls, which start the runtime lazily; it exists to pay the start-up
        cost up front and to fail early.

        :returns: this runtime, so ``runtime = PythonRuntime().start()`` works.
        :raises RuntimeShutdownError: the runtime was shut down; a runtime is not restartable, make a
            new one.
        :raises RuntimeDiedError: the thread died or could not start (the cause is ``__cause__``).
        :raises ForkedRuntimeError: called in a forked child of the process that started it, and
            ``config.after_fork`` is ``"error"`` (by default it restarts there).
        """
        self._here()
        self._thread.start()
        return self

    def _on_death(self, cause: BaseException | None, reason: str) -> None:
        # On the dying loop thread: refuse new work and fail everything in flight, then free
        # the agent ids (a new runtime may register them) and close the agents, best effort.
        self._dispatcher.fail_for_death(self._queue.close(), cause, reason)
        forgotten = self._agents.forget_all()
        self._registry.clear()  # states put there by hand, too: nothing of a dead runtime is found
        loop = self._thread.loop
        if forgotten and loop is not None and not loop.is_running() and not loop.is_closed():
            try:
                loop.run_until_complete(self._agents.close_forgotten(forgotten, f"the runtime thread died ({reason})"))
            except BaseException:
                logger.exception("closing the agents of a dead runtime failed")

    def shutdown(self, grace: float | None = None, *, timeout: float | None = None) -> None:
        """Stop the runtime and wait for its thread to exit; idempotent.

        New sends raise :class:`RuntimeShutdownError` at once; commands still queued fail with it;
        in-flight commands get *grace* seconds to finish, then are cancelled and fail with it; agents
        with ``aclose()`` are closed (one agent's failing or hanging ``aclose()`` never stops the
        others); the registry is emptied, the loop closed and the thread joined. A second call, from
        any thread, waits for the same stop.

        Callable from any thread except the runtime's own; from there, or from async code, use
        :meth:`ashutdown`. A script that never calls it still exits promptly: an ``atexit`` hook
        shuts every runtime down with a short grace.

        :param grace: seconds in-flight commands may still finish (default
            ``config.shutdown_grace``; ``0`` cancels them at once).
        :param timeout: seconds to wait for the thread to exit (default *grace* + 10). Past it the
            call returns and logs an error; the thread keeps stopping in the background.
        :raises DeadlockError: called on the runtime's own thread.
        :raises ConfigError: *grace* or *timeout* is negative or not a finite number of seconds.
        """
        self._here()
        if self._thread.is_current():
            raise DeadlockError(
                "shutdown() blocks until the runtime thread exits, so it cannot be called from "
                "that thread; use 'await runtime.ashutdown()' or call it from another thread"
            )
        grace = self.config.shutdown_grace if grace is None else _validate.seconds("grace", grace, allow_zero=True)
        wait = grace + 10.0 if timeout is None else _validate.seconds("timeout", timeout, allow_zero=True)
        self._begin_shutdown(grace)
        if not self._thread.join(wait):
            logger.error("runtime thread did not exit within the shutdown timeout")

    async def ashutdown(self, grace: float | None = None) -> None:
        """:meth:`shutdown` for async callers: asyncio (any loop), trio, or the runtime loop itself.

        Awaits the thread's exit without blocking the caller's loop. Awaited on the runtime loop it
        begins the shutdown and returns at once (the loop cannot wait for its own end). Cancelling
        the await stops only the waiting, never the shutdown.

        :param grace: seconds in-flight commands may still finish (default ``config.shutdown_grace``).
        :raises OperationTimeoutError: the thread did not exit within *grace* + 10 seconds.
        :raises ConfigError: *grace* is negative or not a finite number of seconds.
        """
        self._here()
        grace = self.config.shutdown_grace if grace is None else _validate.seconds("grace", grace, allow_zero=True)
        self._begin_shutdown(grace)
        if self._thread.is_current() or not self._thread.started:
            return  # never started, or the loop finishes the shutdown after we return
        # A waiter of our own, chained to the thread's end: a timeout or cancellation here
        # completes only this waiter, never the shared "stopped" signal.
        waiter = self._oneshot()
        self._thread.stopped.add_done_callback(lambda _stopped: waiter.set_result(None))
        await await_oneshot(waiter, grace + 10.0, lambda: OperationTimeoutError("shutdown timed out"), lambda: None)

    def _begin_shutdown(self, grace: float) -> None:
        leftovers: list[PyCommand] = []
        # Refusing new work and the state change are one step under the lifecycle lock.
        previous = self._thread.begin_stop(lambda _previous: leftovers.extend(self._queue.close()))
        if previous == NEW:
            self._dispatcher.fail_queued(leftovers)
        elif previous == RUNNING and not self._thread.call_soon_threadsafe(self._on_shutdown, grace, leftovers):
            self._dispatcher.fail_queued(leftovers)  # the loop is already gone

    def _on_shutdown(self, grace: float, leftovers: list[PyCommand]) -> None:
        self._dispatcher.fail_queued(leftovers)
        asyncio.get_running_loop().create_task(self._shutdown_sequence(grace))

    async def _shutdown_sequence(self, grace: float) -> None:
        try:
            grace = await release_idle(self._held, self._dispatcher.active_tasks, grace)
            await self._dispatcher.stop_all(grace)
            await self._agents.close_all("the runtime shut down")
            self._registry.clear()  # states put there by hand, too
        finally:
            self._thread.finish_stop()

    def _shutdown_at_exit(self) -> None:
        self.shutdown(grace=min(self.config.shutdown_grace, 1.0), timeout=5.0)

    def __enter__(self) -> PythonRuntime:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    async def __aenter__(self) -> PythonRuntime:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.ashutdown()

    # -- submitting and waiting (caller side, any thread) ------------------------------------

    def _submit(self, cmd: PyCommand) -> None:
        """Queue *cmd*, or raise why not (single use, shut down, busy)."""
        if not isinstance(cmd, PyCommand) or isinstance(cmd, Shutdown):
            raise TypeError(f"expected {_COMMANDS}, not {cmd!r}")
        if not cmd.claim():
            raise CommandReusedError(
                f"{cmd.describe()} was already sent (its outcome: {cmd.oneshot!r}); commands are "
                "single-use, so make a new one for every send"
            )
        if cmd.oneshot.done():
            raise CommandReusedError(
                f"{cmd.describe()} carries a oneshot that is already completed ({cmd.oneshot!r}); "
                "give every command a new Oneshot"
            )
        if not self._thread.is_running:
            self.start()
        try:
            in_flight = self._dispatcher.submit(cmd, self.config.max_in_flight)
        except QueueClosedError:
            raise self._thread.closed_error() from None
        if in_flight >= 0:
            raise RuntimeBusyError(
                f"{in_flight} commands are in flight (max_in_flight="
                f"{self.config.max_in_flight}); retry later or raise the limit"
            )

    def _wake(self) -> None:
        # Called by CommandQueue.push on a producer thread, once per idle->busy transition.
        # If the loop is closed, the queue was closed before it, so the pushed command was
        # either refused or handed back by close() and failed there: nothing is lost.
        self._thread.call_soon_threadsafe(self._on_wake)

    def _timeout_error(self, cmd: PyCommand, limit: float) -> OperationTimeoutError:
        agent = f" for agent {cmd.agent_id!r}" if cmd.agent_id else ""
        return OperationTimeoutError(f"{cmd.describe()}{agent} did not complete within the {limit} s operation timeout")

    def _request_abort(self, cmd: PyCommand) -> None:
        """The caller completed *cmd* (cancel or timeout): stop its task on the loop."""
        self._thread.call_soon_threadsafe(self._dispatcher.abort, cmd)

    def _spin_budget(self) -> float:
        # Held context managers are in flight but idle: no caller's answer waits behind them.
        return caller_spin_budget(self._caller_spin, self._dispatcher.in_flight() - self._held.count)

    def send_command(self, cmd: PyCommand, timeout: float | None = None) -> Any:
        """Submit *cmd* and block until its outcome.

        The helpers (:meth:`chat`, :meth:`run`, :meth:`register_agent`, ...) build the command for
        you; this is for callers that build :class:`PyCommand` objects themselves. A command is
        single-use.

        Callable from any thread except the runtime's own (:class:`DeadlockError` there, since the
        wait could never finish). The GIL is released while waiting; Ctrl-C interrupts the wait at
        once and cancels the command on the runtime loop.

        :param cmd: the command: a :class:`Chat`, :class:`Run`, :class:`CallAgent`,
            :class:`RegisterAgent` or :class:`UnregisterAgent`; a :class:`Shutdown` shuts the runtime
            down (as :meth:`shutdown` with its grace) and returns None.
        :param timeout: seconds for the whole round trip (default ``config.operation_timeout``).
        :returns: the command's result (a chat's reply, ``run``'s return value, None for the agent
            commands).
        :raises Exception: whatever the command's body raised, with its original traceback (an
            agent's own exception, :class:`UnknownAgentError`, :class:`ChatTimeoutError`, ...).
        :raises CommandReusedError: *cmd* was sent before, or carries a completed oneshot.
        :raises TypeError: *cmd* is not a command.
        :raises DeadlockError: called on the runtime's own thread, or (on a host loop's thread) one
            of the command's tool calls needs that blocked loop.
        :raises OperationTimeoutError: the round trip outlasted *timeout*; the command's task is
            cancelled on the runtime loop.
        :raises RuntimeShutdownError: the runtime is shut down or shutting down (the command never
            ran, or was cancelled after the shutdown grace); :class:`RuntimeDiedError` if its thread died.
        :raises RuntimeBusyError: ``config.max_in_flight`` commands are already in flight; nothing
            was scheduled.
        :raises CommandCancelledError: the command's task was cancelled on the runtime loop (not by
            this caller), for example by an unregister or a replace of its agent.
        :raises ForkedRuntimeError: called in a forked child of the process that started the runtime,
            and ``config.after_fork`` is ``"error"`` (by default it restarts there).
        :raises ConfigError: *timeout* is not a positive, finite number of seconds.
        """
        self._here()
        if self._thread.is_current():
            raise DeadlockError(
                f"send_command({cmd.describe() if isinstance(cmd, PyCommand) else cmd!r}) was called "
                "on the runtime's own thread, where blocking for a result can never finish; "
                "await the coroutine directly or use 'await runtime.asend_command(...)'"
            )
        limit = _validate.timeout_or_default(timeout, self._op_timeout)
        if isinstance(cmd, Shutdown):
            self.shutdown(cmd.grace, timeout=limit)
            cmd.oneshot.set_result(None)
            return None
        if not isinstance(cmd, PyCommand):
            raise TypeError(f"expected {_COMMANDS}, not {cmd!r}")
        # None unless this thread runs a loop or the chat may need this thread for a tool.
        caller = _callers.blocking_caller(cmd, self._registry)
        shot = cmd.oneshot
        try:
            # The submit is inside the guard too: Ctrl-C can land after the push but before
            # the wait, and the command must not keep running then.
            try:
                self._submit(cmd)
            except CommandReusedError:
                raise  # the oneshot belongs to the first send
            except Exception as exc:
                # Refused (shut down, busy): the oneshot records the same outcome. The command
                # never reached the queue, so the loop has nothing to abort.
                shot.set_exception(exc)
                raise
            spin = self._spin_budget()
            done = shot.wait(limit, spin) if caller is None else caller.wait(limit, spin)
            if not done and shot.set_exception(self._timeout_error(cmd, limit)):
                self._request_abort(cmd)
        except Exception:
            raise
        except BaseException:
            # KeyboardInterrupt (or another signal handler's exception) while waiting.
            if shot.cancel():
                self._request_abort(cmd)
            raise
        return shot.result(0)

    async def asend_command(self, cmd: PyCommand, timeout: float | None = None) -> Any:
        """:meth:`send_command` for asyncio (any loop) and trio callers.

        Await it from any asyncio loop in any thread, from trio, or on the runtime loop itself. The
        caller is woken through its own loop, so no thread is parked per wait. Cancelling the awaiting
        task (or trio cancel scope) cancels the command on the runtime loop, unless its result was
        already delivered; in an already-cancelled trio scope the command is never submitted.

        :param cmd: the command (see :meth:`send_command`); a :class:`Shutdown` awaits
            :meth:`ashutdown`.
        :param timeout: seconds for the whole round trip (default ``config.operation_timeout``).
        :returns: the command's result.
        :raises Exception: whatever the command's body raised, with its original traceback.
        :raises CommandReusedError: *cmd* was sent before, or carries a completed oneshot.
        :raises TypeError: *cmd* is not a command.
        :raises OperationTimeoutError: the round trip outlasted *timeout*; the command's task is
            cancelled on the runtime loop.
        :raises RuntimeShutdownError: the runtime is shut down or shutting down (the command never
            ran, or was cancelled after the shutdown grace); :class:`RuntimeDiedError` if its thread died.
        :raises RuntimeBusyError: ``config.max_in_flight`` commands are already in flight; nothing
            was scheduled.
        :raises CommandCancelledError: the command's task was cancelled on the runtime loop (not by
            this caller), for example by an unregister or a replace of its agent.
        :raises ForkedRuntimeError: called in a forked child of the process that started the runtime,
            and ``config.after_fork`` is ``"error"`` (by default it restarts there).
        :raises ConfigError: *timeout* is not a positive, finite number of seconds.
        """
        self._here()
        limit = _validate.timeout_or_default(timeout, self._op_timeout)
        if isinstance(cmd, Shutdown):
            await self.ashutdown(cmd.grace)
            cmd.oneshot.set_result(None)
            return None
        await _callers.before_async_send(cmd, self._registry)  # trio: a cancelled scope never submits
        try:
            self._submit(cmd)
        except CommandReusedError:
            raise  # the oneshot belongs to the first send
        except Exception as exc:
            if isinstance(cmd, PyCommand):
                cmd.oneshot.set_exception(exc)  # a refused command is completed too
            raise
        spin = 0.0 if self._thread.is_current() else self._spin_budget()
        return await await_oneshot(
            cmd.oneshot, limit, lambda: self._timeout_error(cmd, limit), lambda: self._request_abort(cmd), spin
        )

    # -- the calls ---------------------------------------------------------------------------

    def chat(self, agent_id: str, message: str, timeout: float | None = None) -> str:
        """Send *message* to agent *agent_id* and block until its reply.

        One chat turn on the runtime loop: it starts at least ``config.inter_agent_delay`` after the
        previous chat's start (any agent), fires the ``before_chat`` hooks, awaits
        ``agent.chat(message)`` and fires ``after_chat``, all within ``config.chat_timeout``. Tools the
        agent calls run in the copied context of this caller.

        Callable from any thread except the runtime's own (:class:`DeadlockError` there, since the
        wait could never finish). The GIL is released while waiting; Ctrl-C interrupts the wait at
        once and cancels the command on the runtime loop.

        :param agent_id: the id the agent was registered under.
        :param message: the message handed to the agent's ``chat()``.
        :param timeout: seconds for the whole round trip (default ``config.operation_timeout``).
        :returns: the agent's reply.
        :raises Exception: whatever the agent's ``chat()`` raised, unchanged.
        :raises UnknownAgentError: no agent is registered under *agent_id*.
        :raises ChatTimeoutError: the chat turn (hooks included) outlasted ``config.chat_timeout``.
        :raises DeadlockError: called on the runtime's own thread, or on the host loop that must run
            this agent's async tools (use :meth:`achat` there).
        :raises CommandCancelledError: the agent was unregistered or replaced during the chat.
        :raises OperationTimeoutError: the round trip outlasted *timeout*; the command's task is
            cancelled on the runtime loop.
        :raises RuntimeShutdownError: the runtime is shut down or shutting down (the command never
            ran, or was cancelled after the shutdown grace); :class:`RuntimeDiedError` if its thread died.
        :raises RuntimeBusyError: ``config.max_in_flight`` commands are already in flight; nothing
            was scheduled.
        :raises ForkedRuntimeError: called in a forked child of the process that started the runtime,
            and ``config.after_fork`` is ``"error"`` (by default it restarts there).
        :raises ConfigError: *timeout* is not a positive, finite number of seconds.
        """
        reply: str = self.send_command(Chat(agent_id, message, oneshot=self._oneshot()), timeout)
        return reply

    async def achat(self, agent_id: str, message: str, timeout: float | None = None) -> str:
        """:meth:`chat` for asyncio (any loop) and trio callers: ``reply = await runtime.achat(...)``.

        Await it from any asyncio loop in any thread, from trio, or on the runtime loop itself. The
        caller is woken through its own loop, so no thread is parked per wait. Cancelling the awaiting
        task (or trio cancel scope) cancels the command on the runtime loop, unless its result was
        already delivered; in an already-cancelled trio scope the command is never submitted.

        :param agent_id: the id the agent was registered under.
        :param message: the message handed to the agent's ``chat()``.
        :param timeout: seconds for the whole round trip (default ``config.operation_timeout``).
        :returns: the agent's reply.
        :raises Exception: whatever the agent's ``chat()`` raised, unchanged.
        :raises UnknownAgentError: no agent is registered under *agent_id*.
        :raises ChatTimeoutError: the chat turn (hooks included) outlasted ``config.chat_timeout``.
        :raises CommandCancelledError: the agent was unregistered or replaced during the chat.
        :raises OperationTimeoutError: the round trip outlasted *timeout*; the command's task is
            cancelled on the runtime loop.
        :raises RuntimeShutdownError: the runtime is shut down or shutting down (the command never
            ran, or was cancelled after the shutdown grace); :class:`RuntimeDiedError` if its thread died.
        :raises RuntimeBusyError: ``config.max_in_flight`` commands are already in flight; nothing
            was scheduled.
        :raises ForkedRuntimeError: called in a forked child of the process that started the runtime,
            and ``config.after_fork`` is ``"error"`` (by default it restarts there).
        :raises ConfigError: *timeout* is not a positive, finite number of seconds.
        """
        reply: str = await self.asend_command(Chat(agent_id, message, oneshot=self._oneshot()), timeout)
        return reply

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` on the runtime loop and block until its result.

        *fn* is called on the runtime loop, so whatever it creates (clients, tasks, futures) belongs
        to that loop; it runs in a copy of this caller's context. :meth:`wrap` is the typed form.

        Callable from any thread except the runtime's own (:class:`DeadlockError` there, since the
        wait could never finish). The GIL is released while waiting; Ctrl-C interrupts the wait at
        once and cancels the command on the runtime loop.

        :param fn: a coroutine function (or any callable returning an awaitable).
        :param args: positional arguments for *fn*.
        :param timeout: seconds for the whole round trip (default ``config.operation_timeout``); it is
            this method's own keyword, never passed to *fn* (use :meth:`wrap` if *fn* has a
            ``timeout`` parameter).
        :param kwargs: keyword arguments for *fn*.
        :returns: what *fn* returned.
        :raises Exception: whatever *fn* raised, with its original traceback.
        :raises TypeError: *fn* did not return an awaitable.
        :raises DeadlockError: called on the runtime's own thread, or on a host loop's thread when a
            tool call it causes needs that blocked loop.
        :raises OperationTimeoutError: the round trip outlasted *timeout*; the command's task is
            cancelled on the runtime loop.
        :raises RuntimeShutdownError: the runtime is shut down or shutting down (the command never
            ran, or was cancelled after the shutdown grace); :class:`RuntimeDiedError` if its thread died.
        :raises RuntimeBusyError: ``config.max_in_flight`` commands are already in flight; nothing
            was scheduled.
        :raises CommandCancelledError: the command's task was cancelled on the runtime loop (not by
            this caller), for example by an unregister or a replace of its agent.
        :raises ForkedRuntimeError: called in a forked child of the process that started the runtime,
            and ``config.after_fork`` is ``"error"`` (by default it restarts there).
        :raises ConfigError: *timeout* is not a positive, finite number of seconds.
        """
        result: T = self.send_command(Run(fn, args, kwargs, oneshot=self._oneshot()), timeout)
        return result

    async def arun(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """:meth:`run` for asyncio (any loop) and trio callers: ``await runtime.arun(fn, *args)``.

        Await it from any asyncio loop in any thread, from trio, or on the runtime loop itself. The
        caller is woken through its own loop, so no thread is parked per wait. Cancelling the awaiting
        task (or trio cancel scope) cancels the command on the runtime loop, unless its result was
        already delivered; in an already-cancelled trio scope the command is never submitted.

        :param fn: a coroutine function (or any callable returning an awaitable).
        :param args: positional arguments for *fn*.
        :param timeout: seconds for the whole round trip (default ``config.operation_timeout``); never
            passed to *fn*.
        :param kwargs: keyword arguments for *fn*.
        :returns: what *fn* returned.
        :raises Exception: whatever *fn* raised, with its original traceback.
        :raises TypeError: *fn* did not return an awaitable.
        :raises OperationTimeoutError: the round trip outlasted *timeout*; the command's task is
            cancelled on the runtime loop.
        :raises RuntimeShutdownError: the runtime is shut down or shutting down (the command never
            ran, or was cancelled after the shutdown grace); :class:`RuntimeDiedError` if its thread died.
        :raises RuntimeBusyError: ``config.max_in_flight`` commands are already in flight; nothing
            was scheduled.
        :raises CommandCancelledError: the command's task was cancelled on the runtime loop (not by
            this caller), for example by an unregister or a replace of its agent.
        :raises ForkedRuntimeError: called in a forked child of the process that started the runtime,
            and ``config.after_fork`` is ``"error"`` (by default it restarts there).
        :raises ConfigError: *timeout* is not a positive, finite number of seconds.
        """
        result: T = await self.asend_command(Run(fn, args, kwargs, oneshot=self._oneshot()), timeout)
        return result

    # -- streams -----------------------------------------------------------------------------

    def _submit_stream(self, cmd: Stream | ChatStream, blocking: bool) -> None:
        """Submit a stream's command; its channel ends with the command's outcome."""
        self._here()
        if blocking and self._thread.is_current():
            raise DeadlockError(
                f"a blocking iteration of {cmd.describe()} was started on the runtime's own thread, where "
                "waiting for an item can never finish; use 'async for' over runtime.astream(...)"
            )
        cmd.oneshot.add_done_callback(end_channel_with(cmd.channel, cmd.describe()))
        try:
            self._submit(cmd)
        except Exception as exc:
            cmd.oneshot.set_exception(exc)  # a refused command is completed too
            raise

    def _request_stream_stop(self, cmd: Stream | ChatStream) -> None:
        """The consumer of *cmd* left: stop its producer on the loop (see ``stop_stream``)."""
        self._thread.call_soon_threadsafe(stop_stream, cmd, self._dispatcher.abort)

    def _stream_factory(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return lambda buffer: Stream(fn, args, kwargs, self._core.Channel(buffer), oneshot=self._oneshot())

    @overload
    def stream(self, fn: Callable[P, AsyncIterable[T]], /, *args: P.args, **kwargs: P.kwargs) -> BlockingStream[T]: ...
    @overload
    def stream(
        self, fn: Callable[P, Awaitable[AsyncIterable[T]]], /, *args: P.args, **kwargs: P.kwargs
    ) -> BlockingStream[T]: ...
    def stream(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> BlockingStream[Any]:
        """Iterate, from a plain thread, the items ``fn(*args, **kwargs)`` yields on the runtime loop.

        The producer starts on the first ``next()`` (or on entering ``with``), runs at most
        ``config.stream_buffer`` items ahead of the consumer, and is closed on the runtime loop,
        exactly once, however the consumer leaves (exhausted, ``break``, ``close()``, an error, a
        timeout, Ctrl-C). Set the buffer and the per-item timeout with
        :meth:`~agybridge.BlockingStream.with_options`. Call it from any thread; iterate it from the
        thread that made it, never from the runtime's own thread (:class:`DeadlockError`).

        :param fn: an async generator function, or a callable returning any async iterable or a
            coroutine of one.
        :param args: positional arguments for *fn*.
        :param kwargs: keyword arguments for *fn*.
        :returns: a :class:`BlockingStream`, an iterator and context manager; nothing is submitted
            until it is first iterated or entered.
        :raises Exception: (while iterating) the producer's own exception, after the items made
            before it.
        :raises StreamTimeoutError: (while iterating) no item came within the per-item timeout
            (default ``config.operation_timeout``).
        :raises RuntimeShutdownError: (while iterating) the runtime shut down; the stream ends with it.
        """
        what = f"Stream({callable_name(fn)})"
        return BlockingStream(
            self, self._stream_factory(fn, args, kwargs), what, self.config.stream_buffer, self._op_timeout
        )

    @overload
    def astream(self, fn: Callable[P, AsyncIterable[T]], /, *args: P.args, **kwargs: P.kwargs) -> AsyncStream[T]: ...
    @overload
    def astream(
        self, fn: Callable[P, Awaitable[AsyncIterable[T]]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncStream[T]: ...
    def astream(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> AsyncStream[Any]:
        """:meth:`stream` for asyncio (any loop) and trio callers: ``async for item in runtime.astream(fn)``.

        Cancelling the consuming task closes the producer on the runtime loop.

        :param fn: an async generator function, or a callable returning any async iterable or a
            coroutine of one.
        :param args: positional arguments for *fn*.
        :param kwargs: keyword arguments for *fn*.
        :returns: an :class:`AsyncStream`, an async iterator and async context manager; nothing is
            submitted until it is first iterated or entered.
        :raises Exception: (while iterating) the producer's own exception, after the items made
            before it.
        :raises StreamTimeoutError: (while iterating) no item came within the per-item timeout.
        :raises RuntimeShutdownError: (while iterating) the runtime shut down.
        """
        what = f"Stream({callable_name(fn)})"
        return AsyncStream(
            self, self._stream_factory(fn, args, kwargs), what, self.config.stream_buffer, self._op_timeout
        )

    def _chat_stream_factory(self, agent_id: str, message: str) -> Callable[[int], ChatStream]:
        ChatStream(agent_id, message, self._core.Channel(1))  # bad input fails here, at the call
        return lambda buffer: ChatStream(agent_id, message, self._core.Channel(buffer), oneshot=self._oneshot())

    def chat_stream(
        self, agent_id: str, message: str, *, buffer: int | None = None, item_timeout: float | None = None
    ) -> BlockingStream[str]:
        """Stream agent *agent_id*'s reply to *message*, chunk by chunk, to a plain thread.

        The agent's ``async def chat_stream(message)`` supplies the chunks; an agent with only
        ``chat()`` streams its reply as one chunk. Otherwise a chat like any other: spaced at its
        start, bounded as a whole by the chat timeout, ``before_chat`` and ``after_chat`` (with the
        whole reply) fire once. Iterate it from the thread that made it, never from the runtime's own
        thread (:class:`DeadlockError`).

        :param agent_id: the id the agent was registered under.
        :param message: the message handed to the agent.
        :param buffer: chunks the agent may run ahead of the consumer (default
            ``config.stream_buffer``).
        :param item_timeout: seconds to wait for each chunk (default ``config.operation_timeout``).
        :returns: a :class:`BlockingStream` of the reply's chunks.
        :raises TypeError: *agent_id* or *message* is not a str, or *buffer* is not an int
            (at the call, before anything is sent).
        :raises ValueError: *agent_id* is empty or *buffer* is below 1.
        :raises UnknownAgentError: (while iterating) no agent is registered under *agent_id*.
        :raises ChatTimeoutError: (while iterating) the whole chat outlasted ``config.chat_timeout``.
        :raises StreamTimeoutError: (while iterating) no chunk came within *item_timeout*.
        """
        stream: BlockingStream[str] = BlockingStream(
            self,
            self._chat_stream_factory(agent_id, message),
            f"ChatStream(agent={agent_id!r})",
            self.config.stream_buffer,
            self._op_timeout,
        )
        return stream.with_options(buffer=buffer, item_timeout=item_timeout)

    def achat_stream(
        self, agent_id: str, message: str, *, buffer: int | None = None, item_timeout: float | None = None
    ) -> AsyncStream[str]:
        """:meth:`chat_stream` for asyncio (any loop) and trio callers:
        ``async for chunk in runtime.achat_stream(agent_id, message)``.

        Cancelling the consuming task cancels the chat on the runtime loop.

        :param agent_id: the id the agent was registered under.
        :param message: the message handed to the agent.
        :param buffer: chunks the agent may run ahead of the consumer (default
            ``config.stream_buffer``).
        :param item_timeout: seconds to wait for each chunk (default ``config.operation_timeout``).
        :returns: an :class:`AsyncStream` of the reply's chunks.
        :raises TypeError: *agent_id* or *message* is not a str, or *buffer* is not an int.
        :raises ValueError: *agent_id* is empty or *buffer* is below 1.
        :raises UnknownAgentError: (while iterating) no agent is registered under *agent_id*.
        :raises ChatTimeoutError: (while iterating) the whole chat outlasted ``config.chat_timeout``.
        :raises StreamTimeoutError: (while iterating) no chunk came within *item_timeout*.
        """
        stream: AsyncStream[str] = AsyncStream(
            self,
            self._chat_stream_factory(agent_id, message),
            f"ChatStream(agent={agent_id!r})",
            self.config.stream_buffer,
            self._op_timeout,
        )
        return stream.with_options(buffer=buffer, item_timeout=item_timeout)

    # -- agents ------------------------------------------------------------------------------

    def register_agent(
        self,
        agent_id: str,
        factory: Callable[[], Any],
        state: AgentBridgeState | None = None,
        *,
        replace: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Create an agent on the runtime loop with ``factory()`` and register it; block until done.

        ``factory()`` runs on the runtime loop, so the agent and everything it builds belong to that
        loop. The agent needs ``async def chat(message) -> str`` (or ``async def
        chat_stream(message)`` yielding str chunks); ``aclose()`` is awaited when it is
        unregistered or replaced or the runtime stops. Its *state* is filed in
        :attr:`bridge_state`. Async tools of an agent registered this way run as their own task on
        the runtime loop; use :meth:`aregister_agent` from asyncio or trio to run them on the caller's
        loop instead.

        Callable from any thread except the runtime's own (:class:`DeadlockError` there, since the
        wait could never finish). The GIL is released while waiting; Ctrl-C interrupts the wait at
        once and cancels the command on the runtime loop.

        :param agent_id: a non-empty str, unique within this runtime (other runtimes may use it too).
        :param factory: a zero-argument callable returning the agent (a class works).
        :param state: the agent's host tools, hooks and policies (an empty
            :class:`AgentBridgeState` if None); one state serves one agent.
        :param replace: replace an agent already registered under *agent_id* (the old one's chats in
            flight fail with :class:`CommandCancelledError` and it is closed).
        :param timeout: seconds for the whole round trip (default ``config.operation_timeout``).
        :raises AgentAlreadyRegisteredError: *agent_id* is taken and *replace* is false.
        :raises AgentOwnershipError: *state* already serves another agent.
        :raises TypeError: *agent_id* is not a str, or the agent has neither a coroutine function
            ``chat`` nor an async generator ``chat_stream``.
        :raises ValueError: *agent_id* is empty.
        :raises Exception: whatever ``factory()`` raised.
        :raises DeadlockError: called on the runtime's own thread.
        :raises OperationTimeoutError: the round trip outlasted *timeout*; the command's task is
            cancelled on the runtime loop.
        :raises RuntimeShutdownError: the runtime is shut down or shutting down (the command never
            ran, or was cancelled after the shutdown grace); :class:`RuntimeDiedError` if its thread died.
        :raises RuntimeBusyError: ``config.max_in_flight`` commands are already in flight; nothing
            was scheduled.
        :raises ForkedRuntimeError: called in a forked child of the process that started the runtime,
            and ``config.after_fork`` is ``"error"`` (by default it restarts there).
        :raises ConfigError: *timeout* is not a positive, finite number of seconds.
        """
        bridge_state = state if state is not None else AgentBridgeState()
        cmd = RegisterAgent(agent_id, factory, bridge_state, replace=replace, oneshot=self._oneshot())
        self.send_command(cmd, timeout)

    async def aregister_agent(
        self,
        agent_id: str,
        factory: Callable[[], Any],
        state: AgentBridgeState | None = None,
        *,
        replace: bool = False,
        timeout: float | None = None,
    ) -> None:
        """:meth:`register_agent` for asyncio (any loop) and trio callers.

        Unless *state* is already bound to a host, the agent's async tools will run on *this
        caller's* loop (its asyncio loop or trio run), where they can use the caller's resources. A
        blocking :meth:`chat` made on that loop would then deadlock, so it raises
        :class:`DeadlockError`; if the loop closes or finishes, those tool calls fail with
        :class:`HostLoopError`.

        Await it from any asyncio loop in any thread, from trio, or on the runtime loop itself. The
        caller is woken through its own loop, so no thread is parked per wait. Cancelling the awaiting
        task (or trio cancel scope) cancels the command on the runtime loop, unless its result was
        already delivered; in an already-cancelled trio scope the command is never submitted.

        :param agent_id: a non-empty str, unique within this runtime.
        :param factory: a zero-argument callable returning the agent.
        :param state: the agent's host tools, hooks and policies (an empty one if None).
        :param replace: replace an agent already registered under *agent_id*.
        :param timeout: seconds for the whole round trip (default ``config.operation_timeout``).
        :raises AgentAlreadyRegisteredError: *agent_id* is taken and *replace* is false.
        :raises AgentOwnershipError: *state* already serves another agent.
        :raises TypeError: *agent_id* is not a str, or the agent has neither a coroutine function
            ``chat`` nor an async generator ``chat_stream``.
        :raises ValueError: *agent_id* is empty.
        :raises Exception: whatever ``factory()`` raised.
        :raises OperationTimeoutError: the round trip outlasted *timeout*; the command's task is
            cancelled on the runtime loop.
        :raises RuntimeShutdownError: the runtime is shut down or shutting down (the command never
            ran, or was cancelled after the shutdown grace); :class:`RuntimeDiedError` if its thread died.
        :raises RuntimeBusyError: ``config.max_in_flight`` commands are already in flight; nothing
            was scheduled.
        :raises ForkedRuntimeError: called in a forked child of the process that started the runtime,
            and ``config.after_fork`` is ``"error"`` (by default it restarts there).
        :raises ConfigError: *timeout* is not a positive, finite number of seconds.
        """
        bridge_state = state if state is not None else AgentBridgeState()
        if bridge_state.host is None:
            bridge_state.bind_host(current_host())
        cmd = RegisterAgent(agent_id, factory, bridge_state, replace=replace, oneshot=self._oneshot())
        await self.asend_command(cmd, timeout)

    def unregister_agent(self, agent_id: str, timeout: float | None = None) -> None:
        """Remove agent *agent_id* and block until it is closed.

        Its chats and calls in flight fail with :class:`CommandCancelledError`, its state leaves
        :attr:`bridge_state`, then its ``aclose()`` (if any) is awaited on the runtime loop, in a
        task of its own; an ``aclose()`` that raises is logged, never raised here.

        Callable from any thread except the runtime's own (:class:`DeadlockError` there, since the
        wait could never finish). The GIL is released while waiting; Ctrl-C interrupts the wait at
        once and cancels the command on the runtime loop.

        :param agent_id: the id the agent was registered under.
        :param timeout: seconds for the whole round trip (default ``config.operation_timeout``).
        :raises UnknownAgentError: no agent is registered under *agent_id*.
        :raises DeadlockError: called on the runtime's own thread.
        :raises OperationTimeoutError: the round trip outlasted *timeout*; the command's task is
            cancelled on the runtime loop.
        :raises RuntimeShutdownError: the runtime is shut down or shutting down (the command never
            ran, or was cancelled after the shutdown grace); :class:`RuntimeDiedError` if its thread died.
        :raises RuntimeBusyError: ``config.max_in_flight`` commands are already in flight; nothing
            was scheduled.
        :raises ForkedRuntimeError: called in a forked child of the process that started the runtime,
            and ``config.after_fork`` is ``"error"`` (by default it restarts there).
        :raises ConfigError: *timeout* is not a positive, finite number of seconds.
        """
        self.send_command(UnregisterAgent(agent_id, oneshot=self._oneshot()), timeout)

    async def aunregister_agent(self, agent_id: str, timeout: float | None = None) -> None:
        """:meth:`unregister_agent` for asyncio (any loop) and trio callers.

        Await it from any asyncio loop in any thread, from trio, or on the runtime loop itself. The
        caller is woken through its own loop, so no thread is parked per wait. Cancelling the awaiting
        task (or trio cancel scope) cancels the command on the runtime loop, unless its result was
        already delivered; in an already-cancelled trio scope the command is never submitted.

        :param agent_id: the id the agent was registered under.
        :param timeout: seconds for the whole round trip (default ``config.operation_timeout``).
        :raises UnknownAgentError: no agent is registered under *agent_id*.
        :raises OperationTimeoutError: the round trip outlasted *timeout*; the command's task is
            cancelled on the runtime loop.
        :raises RuntimeShutdownError: the runtime is shut down or shutting down (the command never
            ran, or was cancelled after the shutdown grace); :class:`RuntimeDiedError` if its thread died.
        :raises RuntimeBusyError: ``config.max_in_flight`` commands are already in flight; nothing
            was scheduled.
        :raises ForkedRuntimeError: called in a forked child of the process that started the runtime,
            and ``config.after_fork`` is ``"error"`` (by default it restarts there).
        :raises ConfigError: *timeout* is not a positive, finite number of seconds.
        """
        await self.asend_command(UnregisterAgent(agent_id, oneshot=self._oneshot()), timeout)

    def agent_ids(self) -> list[str]:
        """The ids of the agents registered on this runtime, as a new list (a snapshot).

        Callable from any thread without a round trip to the runtime loop; registrations in flight
        may or may not be in it.
        """
        self._here()
        return self._agents.ids()

    def metrics(self) -> RuntimeMetrics:
        """A consistent snapshot of this runtime's counters, taken without a round trip.

        Callable from any thread, any time (also before start and after shutdown). Every snapshot
        adds up: ``submitted == finished + in_flight``.

        :returns: a new :class:`RuntimeMetrics`.
        """
        self._here()
        return self._dispatcher.metrics()

    # -- the calls users know from the peers (asgiref, asyncer, anyio, synchronicity) ----------

    @overload
    def wrap(self, fn: Callable[P, Awaitable[T]], /, *, timeout: float | None = None) -> Wrapped[P, T]: ...

    @overload
    def wrap(
        self, fn: None = None, /, *, timeout: float | None = None
    ) -> Callable[[Callable[P, Awaitable[T]]], Wrapped[P, T]]: ...

    def wrap(self, fn: Callable[P, Awaitable[T]] | None = None, /, *, timeout: float | None = None) -> Any:
        """*fn* as a blocking callable with its exact parameters and return type.

        ``runtime.wrap(fn)(*args)`` sends exactly the :class:`Run` command ``runtime.run(fn, *args)``
        sends, typed (``ParamSpec``): a wrong argument is a type error. ``.aio`` is the awaitable face
        for asyncio (any loop) and trio, ``.submit`` returns a future. Usable as ``@runtime.wrap`` and
        ``@runtime.wrap(timeout=5)`` on functions and methods (the wrapper binds like a function).
        Replaces asgiref's ``async_to_sync``, asyncer's ``syncify`` and synchronicity's ``.aio``.

        Making the wrapper sends nothing and may happen on any thread; calling it is :meth:`run`,
        with the same thread rules and errors (:class:`DeadlockError` on the runtime's own thread).

        :param fn: a coroutine function; omit it to get a decorator.
        :param timeout: seconds for each call's round trip (default ``config.operation_timeout``);
            given here, so it never mixes with *fn*'s own arguments.
        :returns: a :class:`Wrapped` (or, without *fn*, a decorator making one).
        :raises ConfigError: *timeout* is not a positive, finite number of seconds (at the call).
        """
        if fn is None:
            return lambda f: Wrapped(self, f, timeout)
        return Wrapped(self, fn, timeout)

    def submit(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> CommandFuture[T]:
        """Start ``await fn(*args, **kwargs)`` on the runtime loop and return its future at once.

        A :class:`concurrent.futures.Future` (``wait``, ``as_completed`` and
        :func:`asyncio.wrap_future` accept it). ``cancel()`` cancels the command's task on the runtime
        loop if the command has no outcome yet, and returns False if the result won. The command is
        bounded by ``config.operation_timeout`` (``wrap(fn, timeout=...).submit(...)`` sets another
        bound); ``result(timeout)`` only stops waiting. Replaces anyio's ``portal.start_task_soon``
        and :func:`asyncio.run_coroutine_threadsafe`.

        Callable from any thread and from async code (it never blocks); waiting on the future's
        ``result()`` on the runtime's own thread raises :class:`DeadlockError`.

        :param fn: a coroutine function.
        :param args: positional arguments for *fn*.
        :param kwargs: keyword arguments for *fn*.
        :returns: a :class:`CommandFuture`, whose result is what *fn* returned (or whose exception is
            what it raised, or one of the errors of :meth:`run`).
        :raises RuntimeShutdownError: the runtime is shut down.
        :raises RuntimeBusyError: ``config.max_in_flight`` commands are already in flight.
        :raises ForkedRuntimeError: called in a forked child of the process that started it, and
            ``config.after_fork`` is ``"error"`` (by default it restarts there).
        """
        return Wrapped(self, fn).submit(*args, **kwargs)

    def _submit_future(self, cmd: PyCommand) -> CommandFuture[Any]:
        """Submit *cmd* without waiting; its outcome goes to the returned future."""
        self._here()
        abort = lambda: self._request_abort(cmd)  # noqa: E731
        future: CommandFuture[Any] = CommandFuture(cmd.oneshot, abort, self._thread.is_current)
        try:
            self._submit(cmd)
        except Exception as exc:
            cmd.oneshot.set_exception(exc)  # a refused command is completed too
            raise
        except BaseException:
            # Ctrl-C after the push: nobody will get the future, so the command must not run on.
            if cmd.oneshot.cancel():
                self._request_abort(cmd)
            raise
        return future

    def enter(self, cm: RemoteContextSource[T], /, *, timeout: float | None = None) -> RemoteContext[T]:
        """``with runtime.enter(cm) as value:``: hold an async context manager open on the runtime loop.

        ``__aenter__`` and ``__aexit__`` run in one task on the runtime loop (two tasks would corrupt
        cancel scopes, anyio#381); the resource stays there between the calls made in the body, and
        the body's exception reaches ``__aexit__``, which may suppress it. Replaces anyio's
        ``portal.wrap_async_context_manager``. Enter it from any thread except the runtime's own
        (:class:`DeadlockError`); Ctrl-C while entering or in the body still exits it in its task.

        :param cm: an async context manager, or a zero-argument callable making one (called on the
            runtime loop, so the resource is created where it lives).
        :param timeout: seconds for the enter and for the exit, each (default
            ``config.operation_timeout``); giving up on either cancels the holder task, which still
            runs ``__aexit__``.
        :returns: a :class:`RemoteContext`; nothing is sent until it is entered.
        :raises Exception: (on entering) what ``__aenter__`` raised; (on exiting) what ``__aexit__``
            raised.
        :raises OperationTimeoutError: the enter or the exit outlasted *timeout*.
        :raises RuntimeShutdownError: the runtime shut down while the context manager was held (it is
            still exited, in its task, after the shutdown grace).
        """
        self._here()
        return RemoteContext(self, cm, timeout, self._held)

    def aenter(self, cm: RemoteContextSource[T], /, *, timeout: float | None = None) -> AsyncRemoteContext[T]:
        """:meth:`enter` for asyncio (any loop) and trio callers: ``async with runtime.aenter(cm) as value:``.

        A trio caller's exit wait is shielded from its own cancel scope (bounded by *timeout*), so a
        cancelled body is still cleaned up; cancelling an asyncio caller's enter cancels the holder.

        :param cm: an async context manager, or a zero-argument callable making one on the runtime
            loop.
        :param timeout: seconds for the enter and for the exit, each (default
            ``config.operation_timeout``).
        :returns: an :class:`AsyncRemoteContext`; nothing is sent until it is entered.
        :raises Exception: what ``__aenter__`` or ``__aexit__`` raised.
        :raises OperationTimeoutError: the enter or the exit outlasted *timeout*.
        :raises RuntimeShutdownError: the runtime shut down while the context manager was held.
        """
        self._here()
        return AsyncRemoteContext(self, cm, timeout, self._held)

    @overload
    def agent(self, agent_id: str, /, *, timeout: float | None = None) -> AgentHandle[Any]: ...

    @overload
    def agent(self, agent_id: str, agent_type: type[A], /, *, timeout: float | None = None) -> AgentHandle[A]: ...

    def agent(self, agent_id: str, agent_type: type[Any] | None = None, /, *, timeout: float | None = None) -> Any:
        """A handle on agent *agent_id*: call any of its async methods, blocking or through ``.aio``.

        The handle is a name, not a reference: each call looks the agent up on the runtime loop as one
        :class:`CallAgent` command (so a replaced agent is reached), bounded by the round-trip timeout;
        ``handle.chat(...)`` is the usual chat turn with hooks and the chat timeout. Making a handle
        sends nothing, on any thread; its blocking calls follow :meth:`run`'s thread rules, its
        ``.aio`` calls :meth:`arun`'s. Replaces synchronicity's wrapped objects.

        :param agent_id: the id the agent was registered under (checked at each call, not here).
        :param agent_type: the agent's class: types the handle, so ``handle.call(MyAgent.method,
            ...)`` is checked against the method's signature, and is checked against the registered
            agent at each call (:class:`TypeError` if it differs).
        :param timeout: seconds for each call's round trip (default ``config.operation_timeout``).
        :returns: an :class:`AgentHandle`.
        """
        return AgentHandle(self, agent_id, agent_type, timeout)
