"""PythonRuntime: the public facade. It builds the two wings, wires them, and delegates.

The loop's wing (:mod:`agybridge._loop`: the thread, the dispatcher, the agents, shutdown and
death) is built as one :class:`~agybridge._loop.lifecycle.LoopWing`; the caller's wing
(:mod:`agybridge._caller`) meets it only through the callables of a
:class:`~agybridge._caller.send.LoopDoor` made here, and every command enters through the one
send path, :class:`~agybridge._caller.send.Sender`. No line of this module runs on the
runtime loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterable, Awaitable, Callable
from types import ModuleType, TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from agybridge import _select, _validate
from agybridge._agent_state import AgentBridgeState
from agybridge._backends import await_oneshot, current_host
from agybridge._caller.context_managers import AsyncRemoteContext, RemoteContext, RemoteContextSource
from agybridge._caller.futures import CommandFuture
from agybridge._caller.handles import AgentHandle
from agybridge._caller.send import LoopDoor, Sender, caller_spin_budget
from agybridge._caller.streams import AsyncStream, BlockingStream, stream_of_call, stream_of_chat
from agybridge._caller.wrap import Wrapped
from agybridge._fork import process_lock
from agybridge._loop.dispatcher import RuntimeMetrics
from agybridge._loop.lifecycle import LoopWing
from agybridge._registry import track_runtime
from agybridge._select import AgentRegistry
from agybridge.commands import Chat, PyCommand, RegisterAgent, Run, UnregisterAgent
from agybridge.config import RuntimeConfig
from agybridge.errors import DeadlockError, OperationTimeoutError

__all__ = ["PythonRuntime", "RuntimeMetrics", "caller_spin_budget"]

T = TypeVar("T")
A = TypeVar("A")
P = ParamSpec("P")

logger = logging.getLogger("agybridge")


class PythonRuntime:
    """Owns the ``agy-bridge-python-runtime`` thread and its asyncio loop.

    Every agent object and every coroutine it runs lives on that one loop; callers reach it with
    commands through a multi-producer queue, and each command runs as its own task there, so
    commands are never serialized. The thread starts on :meth:`start`, on entering the context
    manager (``with`` or ``async with``, which also shut it down), or lazily on the first command.

    **Thread rules, for every method.** Every method may be called from any thread. A blocking
    method waits with the GIL released; Ctrl-C interrupts the wait at once and cancels the
    command on the runtime loop; called on the runtime's own thread it raises
    :class:`DeadlockError` (the wait could never finish). Its ``a``-twin is a coroutine to await
    from asyncio (any loop, the runtime's own included) or trio: the caller is woken through its
    own loop, no thread is parked per wait, cancelling the await cancels the command unless its
    result was already delivered, and in an already-cancelled trio scope nothing is submitted.

    **Errors every command may raise**, beside its own (the guarantees page has the whole table):
    :class:`OperationTimeoutError` (the round trip outlasted its timeout; the command's task is
    cancelled), :class:`RuntimeShutdownError` (shut down or shutting down; the command never ran
    or was cancelled after the grace) or :class:`RuntimeDiedError` (the thread died),
    :class:`RuntimeBusyError` (``config.max_in_flight`` commands in flight; nothing was
    scheduled), :class:`CommandCancelledError` (cancelled on the loop by someone other than this
    caller, e.g. an unregister), :class:`ForkedRuntimeError` (used in a forked child),
    :class:`ConfigError` (a *timeout* that is not a positive number of seconds; ``math.inf``
    means no limit) and :class:`DeadlockError` (above).

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
        self._wing = LoopWing(self._core, self.config, owner=self, on_exit=self._shutdown_at_exit)
        self._sender = Sender(self._core, self.config, self._door(self._wing), self._wing.held)
        track_runtime(self)

    def _here(self) -> None:
        """Make this runtime's parts belong to this process: a no-op but in a forked child.

        In a child (any fork, detected by pid, so a fork made in C is caught too) the loop's wing
        is rebuilt, once, under this process's own lock, and the send path rebound to it; the
        parent's agents are registered again there on the first command (see
        :mod:`agybridge._loop.fork`).
        """
        if self._wing.fork.pid != os.getpid():
            with process_lock("adopt"):
                if self._wing.fork.pid != os.getpid():  # else another thread of this child did it
                    wing = self._wing.rebuilt_in_child()
                    self._sender.rebind(self._door(wing), wing.held)
                    self._wing = wing  # published last: a racing thread waits on the lock till now
                    if self.config.after_fork != "error" or not wing.thread.forked:
                        track_runtime(self)

    def _check_here(self) -> None:
        # The send path's first step: this process's parts, or ForkedRuntimeError (after_fork="error").
        self._here()
        self._wing.thread.check_fork()

    def _door(self, wing: LoopWing) -> LoopDoor:
        thread = wing.thread
        return LoopDoor(
            queue=wing.queue,
            registry=wing.registry,
            ensure_running=wing.ensure_running,
            is_running=lambda: thread.is_running,
            on_loop_thread=thread.is_current,
            check_fork=self._check_here,
            make_holder=wing.make_holder,
            closed_error=thread.closed_error,
            abort=wing.abort,
            stop_stream=wing.stop_stream,
            finished=wing.when_finished,
            shutdown=lambda grace, timeout: self.shutdown(grace, timeout=timeout),
            ashutdown=self.ashutdown,
        )

    def __repr__(self) -> str:
        wing = self._wing
        return f"<PythonRuntime {wing.thread.state} impl={self.implementation} in_flight={wing.dispatcher.in_flight()}>"

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def core(self) -> ModuleType:
        """The core module this runtime runs on (``agybridge._core`` or ``agybridge._core_py``); it never changes."""
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
        return self._wing.registry

    @property
    def implementation(self) -> str:
        """``"cython"`` or ``"python"``: the core this runtime runs on."""
        name: str = self._core.IMPLEMENTATION
        return name

    @property
    def is_running(self) -> bool:
        """True between a successful start and the beginning of shutdown (or the thread's death).

        A snapshot: by the time the caller acts on it, another thread may have shut the runtime down.
        """
        self._here()
        return self._wing.thread.is_running

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
        if self._wing.thread.loop is None:
            self.start()
        loop = self._wing.thread.loop
        assert loop is not None
        return loop

    def start(self) -> PythonRuntime:
        """Start the runtime thread if it is not running yet, and wait until its loop runs.

        Idempotent (on the runtime's own thread it returns at once). Not needed before other calls,
        which start the runtime lazily; it pays the start-up cost up front and fails early.

        :returns: this runtime, so ``runtime = PythonRuntime().start()`` works.
        :raises RuntimeShutdownError: the runtime was shut down; it is not restartable, make a new one.
        :raises RuntimeDiedError: the thread died or could not start (the cause is ``__cause__``).
        :raises ForkedRuntimeError: called in a forked child of the process that started it.
        """
        self._here()
        self._wing.thread.start()
        return self

    def shutdown(self, grace: float | None = None, *, timeout: float | None = None) -> None:
        """Stop the runtime and wait for its thread to exit; idempotent.

        New sends raise :class:`RuntimeShutdownError` at once; commands accepted before (running,
        or still queued) get *grace* seconds to finish, then are cancelled and fail with it; agents
        with ``aclose()`` are closed (one agent's failing or hanging ``aclose()`` never stops the
        others); the registry is emptied, the loop closed and the thread joined. A second call, from
        any thread, waits for the same stop. From the runtime's own thread or from async code use
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
        thread = self._wing.thread
        if thread.is_current():
            raise DeadlockError(
                "shutdown() blocks until the runtime thread exits, so it cannot be called from "
                "that thread; use 'await runtime.ashutdown()' or call it from another thread"
            )
        grace = self.config.shutdown_grace if grace is None else _validate.seconds("grace", grace, allow_zero=True)
        wait = grace + 10.0 if timeout is None else _validate.seconds("timeout", timeout, allow_zero=True)
        self._wing.begin_shutdown(grace)
        if not thread.join(wait):
            logger.error("runtime thread did not exit within the shutdown timeout")

    async def ashutdown(self, grace: float | None = None) -> None:
        """:meth:`shutdown`, awaited; on the runtime loop itself it begins the shutdown and returns.

        Cancelling the await stops only the waiting, never the shutdown.

        :raises OperationTimeoutError: the thread did not exit within *grace* + 10 seconds.
        """
        self._here()
        grace = self.config.shutdown_grace if grace is None else _validate.seconds("grace", grace, allow_zero=True)
        thread = self._wing.thread
        self._wing.begin_shutdown(grace)
        if thread.is_current() or not thread.started:
            return  # never started, or the loop finishes the shutdown after we return
        # A waiter of our own, chained to the thread's end: a timeout or cancellation here
        # completes only this waiter, never the shared "stopped" signal.
        waiter = self._core.Oneshot()
        thread.stopped.add_done_callback(lambda _stopped: waiter.set_result(None))
        await await_oneshot(waiter, grace + 10.0, lambda: OperationTimeoutError("shutdown timed out"), lambda: None)

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

    # -- commands ----------------------------------------------------------------------------

    def send_command(self, cmd: PyCommand, timeout: float | None = None) -> Any:
        """Submit *cmd* and block until its outcome.

        The helpers (:meth:`chat`, :meth:`run`, :meth:`register_agent`, ...) build the command for
        you; this is for callers that build :class:`PyCommand` objects themselves. A command is
        single-use. Thread rules and the errors every command may raise: see the class.

        :param cmd: a :class:`Chat`, :class:`Run`, :class:`CallAgent`, :class:`RegisterAgent` or
            :class:`UnregisterAgent`; a :class:`Shutdown` shuts the runtime down (as
            :meth:`shutdown` with its grace) and returns None.
        :param timeout: seconds for the whole round trip (default ``config.operation_timeout``).
        :returns: the command's result (a chat's reply, ``run``'s return value, None for the agent
            commands).
        :raises Exception: whatever the command's body raised, with its original traceback.
        :raises CommandReusedError: *cmd* was sent before, or carries a completed oneshot.
        :raises TypeError: *cmd* is not a command.
        :raises DeadlockError: also when (on a host loop's thread) a tool call needs that blocked loop.
        """
        return self._sender.send(cmd, timeout)

    async def asend_command(self, cmd: PyCommand, timeout: float | None = None) -> Any:
        """:meth:`send_command`, awaited; a :class:`Shutdown` awaits :meth:`ashutdown`."""
        return await self._sender.asend(cmd, timeout)

    def chat(self, agent_id: str, message: str, timeout: float | None = None) -> str:
        """Send *message* to agent *agent_id* and block until its reply.

        One chat turn on the runtime loop: it starts at least ``config.inter_agent_delay`` after the
        previous chat's start (any agent), fires the ``before_chat`` hooks, awaits
        ``agent.chat(message)`` and fires ``after_chat``, all within ``config.chat_timeout``. Tools the
        agent calls run in the copied context of this caller; thread-sensitive ones on this thread.

        :param timeout: seconds for the whole round trip (default ``config.operation_timeout``).
        :returns: the agent's reply.
        :raises UnknownAgentError: no agent is registered under *agent_id*.
        :raises ChatTimeoutError: the turn outlasted ``config.chat_timeout``.
        :raises Exception: whatever the agent's ``chat()`` raised.
        :raises DeadlockError: also when this thread runs the loop that hosts the agent's async tools.
        """
        reply: str = self._sender.send(Chat(agent_id, message, oneshot=self._sender.oneshot()), timeout)
        return reply

    async def achat(self, agent_id: str, message: str, timeout: float | None = None) -> str:
        """:meth:`chat`, awaited; thread-sensitive tools run on the caller's loop thread."""
        reply: str = await self._sender.asend(Chat(agent_id, message, oneshot=self._sender.oneshot()), timeout)
        return reply

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` on the runtime loop and block until its result.

        *fn* is called on the runtime loop, so whatever it creates (clients, tasks, futures) belongs
        to that loop; it runs in a copy of this caller's context. :meth:`wrap` is the typed form
        (use it when *fn* has a parameter named ``timeout``).

        :param timeout: seconds for the whole round trip (default ``config.operation_timeout``).
        :returns: what *fn* returned.
        :raises Exception: whatever *fn* raised, with its original traceback.
        :raises TypeError: *fn* did not return an awaitable.
        """
        result: T = self._sender.send(Run(fn, args, kwargs, oneshot=self._sender.oneshot()), timeout)
        return result

    async def arun(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """:meth:`run`, awaited: ``await runtime.arun(fn, *args)``."""
        result: T = await self._sender.asend(Run(fn, args, kwargs, oneshot=self._sender.oneshot()), timeout)
        return result

    # -- streams -----------------------------------------------------------------------------

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
        :meth:`~agybridge.BlockingStream.with_options`. Iterate it from the thread that made it,
        never from the runtime's own thread (:class:`DeadlockError`).

        :param fn: an async generator function, or a callable returning any async iterable or a
            coroutine of one.
        :returns: a :class:`BlockingStream`, an iterator and context manager; nothing is submitted
            until it is first iterated or entered.
        :raises Exception: (while iterating) the producer's own exception, after the items made
            before it.
        :raises StreamTimeoutError: (while iterating) no item came within the per-item timeout
            (default ``config.operation_timeout``).
        :raises RuntimeShutdownError: (while iterating) the runtime shut down; the stream ends with it.
        """
        return stream_of_call(BlockingStream, self._sender, fn, args, kwargs)

    @overload
    def astream(self, fn: Callable[P, AsyncIterable[T]], /, *args: P.args, **kwargs: P.kwargs) -> AsyncStream[T]: ...
    @overload
    def astream(
        self, fn: Callable[P, Awaitable[AsyncIterable[T]]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncStream[T]: ...
    def astream(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> AsyncStream[Any]:
        """:meth:`stream` for ``async for``; cancelling the consuming task closes the producer."""
        return stream_of_call(AsyncStream, self._sender, fn, args, kwargs)

    def chat_stream(
        self, agent_id: str, message: str, *, buffer: int | None = None, item_timeout: float | None = None
    ) -> BlockingStream[str]:
        """Stream agent *agent_id*'s reply to *message*, chunk by chunk, to a plain thread.

        The agent's ``async def chat_stream(message)`` supplies the chunks; an agent with only
        ``chat()`` streams its reply as one chunk. Otherwise a chat like any other: spaced at its
        start, bounded as a whole by the chat timeout, ``before_chat`` and ``after_chat`` (with the
        whole reply) fire once.

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
        stream = stream_of_chat(BlockingStream, self._sender, agent_id, message)
        return stream.with_options(buffer=buffer, item_timeout=item_timeout)

    def achat_stream(
        self, agent_id: str, message: str, *, buffer: int | None = None, item_timeout: float | None = None
    ) -> AsyncStream[str]:
        """:meth:`chat_stream` for ``async for``; cancelling the consuming task cancels the chat."""
        stream = stream_of_chat(AsyncStream, self._sender, agent_id, message)
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
        the runtime loop; :meth:`aregister_agent` runs them on the caller's loop instead.

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
        """
        bridge_state = state if state is not None else AgentBridgeState()
        cmd = RegisterAgent(agent_id, factory, bridge_state, replace=replace, oneshot=self._sender.oneshot())
        self._sender.send(cmd, timeout)

    async def aregister_agent(
        self,
        agent_id: str,
        factory: Callable[[], Any],
        state: AgentBridgeState | None = None,
        *,
        replace: bool = False,
        timeout: float | None = None,
    ) -> None:
        """:meth:`register_agent`, awaited; unless *state* is bound to a host already, the agent's
        async tools run on *this caller's* loop (its asyncio loop or trio run).

        A blocking :meth:`chat` made on that loop would then deadlock, so it raises
        :class:`DeadlockError`; if the loop closes or finishes, those tool calls fail with
        :class:`HostLoopError`.
        """
        bridge_state = state if state is not None else AgentBridgeState()
        if bridge_state.host is None:
            bridge_state.bind_host(current_host())
        cmd = RegisterAgent(agent_id, factory, bridge_state, replace=replace, oneshot=self._sender.oneshot())
        await self._sender.asend(cmd, timeout)

    def unregister_agent(self, agent_id: str, timeout: float | None = None) -> None:
        """Remove agent *agent_id* and block until it is closed.

        Its chats and calls in flight fail with :class:`CommandCancelledError`, its state leaves
        :attr:`bridge_state`, then its ``aclose()`` (if any) is awaited on the runtime loop, in a
        task of its own; an ``aclose()`` that raises is logged, never raised here.

        :raises UnknownAgentError: no agent is registered under *agent_id*.
        """
        self._sender.send(UnregisterAgent(agent_id, oneshot=self._sender.oneshot()), timeout)

    async def aunregister_agent(self, agent_id: str, timeout: float | None = None) -> None:
        """:meth:`unregister_agent`, awaited."""
        await self._sender.asend(UnregisterAgent(agent_id, oneshot=self._sender.oneshot()), timeout)

    def agent_ids(self) -> list[str]:
        """The ids of the agents registered on this runtime, as a new list (a snapshot, no round trip)."""
        self._here()
        return self._wing.agents.ids()

    def metrics(self) -> RuntimeMetrics:
        """A consistent snapshot of this runtime's counters, taken without a round trip.

        Callable any time (also before start and after shutdown). Every snapshot adds up:
        ``submitted == finished + in_flight``.
        """
        self._here()
        return self._wing.metrics()

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
        Making the wrapper sends nothing; calling it is :meth:`run`.

        :param fn: a coroutine function; omit it to get a decorator.
        :param timeout: seconds for each call's round trip (default ``config.operation_timeout``);
            given here, so it never mixes with *fn*'s own arguments.
        :returns: a :class:`Wrapped` (or, without *fn*, a decorator making one).
        :raises ConfigError: *timeout* is not a positive number of seconds (at the call).
        """
        if fn is None:
            return lambda f: Wrapped(self._sender, f, timeout)
        return Wrapped(self._sender, fn, timeout)

    def submit(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> CommandFuture[T]:
        """Start ``await fn(*args, **kwargs)`` on the runtime loop and return its future at once.

        A :class:`concurrent.futures.Future` (``wait``, ``as_completed`` and
        :func:`asyncio.wrap_future` accept it). ``cancel()`` cancels the command's task on the runtime
        loop if the command has no outcome yet, and returns False if the result won. The command is
        bounded by ``config.operation_timeout`` (``wrap(fn, timeout=...).submit(...)`` sets another
        bound); ``result(timeout)`` only stops waiting. Replaces anyio's ``portal.start_task_soon``
        and :func:`asyncio.run_coroutine_threadsafe`. It never blocks, so async code may call it;
        waiting on the future's ``result()`` on the runtime's own thread raises :class:`DeadlockError`.

        :returns: a :class:`CommandFuture`, whose result is what *fn* returned (or whose exception is
            what it raised).
        """
        return Wrapped(self._sender, fn).submit(*args, **kwargs)

    def enter(self, cm: RemoteContextSource[T], /, *, timeout: float | None = None) -> RemoteContext[T]:
        """``with runtime.enter(cm) as value:``: hold an async context manager open on the runtime loop.

        ``__aenter__`` and ``__aexit__`` run in one task on the runtime loop (two tasks would corrupt
        cancel scopes, anyio#381); the resource stays there between the calls made in the body, and
        the body's exception reaches ``__aexit__``, which may suppress it. Replaces anyio's
        ``portal.wrap_async_context_manager``. Ctrl-C while entering or in the body still exits it
        in its task.

        :param cm: an async context manager, or a zero-argument callable making one (called on the
            runtime loop).
        :param timeout: seconds for the enter and for the exit, each (default
            ``config.operation_timeout``); giving up on either cancels the holder task, which still
            exits the context manager.
        :returns: a :class:`RemoteContext`; nothing is sent until it is entered.
        """
        self._here()
        return RemoteContext(self._sender, cm, timeout)

    def aenter(self, cm: RemoteContextSource[T], /, *, timeout: float | None = None) -> AsyncRemoteContext[T]:
        """:meth:`enter` for ``async with``; a trio caller's exit wait is shielded from its own
        cancel scope (bounded by *timeout*), so a cancelled body is still cleaned up."""
        self._here()
        return AsyncRemoteContext(self._sender, cm, timeout)

    @overload
    def agent(self, agent_id: str, /, *, timeout: float | None = None) -> AgentHandle[Any]: ...

    @overload
    def agent(self, agent_id: str, agent_type: type[A], /, *, timeout: float | None = None) -> AgentHandle[A]: ...

    def agent(self, agent_id: str, agent_type: type[Any] | None = None, /, *, timeout: float | None = None) -> Any:
        """A handle on agent *agent_id*: call any of its async methods, blocking or through ``.aio``.

        The handle is a name, not a reference: each call looks the agent up on the runtime loop as one
        :class:`CallAgent` command (so a replaced agent is reached), bounded by the round-trip timeout;
        ``handle.chat(...)`` is the usual chat turn with hooks and the chat timeout. Making a handle
        sends nothing; its blocking calls follow :meth:`run`'s rules, its ``.aio`` calls :meth:`arun`'s.
        Replaces synchronicity's wrapped objects.

        :param agent_id: the id the agent was registered under (checked at each call, not here).
        :param agent_type: the agent's class: types the handle, so ``handle.call(MyAgent.method,
            ...)`` is checked against the method's signature, and is checked against the registered
            agent at each call.
        :param timeout: seconds for each call's round trip (default ``config.operation_timeout``).
        :returns: an :class:`AgentHandle`.
        """
        return AgentHandle(self._sender, agent_id, agent_type, timeout)
