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
from collections.abc import AsyncIterable, Awaitable, Callable
from types import ModuleType, TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from agybridge import _callers, _select, _validate
from agybridge._agents import AgentTable
from agybridge._backends import await_oneshot, current_host
from agybridge._context_managers import AsyncRemoteContext, HeldCount, RemoteContext, RemoteContextSource
from agybridge._dispatcher import Dispatcher, RuntimeMetrics
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

    Thread-safe: every public method may be called from any thread; the ``a``-prefixed
    coroutines may be awaited from asyncio (any loop) or trio. The thread starts on
    :meth:`start`, on entering the context manager, or lazily on the first command.

    *core* selects the hot-path implementation (``agybridge._core`` or
    ``agybridge._core_py``); it defaults to the one :data:`agybridge.IMPLEMENTATION`
    names and exists so tests and benchmarks can compare both in one process.
    """

    def __init__(self, config: RuntimeConfig | None = None, *, core: ModuleType | None = None) -> None:
        if config is not None and not isinstance(config, RuntimeConfig):
            raise TypeError(f"config must be a RuntimeConfig, not {type(config).__name__}")
        self.config = config if config is not None else RuntimeConfig()
        self._core = core if core is not None else _select.core
        self._oneshot = self._core.Oneshot
        self._queue = self._core.CommandQueue(self._wake)
        self._op_timeout = self.config.round_trip_timeout
        self._caller_spin = self.config.caller_spin
        self._registry: AgentRegistry = self._core.AgentRegistry()
        self._agents = AgentTable(self.config, self._registry)
        # Context managers held open by enter(): in flight, but idle until their caller exits
        # them, so they must not stop a caller from spinning for its answer.
        self._held = HeldCount()
        self._dispatcher = Dispatcher(
            self._queue, {Run: _run_coroutine, Stream: run_stream, **self._agents.handlers()}, self.config.loop_spin
        )
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
        track_runtime(self)

    def __repr__(self) -> str:
        return (
            f"<PythonRuntime {self._thread.state} impl={self.implementation} in_flight={self._dispatcher.in_flight()}>"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def core(self) -> ModuleType:
        """The core module this runtime runs on (``agybridge._core`` or ``agybridge._core_py``)."""
        return self._core

    @property
    def bridge_state(self) -> AgentRegistry:
        """This runtime's own registry of agent bridge states (what ``BRIDGE_STATE`` means
        on its thread). Only this runtime writes to it; read it from anywhere."""
        return self._registry

    @property
    def implementation(self) -> str:
        """``"cython"`` or ``"python"``: the core this runtime runs on."""
        name: str = self._core.IMPLEMENTATION
        return name

    @property
    def is_running(self) -> bool:
        """True between a successful start and the beginning of shutdown (or death)."""
        return self._thread.is_running

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The runtime's event loop (for code that must schedule onto it directly).

        Starts the runtime if it was never started; after shutdown it is the closed loop.
        """
        if self._thread.loop is None:
            self.start()
        loop = self._thread.loop
        assert loop is not None
        return loop

    def start(self) -> PythonRuntime:
        """Start the runtime thread if it is not running yet; return self.

        Raises :class:`RuntimeShutdownError` after shutdown, :class:`RuntimeDiedError` if
        the thread died or could not start, :class:`ForkedRuntimeError` in a forked child.
        """
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
        """Stop the runtime; idempotent and safe from any thread but the runtime's own.

        New sends raise :class:`RuntimeShutdownError` at once; commands still queued fail
        with it; in-flight commands get *grace* seconds (default ``config.shutdown_grace``)
        to finish, then are cancelled and fail with it; agents with ``aclose()`` are
        closed; the loop is closed and the thread joined (waiting at most *timeout*
        seconds, default grace + 10).
        """
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
        """:meth:`shutdown` for async callers (asyncio, trio, or the runtime loop itself)."""
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
        """Submit *cmd* and block until its outcome; returns its result or raises its error.

        *timeout* defaults to ``config.operation_timeout``; past it the command fails with
        :class:`OperationTimeoutError` and its task is cancelled. The GIL is released while
        waiting, and Ctrl-C interrupts the wait at once and cancels the command. A
        :class:`Shutdown` command shuts the runtime down (as :meth:`shutdown`).
        """
        self._thread.check_fork()
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
        caller = _callers.blocking_caller(cmd)
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
        """Async :meth:`send_command` for asyncio (any loop) and trio callers.

        The caller is woken through its own loop (no thread is parked per wait). Cancelling
        the awaiting task cancels the command on the runtime loop.
        """
        self._thread.check_fork()
        limit = _validate.timeout_or_default(timeout, self._op_timeout)
        if isinstance(cmd, Shutdown):
            await self.ashutdown(cmd.grace)
            cmd.oneshot.set_result(None)
            return None
        await _callers.before_async_send(cmd)  # trio: a cancelled scope never submits
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
        """Send *message* to agent *agent_id* and return its reply (blocking)."""
        reply: str = self.send_command(Chat(agent_id, message, oneshot=self._oneshot()), timeout)
        return reply

    async def achat(self, agent_id: str, message: str, timeout: float | None = None) -> str:
        """Send *message* to agent *agent_id* and return its reply (asyncio or trio)."""
        reply: str = await self.asend_command(Chat(agent_id, message, oneshot=self._oneshot()), timeout)
        return reply

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` on the runtime loop and return its result (blocking)."""
        result: T = self.send_command(Run(fn, args, kwargs, oneshot=self._oneshot()), timeout)
        return result

    async def arun(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` on the runtime loop (asyncio or trio caller)."""
        result: T = await self.asend_command(Run(fn, args, kwargs, oneshot=self._oneshot()), timeout)
        return result

    # -- streams -----------------------------------------------------------------------------

    def _submit_stream(self, cmd: Stream | ChatStream, blocking: bool) -> None:
        """Submit a stream's command; its channel ends with the command's outcome."""
        self._thread.check_fork()
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

        *fn* is an async generator function (or returns any async iterable, or a coroutine
        of one). The producer starts on the first ``next()`` (or entering ``with``), runs at
        most ``config.stream_buffer`` items ahead of the consumer, and is closed on the
        runtime loop, exactly once, however the consumer leaves. Set the buffer and the
        per-item timeout with :meth:`~agybridge.BlockingStream.with_options`. Raises the producer's
        own exception after the items made before it; :class:`StreamTimeoutError` if no
        item comes within the per-item timeout (default ``config.operation_timeout``).
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
        """:meth:`stream` for asyncio (any loop) and trio callers: ``async for item in ...``."""
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

        The agent's ``async def chat_stream(message)`` supplies the chunks; an agent with
        only ``chat()`` streams its reply as one chunk. Otherwise a chat like any other:
        spaced at its start, bounded as a whole by the chat timeout, ``before_chat`` and
        ``after_chat`` (with the whole reply) fire once.
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
        """:meth:`chat_stream` for asyncio (any loop) and trio callers."""
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
        """Create an agent on the runtime loop with ``factory()`` and register it (blocking).

        *state* holds the agent's host tools, hooks and policies (an empty one if None).
        Async tools registered this way, from a thread with no event loop, run as their own
        task on the runtime loop; use :meth:`aregister_agent` from asyncio or trio to run
        them on the caller's loop instead.
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
        """:meth:`register_agent` from asyncio or trio; async tools will run on this caller's loop."""
        bridge_state = state if state is not None else AgentBridgeState()
        if bridge_state.host is None:
            bridge_state.bind_host(current_host())
        cmd = RegisterAgent(agent_id, factory, bridge_state, replace=replace, oneshot=self._oneshot())
        await self.asend_command(cmd, timeout)

    def unregister_agent(self, agent_id: str, timeout: float | None = None) -> None:
        """Remove agent *agent_id*: its in-flight chats fail, then ``aclose()`` is awaited."""
        self.send_command(UnregisterAgent(agent_id, oneshot=self._oneshot()), timeout)

    async def aunregister_agent(self, agent_id: str, timeout: float | None = None) -> None:
        """:meth:`unregister_agent` for asyncio or trio callers."""
        await self.asend_command(UnregisterAgent(agent_id, oneshot=self._oneshot()), timeout)

    def agent_ids(self) -> list[str]:
        """The ids of the agents registered on this runtime (a snapshot)."""
        return self._agents.ids()

    def metrics(self) -> RuntimeMetrics:
        """A snapshot of this runtime's counters."""
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

        ``runtime.wrap(fn)(*args)`` is ``runtime.run(fn, *args)``, typed; ``.aio`` is the
        awaitable face, ``.submit`` returns a future. Usable as ``@runtime.wrap`` and
        ``@runtime.wrap(timeout=5)`` on functions and methods. *timeout* bounds each call
        (default ``config.operation_timeout``) and never mixes with *fn*'s own arguments.
        """
        if fn is None:
            return lambda f: Wrapped(self, f, timeout)
        return Wrapped(self, fn, timeout)

    def submit(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> CommandFuture[T]:
        """Start ``await fn(*args, **kwargs)`` on the runtime loop; return its future at once.

        A :class:`concurrent.futures.Future` (``wait``, ``as_completed`` and
        ``asyncio.wrap_future`` accept it) whose ``cancel()`` cancels the command's task;
        the command is bounded by ``config.operation_timeout`` (``wrap(fn, timeout=...)
        .submit(...)`` sets another bound). Raises at once if the runtime refuses it.
        """
        return Wrapped(self, fn).submit(*args, **kwargs)

    def _submit_future(self, cmd: PyCommand) -> CommandFuture[Any]:
        """Submit *cmd* without waiting; its outcome goes to the returned future."""
        self._thread.check_fork()
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
        """``with runtime.enter(cm) as value:``: hold an async context manager open on the loop.

        *cm* is an async context manager or a zero-argument callable making one (called on
        the runtime loop). ``__aenter__`` and ``__aexit__`` run in one task there; the body's
        exception reaches ``__aexit__``. *timeout* bounds the enter and the exit each.
        """
        return RemoteContext(self, cm, timeout, self._held)

    def aenter(self, cm: RemoteContextSource[T], /, *, timeout: float | None = None) -> AsyncRemoteContext[T]:
        """:meth:`enter` for asyncio and trio callers: ``async with runtime.aenter(cm) as value:``."""
        return AsyncRemoteContext(self, cm, timeout, self._held)

    @overload
    def agent(self, agent_id: str, /, *, timeout: float | None = None) -> AgentHandle[Any]: ...

    @overload
    def agent(self, agent_id: str, agent_type: type[A], /, *, timeout: float | None = None) -> AgentHandle[A]: ...

    def agent(self, agent_id: str, agent_type: type[Any] | None = None, /, *, timeout: float | None = None) -> Any:
        """A handle on agent *agent_id*: call any of its async methods, blocking or via ``.aio``.

        *agent_type* types the handle (``handle.call(MyAgent.method, ...)`` is then checked)
        and is checked against the registered agent at each call. *timeout* bounds each call.
        """
        return AgentHandle(self, agent_id, agent_type, timeout)
