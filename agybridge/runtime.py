"""PythonRuntime: one dedicated thread running one asyncio loop, fed by a command queue.

Callers on any thread, on another asyncio loop or under trio push commands into a
multi-producer single-consumer :class:`~agybridge.CommandQueue`; the dispatcher on the
runtime loop drains it in batches and runs every command as its own task, so commands are
never serialized behind each other. Each command's :class:`~agybridge.Oneshot` is completed
exactly once (result, exception, timeout, cancellation or shutdown) and that completion is
the single source of truth: whoever completes it first decides the outcome, and the others
observe that they lost (``False``) and step aside.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import logging
import os
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, TypeVar

from agybridge import _select
from agybridge._waiters import await_oneshot
from agybridge.commands import Chat, PyCommand, RegisterAgent, Run, Shutdown, UnregisterAgent
from agybridge.config import RuntimeConfig
from agybridge.errors import (
    AgentAlreadyRegisteredError,
    ChatTimeoutError,
    CommandCancelledError,
    DeadlockError,
    ForkedRuntimeError,
    OperationTimeoutError,
    QueueClosedError,
    RuntimeBusyError,
    RuntimeDiedError,
    RuntimeShutdownError,
    UnknownAgentError,
)
from agybridge.state import BRIDGE_STATE, AgentBridgeState, current_host, fire_hook_quietly

__all__ = ["PythonRuntime", "RuntimeMetrics"]

logger = logging.getLogger("agybridge")

T = TypeVar("T")

# State machine of a runtime.
_NEW, _RUNNING, _STOPPING, _CLOSED, _DIED = "new", "running", "stopping", "closed", "died"

# Every live runtime, for the atexit hook; fork detection compares this generation.
_LIVE: weakref.WeakSet[PythonRuntime] = weakref.WeakSet()
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _shutdown_all_at_exit() -> None:
    """Shut down every runtime a script forgot, so the interpreter exits promptly."""
    for runtime in list(_LIVE):
        try:
            runtime._shutdown_at_exit()
        except Exception:
            logger.exception("error while shutting down %r at exit", runtime)


@dataclass(frozen=True)
class RuntimeMetrics:
    """Counters of one runtime, read with :meth:`PythonRuntime.metrics`.

    ``submitted`` counts commands the runtime accepted; each ends in exactly one of
    ``completed`` (a result), ``failed`` (an exception), ``timed_out``, ``cancelled`` or
    ``shut_down`` (failed with ``RuntimeShutdownError``), or is still ``in_flight``.
    """

    submitted: int
    completed: int
    failed: int
    timed_out: int
    cancelled: int
    shut_down: int
    in_flight: int
    wakeups: int

    @property
    def finished(self) -> int:
        """Commands that reached an outcome."""
        return self.completed + self.failed + self.timed_out + self.cancelled + self.shut_down


class _AgentSlot:
    """An agent object living on the runtime loop, with the chat tasks running on it."""

    __slots__ = ("agent", "chats")

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.chats: dict[Chat, asyncio.Task[Any]] = {}


def _check_timeout(timeout: float | None, default: float) -> float:
    if timeout is None:
        return default
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, not {timeout!r}")
    return float(timeout)


if sys.version_info >= (3, 12):

    def _start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], ctx: contextvars.Context
    ) -> asyncio.Task[Any]:
        # Eager start: a command that finishes without suspending never gets scheduled.
        return asyncio.Task(coro, loop=loop, context=ctx, eager_start=True)  # type: ignore[call-arg]

elif sys.version_info >= (3, 11):

    def _start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], ctx: contextvars.Context
    ) -> asyncio.Task[Any]:
        return loop.create_task(coro, context=ctx)

else:

    def _start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], ctx: contextvars.Context
    ) -> asyncio.Task[Any]:
        # 3.10 has no context= argument; a Task copies the context current at creation.
        return ctx.run(loop.create_task, coro)


async def _bounded(awaitable: Awaitable[T], seconds: float, on_expire: Callable[[], BaseException]) -> T:
    """Await with a deadline; raise ``on_expire()`` when *our* deadline passes.

    A ``TimeoutError`` raised by the awaited code itself (say, a network timeout inside an
    agent) is not ours and propagates unchanged (3.11+, where the scope can tell).
    """
    if sys.version_info >= (3, 11):
        scope = asyncio.timeout(seconds)
        try:
            async with scope:
                return await awaitable
        except TimeoutError:
            if scope.expired():
                raise on_expire() from None
            raise
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise on_expire() from None


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
        self._oneshot_type = self._core.Oneshot
        self._queue = self._core.CommandQueue(self._wake)
        self._op_timeout = self.config.round_trip_timeout
        self._caller_spin = self.config.caller_spin
        self._loop_spin = self.config.loop_spin
        self._lifecycle = threading.Lock()
        self._state = _NEW
        self._death: BaseException | None = None
        self._fork_generation = _fork_generation
        self._thread: threading.Thread | None = None
        self._thread_ident: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._stopped = threading.Event()
        # Loop-thread-only state.
        self._active: dict[PyCommand, asyncio.Task[Any]] = {}
        self._agents: dict[str, _AgentSlot] = {}
        self._last_chat_start = float("-inf")
        self._chat_gate: asyncio.Lock | None = None
        self._handlers: dict[type[PyCommand], Callable[[Any], Coroutine[Any, Any, Any]]] = {
            Chat: self._do_chat,
            Run: self._do_run,
            RegisterAgent: self._do_register,
            UnregisterAgent: self._do_unregister,
        }
        # Counters (written on the loop thread, or by shutdown after the loop is gone).
        self._n_submitted = 0
        self._n_completed = 0
        self._n_failed = 0
        self._n_timed_out = 0
        self._n_cancelled = 0
        self._n_shut_down = 0

    def __repr__(self) -> str:
        return f"<PythonRuntime {self._state} impl={self.implementation} in_flight={self._in_flight()}>"

    # ----------------------------------------------------------------------------------
    # Lifecycle
    # ----------------------------------------------------------------------------------

    @property
    def implementation(self) -> str:
        """``"cython"`` or ``"python"``: the core this runtime runs on."""
        return "python" if self._core.__name__.endswith("_core_py") else "cython"

    @property
    def is_running(self) -> bool:
        """True between a successful start and the beginning of shutdown (or death)."""
        return self._state == _RUNNING and self._fork_generation == _fork_generation

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The runtime's event loop (for code that must schedule onto it directly).

        Starts the runtime if it was never started; after shutdown it is the closed loop.
        """
        if self._loop is None:
            self.start()
        assert self._loop is not None
        return self._loop

    def start(self) -> PythonRuntime:
        """Start the runtime thread if it is not running yet; return self."""
        self._check_fork()
        if self._state == _RUNNING:
            return self
        with self._lifecycle:
            if self._state == _RUNNING:
                return self
            if self._state != _NEW:
                raise self._closed_error()
            ready = threading.Event()
            failure: list[BaseException] = []
            # An empty context: the thread must not inherit its creator's context variables
            # (free-threaded 3.14 copies them into new threads); each command carries its own.
            thread = threading.Thread(
                target=contextvars.Context().run,
                args=(self._thread_main, ready, failure),
                name=self.config.thread_name,
                daemon=True,
            )
            thread.start()
            ready.wait()
            if failure:
                self._state = _DIED
                raise RuntimeDiedError(f"the runtime thread failed to start: {failure[0]!r}") from failure[0]
            self._thread = thread
            self._state = _RUNNING
            _LIVE.add(self)
        logger.debug("runtime started on thread %s", self.config.thread_name)
        return self

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        if self.config.use_uvloop:
            try:
                import uvloop
            except ImportError:
                pass
            else:
                loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
                return loop
        return asyncio.new_event_loop()

    def _thread_main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            loop = self._new_loop()
            asyncio.set_event_loop(loop)
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.config.worker_threads, thread_name_prefix="agy-bridge-worker"
            )
            loop.set_default_executor(self._executor)
            self._loop = loop
            self._thread_ident = threading.get_ident()
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            failure.append(exc)
            ready.set()
            return
        ready.set()
        cause: BaseException | None = None
        try:
            loop.run_forever()
        except BaseException as exc:  # noqa: BLE001 - the thread is dying: record why
            cause = exc
        finally:
            try:
                if cause is not None or self._state not in (_STOPPING, _CLOSED):
                    self._die(cause)
                self._close_loop(loop)
            finally:
                self._stopped.set()

    def _die(self, cause: BaseException | None) -> None:
        """The loop stopped without an orderly shutdown: fail everything, refuse the rest."""
        reason = repr(cause) if cause is not None else "its event loop stopped unexpectedly"
        with self._lifecycle:
            self._state = _DIED
            self._death = cause
        logger.error("the agybridge runtime thread died: %s", reason, exc_info=cause)
        leftovers = self._queue.close()
        self._n_submitted += len(leftovers)
        message = f"the runtime thread died ({reason}); the command was not completed"
        for cmd in leftovers + list(self._active):
            error = RuntimeDiedError(message)
            error.__cause__ = cause
            cmd.oneshot.set_exception(error)
        # Leftovers never reached the loop: count them here. Active commands are counted
        # when _close_loop cancels their tasks and _execute's finally runs.
        self._n_shut_down += len(leftovers)

    def _close_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending and not loop.is_running():
                loop.run_until_complete(asyncio.wait(pending, timeout=max(self.config.shutdown_grace, 0.5)))
            for cmd in list(self._active):
                self._reap(cmd)  # tasks that never ran, or never finished
            loop.run_until_complete(loop.shutdown_asyncgens())
        except BaseException:
            logger.exception("error while closing the runtime loop")
        finally:
            if self._executor is not None:
                # Never wait for a hung tool thread; queued tool calls are dropped.
                self._executor.shutdown(wait=False, cancel_futures=True)
            asyncio.set_event_loop(None)
            loop.close()

    def shutdown(self, grace: float | None = None, *, timeout: float | None = None) -> None:
        """Stop the runtime; idempotent and safe from any thread but the runtime's own.

        New sends raise :class:`RuntimeShutdownError` at once; commands still queued fail
        with it; in-flight commands get *grace* seconds (default ``config.shutdown_grace``)
        to finish, then are cancelled and fail with it; agents with ``aclose()`` are
        closed; the loop is closed and the thread joined (waiting at most *timeout*
        seconds, default grace + 10).
        """
        if self._on_runtime_thread():
            raise DeadlockError(
                "shutdown() blocks until the runtime thread exits, so it cannot be called from "
                "that thread; use 'await runtime.ashutdown()' or call it from another thread"
            )
        grace = self.config.shutdown_grace if grace is None else _check_grace(grace)
        self._begin_shutdown(grace)
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout if timeout is not None else grace + 10.0)
            if thread.is_alive():
                logger.error("runtime thread did not exit within the shutdown timeout")

    async def ashutdown(self, grace: float | None = None) -> None:
        """:meth:`shutdown` for async callers (asyncio, trio, or the runtime loop itself)."""
        grace = self.config.shutdown_grace if grace is None else _check_grace(grace)
        self._begin_shutdown(grace)
        if self._on_runtime_thread() or self._thread is None:
            return  # never started, or the loop finishes the shutdown after we return
        # Wait for the thread to finish without blocking the caller's loop.
        shot = self._oneshot_type()
        threading.Thread(target=lambda: (self._stopped.wait(), shot.set_result(None)), daemon=True).start()
        await await_oneshot(shot, grace + 10.0, lambda: RuntimeShutdownError("shutdown timed out"), lambda: None)

    def _begin_shutdown(self, grace: float) -> None:
        with self._lifecycle:
            if self._fork_generation != _fork_generation:
                self._state = _CLOSED
                return
            state = self._state
            if state in (_STOPPING, _CLOSED, _DIED):
                return
            leftovers = self._queue.close()
            if state == _NEW:
                self._state = _CLOSED
                self._fail_leftovers(leftovers)
                return
            self._state = _STOPPING
        assert self._loop is not None
        command = Shutdown(grace, oneshot=self._oneshot_type())
        try:
            self._loop.call_soon_threadsafe(self._on_shutdown, command, leftovers)
        except RuntimeError:
            self._fail_leftovers(leftovers)  # the loop is already gone

    def _fail_leftovers(self, leftovers: list[PyCommand]) -> None:
        self._n_submitted += len(leftovers)
        for cmd in leftovers:
            if cmd.oneshot.set_exception(
                RuntimeShutdownError(f"{cmd.describe()} was still queued when the runtime shut down")
            ):
                self._n_shut_down += 1
            else:
                self._account(cmd)

    def _on_shutdown(self, command: Shutdown, leftovers: list[PyCommand]) -> None:
        self._fail_leftovers(leftovers)
        assert self._loop is not None
        self._loop.create_task(self._shutdown_sequence(command))

    async def _shutdown_sequence(self, command: Shutdown) -> None:
        try:
            active = list(self._active.values())
            if active and command.grace > 0:
                await asyncio.wait(active, timeout=command.grace)
            for cmd, task in list(self._active.items()):
                cmd.oneshot.set_exception(
                    RuntimeShutdownError(
                        f"{cmd.describe()} was cancelled by shutdown after a {command.grace} s grace period"
                    )
                )
                self._cancel_command(cmd, task)
            remaining = list(self._active.values())
            if remaining:
                await asyncio.wait(remaining, timeout=1.0)
            for agent_id in list(self._agents):
                await self._remove_agent(agent_id, "the runtime shut down")
            command.oneshot.set_result(None)
        finally:
            with self._lifecycle:
                self._state = _CLOSED
            _LIVE.discard(self)
            assert self._loop is not None
            self._loop.stop()

    def _shutdown_at_exit(self) -> None:
        if self._state in (_CLOSED, _DIED) or self._fork_generation != _fork_generation:
            return
        if sys.is_finalizing():
            return  # too late to block; the daemon thread dies with the interpreter
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

    # ----------------------------------------------------------------------------------
    # Guards
    # ----------------------------------------------------------------------------------

    def _check_fork(self) -> None:
        if self._fork_generation != _fork_generation:
            raise ForkedRuntimeError(
                "this PythonRuntime was created in a parent process and its thread does not exist "
                "in this forked child; create a new PythonRuntime in the child"
            )

    def _on_runtime_thread(self) -> bool:
        return self._thread_ident is not None and threading.get_ident() == self._thread_ident

    def _closed_error(self) -> RuntimeShutdownError:
        if self._state == _DIED:
            error: RuntimeShutdownError = RuntimeDiedError(
                f"the runtime thread died ({self._death!r}); create a new PythonRuntime"
            )
            error.__cause__ = self._death
            return error
        return RuntimeShutdownError("the runtime is shut down; it accepts no further commands")

    def _in_flight(self) -> int:
        return len(self._queue) + len(self._active)

    def _spin_budget(self) -> float:
        # Spinning pays only when the answer is microseconds away: when the command just
        # submitted is the only one in flight. Behind other commands the wait outlasts any
        # spin, and the spinner only takes a core from the runtime thread.
        return self._caller_spin if self._in_flight() <= 1 else 0.0

    # ----------------------------------------------------------------------------------
    # Submitting and waiting (caller side, any thread)
    # ----------------------------------------------------------------------------------

    def _submit(self, cmd: PyCommand) -> None:
        if not isinstance(cmd, PyCommand) or isinstance(cmd, Shutdown):
            raise TypeError(f"expected a PyCommand (Chat, Run, RegisterAgent, UnregisterAgent), not {cmd!r}")
        if self._state != _RUNNING or self._fork_generation != _fork_generation:
            self._check_fork()
            self.start()
        if self._in_flight() >= self.config.max_in_flight:
            raise RuntimeBusyError(
                f"{self._in_flight()} commands are in flight (max_in_flight="
                f"{self.config.max_in_flight}); retry later or raise the limit"
            )
        try:
            self._queue.push(cmd)
        except QueueClosedError:
            raise self._closed_error() from None

    def _timeout_error(self, cmd: PyCommand, limit: float) -> OperationTimeoutError:
        agent = f" for agent {cmd.agent_id!r}" if cmd.agent_id else ""
        return OperationTimeoutError(f"{cmd.describe()}{agent} did not complete within the {limit} s operation timeout")

    def _request_abort(self, cmd: PyCommand) -> None:
        """The caller completed *cmd* (cancel or timeout): stop its task on the loop."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._abort, cmd)
        except RuntimeError:
            pass  # the loop is closed: nothing runs there any more

    def send_command(self, cmd: PyCommand, timeout: float | None = None) -> Any:
        """Submit *cmd* and block until its outcome; returns its result or raises its error.

        *timeout* defaults to ``config.operation_timeout``; past it the command fails with
        :class:`OperationTimeoutError` and its task is cancelled. The GIL is released while
        waiting, and Ctrl-C interrupts the wait at once and cancels the command.
        """
        if self._on_runtime_thread():
            raise DeadlockError(
                f"send_command({cmd.describe() if isinstance(cmd, PyCommand) else cmd!r}) was called "
                "on the runtime's own thread, where blocking for a result can never finish; "
                "await the coroutine directly or use 'await runtime.asend_command(...)'"
            )
        limit = _check_timeout(timeout, self._op_timeout)
        if not isinstance(cmd, PyCommand):
            raise TypeError(f"expected a PyCommand (Chat, Run, RegisterAgent, UnregisterAgent), not {cmd!r}")
        shot = cmd.oneshot
        try:
            # The submit is inside the guard too: Ctrl-C can land after the push but before
            # the wait, and the command must not keep running then.
            self._submit(cmd)
            if not shot.wait(limit, self._spin_budget()) and shot.set_exception(self._timeout_error(cmd, limit)):
                self._request_abort(cmd)
        except Exception as exc:
            # A refused submit (shut down, busy): the oneshot records the same outcome.
            if shot.set_exception(exc):
                self._request_abort(cmd)
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
        limit = _check_timeout(timeout, self._op_timeout)
        try:
            self._submit(cmd)
        except Exception as exc:
            if isinstance(cmd, PyCommand):
                cmd.oneshot.set_exception(exc)  # a refused command is completed too
            raise
        spin = 0.0 if self._on_runtime_thread() else self._spin_budget()
        return await await_oneshot(
            cmd.oneshot, limit, lambda: self._timeout_error(cmd, limit), lambda: self._request_abort(cmd), spin
        )

    # -- helpers ---------------------------------------------------------------------------

    def chat(self, agent_id: str, message: str, timeout: float | None = None) -> str:
        """Send *message* to agent *agent_id* and return its reply (blocking)."""
        reply: str = self.send_command(Chat(agent_id, message, oneshot=self._oneshot_type()), timeout)
        return reply

    async def achat(self, agent_id: str, message: str, timeout: float | None = None) -> str:
        """Send *message* to agent *agent_id* and return its reply (asyncio or trio)."""
        reply: str = await self.asend_command(Chat(agent_id, message, oneshot=self._oneshot_type()), timeout)
        return reply

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` on the runtime loop and return its result (blocking)."""
        result: T = self.send_command(Run(fn, args, kwargs, oneshot=self._oneshot_type()), timeout)
        return result

    async def arun(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` on the runtime loop (asyncio or trio caller)."""
        result: T = await self.asend_command(Run(fn, args, kwargs, oneshot=self._oneshot_type()), timeout)
        return result

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
        self.send_command(
            RegisterAgent(agent_id, factory, bridge_state, replace=replace, oneshot=self._oneshot_type()), timeout
        )

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
        await self.asend_command(
            RegisterAgent(agent_id, factory, bridge_state, replace=replace, oneshot=self._oneshot_type()), timeout
        )

    def unregister_agent(self, agent_id: str, timeout: float | None = None) -> None:
        """Remove agent *agent_id*: its in-flight chats fail, then ``aclose()`` is awaited."""
        self.send_command(UnregisterAgent(agent_id, oneshot=self._oneshot_type()), timeout)

    async def aunregister_agent(self, agent_id: str, timeout: float | None = None) -> None:
        """:meth:`unregister_agent` for asyncio or trio callers."""
        await self.asend_command(UnregisterAgent(agent_id, oneshot=self._oneshot_type()), timeout)

    def agent_ids(self) -> list[str]:
        """The ids of the agents registered on this runtime (a snapshot)."""
        return list(self._agents)

    def metrics(self) -> RuntimeMetrics:
        """A snapshot of this runtime's counters."""
        return RuntimeMetrics(
            submitted=self._n_submitted + len(self._queue),
            completed=self._n_completed,
            failed=self._n_failed,
            timed_out=self._n_timed_out,
            cancelled=self._n_cancelled,
            shut_down=self._n_shut_down,
            in_flight=self._in_flight(),
            wakeups=self._queue.wakeups,
        )

    # ----------------------------------------------------------------------------------
    # Dispatcher (runtime loop thread only)
    # ----------------------------------------------------------------------------------

    def _wake(self) -> None:
        # Called by CommandQueue.push on a producer thread, once per idle->busy transition.
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._on_wake)
        except RuntimeError:
            # The loop is closed; the queue was closed before it, so the pushed command was
            # either refused or handed back by close() and failed there: nothing is lost.
            pass

    def _on_wake(self) -> None:
        spin = self._loop_spin
        if spin and getattr(self._loop, "_ready", None):
            spin = 0.0  # other callbacks are waiting: do not hold the loop for a push
        batch = self._queue.drain(spin)
        if not batch:
            return  # the queue marked us idle: the next push wakes us again
        self._n_submitted += len(batch)
        loop = self._loop
        assert loop is not None
        for cmd in batch:
            if cmd.oneshot.done():
                self._account(cmd)  # cancelled or timed out while still queued
                continue
            task = _start_task(loop, self._execute(cmd), cmd.context)
            if not task.done():
                self._active[cmd] = task
        # Keep draining until empty (pushes meanwhile did not wake us), after the tasks ran.
        loop.call_soon(self._on_wake)

    def _abort(self, cmd: PyCommand) -> None:
        task = self._active.get(cmd)
        if task is not None:
            self._cancel_command(cmd, task)

    def _cancel_command(self, cmd: PyCommand, task: asyncio.Task[Any]) -> None:
        """Cancel *cmd*'s task, making sure the command is still accounted for exactly once.

        A task cancelled before its first step never runs its coroutine, so _execute's own
        clean-up would never happen; the done callback reaps such a command instead.
        """
        task.add_done_callback(lambda _task: self._reap(cmd))
        task.cancel()

    def _reap(self, cmd: PyCommand) -> None:
        if self._active.pop(cmd, None) is not None:  # _execute did not get to clean up
            cmd.oneshot.cancel()
            self._account(cmd)

    def _account(self, cmd: PyCommand) -> None:
        """Count the outcome the oneshot holds; called once per command, on the loop thread."""
        shot = cmd.oneshot
        if shot.cancelled():
            self._n_cancelled += 1
            return
        exc = shot.exception(0)
        if exc is None:
            self._n_completed += 1
        elif isinstance(exc, (OperationTimeoutError, ChatTimeoutError)):
            self._n_timed_out += 1
        elif isinstance(exc, RuntimeShutdownError):
            self._n_shut_down += 1
        else:
            self._n_failed += 1

    async def _execute(self, cmd: PyCommand) -> None:
        shot = cmd.oneshot
        try:
            result = await self._handlers[type(cmd)](cmd)
        except asyncio.CancelledError:
            # Cancelled by the caller (who already completed the oneshot), by shutdown (which
            # did too), or by code on the loop: report that as the command's cancellation.
            shot.cancel()
        except BaseException as exc:  # noqa: BLE001 - every outcome goes to the caller
            shot.set_exception(exc)
        else:
            if shot.set_result(result):
                self._n_completed += 1  # the common case, counted without inspecting the oneshot
                if self._active:
                    self._active.pop(cmd, None)
                return
        self._active.pop(cmd, None)
        self._account(cmd)

    # -- handlers ------------------------------------------------------------------------

    async def _do_run(self, cmd: Run) -> Any:
        awaitable = cmd.fn(*cmd.args, **cmd.kwargs)
        if not isinstance(awaitable, Awaitable):
            raise TypeError(
                f"run() expects a coroutine function, but {cmd.describe()} returned "
                f"{type(awaitable).__name__} {awaitable!r}, which is not awaitable"
            )
        return await awaitable

    async def _do_chat(self, cmd: Chat) -> str:
        slot = self._agents.get(cmd.agent_id)
        if slot is None:
            raise UnknownAgentError(cmd.agent_id)
        task = asyncio.current_task()
        assert task is not None
        slot.chats[cmd] = task
        try:
            limit = self.config.chat_timeout
            # The chat timeout bounds the whole turn, hooks included: a hanging hook must not
            # stall a chat for longer than the agent itself may take.
            return await _bounded(
                self._chat_turn(cmd, slot),
                limit,
                lambda: ChatTimeoutError(
                    f"agent {cmd.agent_id!r} did not answer {cmd.describe()} within the {limit} s chat timeout"
                ),
            )
        finally:
            slot.chats.pop(cmd, None)

    async def _chat_turn(self, cmd: Chat, slot: _AgentSlot) -> str:
        state = BRIDGE_STATE.find(cmd.agent_id)
        if state is not None and state.hooks.has("before_chat"):
            await fire_hook_quietly(state, cmd.agent_id, "before_chat", {"message": cmd.message})
        try:
            await self._pass_chat_gate()
            # Nothing may suspend between the gate and this call: the spacing is measured
            # at the moment the agent starts, where a model request would go out.
            reply = await slot.agent.chat(cmd.message)
            if not isinstance(reply, str):
                raise TypeError(
                    f"agent {cmd.agent_id!r} returned {type(reply).__name__} from chat(); "
                    "the agent protocol requires a str reply"
                )
        except Exception as exc:
            if state is not None and state.hooks.has("on_error"):
                await fire_hook_quietly(state, cmd.agent_id, "on_error", {"message": cmd.message, "error": repr(exc)})
            raise
        if state is not None and state.hooks.has("after_chat"):
            await fire_hook_quietly(state, cmd.agent_id, "after_chat", {"message": cmd.message, "reply": reply})
        return reply

    async def _pass_chat_gate(self) -> None:
        """Let chats start one at a time, in arrival order, at least inter_agent_delay apart.

        The gap is measured from the moment the previous chat actually passed the gate, not
        from when a slot was reserved, so a chat that started late can never be followed too
        closely. The wait is part of the chat's time (its chat timeout bounds it); other
        command kinds never pass this gate.
        """
        delay = self.config.inter_agent_delay
        if delay <= 0:
            return
        loop = self._loop
        assert loop is not None
        if self._chat_gate is None:
            self._chat_gate = asyncio.Lock()
        async with self._chat_gate:
            while (wait := self._last_chat_start + delay - loop.time()) > 0:
                await asyncio.sleep(wait)
            self._last_chat_start = loop.time()

    async def _do_register(self, cmd: RegisterAgent) -> None:
        if cmd.agent_id in self._agents and not cmd.replace:
            raise AgentAlreadyRegisteredError(cmd.agent_id)
        agent = cmd.factory()
        if isinstance(agent, Awaitable):
            agent = await agent
        chat = getattr(agent, "chat", None)
        if not callable(chat):
            raise TypeError(
                f"the factory for agent {cmd.agent_id!r} returned {type(agent).__name__}, "
                "which has no 'async def chat(message)' method"
            )
        state = cmd.state if cmd.state is not None else AgentBridgeState()
        BRIDGE_STATE.insert(cmd.agent_id, state, replace=cmd.replace)
        if cmd.agent_id in self._agents:
            await self._remove_agent(cmd.agent_id, "it was replaced", keep_state=True)
        self._agents[cmd.agent_id] = _AgentSlot(agent)

    async def _do_unregister(self, cmd: UnregisterAgent) -> None:
        if cmd.agent_id not in self._agents:
            raise UnknownAgentError(cmd.agent_id)
        await self._remove_agent(cmd.agent_id, "it was unregistered")

    async def _remove_agent(self, agent_id: str, why: str, *, keep_state: bool = False) -> None:
        slot = self._agents.pop(agent_id, None)
        if not keep_state:
            state = BRIDGE_STATE.find(agent_id)
            if state is not None:
                try:
                    BRIDGE_STATE.remove(agent_id)
                except UnknownAgentError:
                    pass
                state.cancel_inflight()
        if slot is None:
            return
        for chat, task in list(slot.chats.items()):
            chat.oneshot.set_exception(
                CommandCancelledError(f"agent {agent_id!r} went away while {chat.describe()} was in flight: {why}")
            )
            task.cancel()
        aclose = getattr(slot.agent, "aclose", None)
        if callable(aclose):
            try:
                limit = max(self.config.shutdown_grace, 0.1)
                await _bounded(aclose(), limit, lambda: TimeoutError(f"aclose() took over {limit} s"))
            except Exception:
                logger.exception("agent %r: aclose() failed", agent_id)


def _check_grace(grace: float) -> float:
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not grace >= 0:
        raise ValueError(f"grace must be a number of seconds >= 0, not {grace!r}")
    return float(grace)
