"""The one send path: every command enters the runtime here, once, and is waited for here.

Submitting is one step for every kind of caller: check the command (single use, a fresh
oneshot), start the runtime if needed, admit it under ``max_in_flight`` and push it onto the
queue (whose idle-to-busy transition wakes the loop). Waiting is what differs, and there are
four ways: blocking (:meth:`Sender.send`), awaited under asyncio or trio
(:meth:`Sender.asend`), as a future (:meth:`Sender.submit_future`) and as a stream
(:meth:`Sender.start_stream`). Giving up is one rule for all four: the caller tries to
complete the command's oneshot (cancel or timeout); if that wins, the loop is asked to abort
the command's task; if it loses, the outcome that got there first stands.

This module runs on the caller's thread or loop only. It never imports the loop's wing: what
it needs of the loop (admission, the thread's state, the abort request) comes as the
callables of a :class:`LoopDoor` that the facade (:mod:`agybridge.runtime`) hands in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from agybridge import _validate
from agybridge._backends import (
    _seen,
    await_oneshot,
    checkpoint_if_cancelled,
    host_key,
    in_trio_run,
    running_host_key,
    shielded_under_trio,
)
from agybridge._caller.futures import CommandFuture
from agybridge._caller.serving import StreamCaller
from agybridge._origin import (
    BlockingCaller,
    LoopCaller,
    on_a_runtime_loop,
    set_caller,
    thread_sensitive_seen,
    worker_pool,
)
from agybridge._registry import BRIDGE_STATE
from agybridge._select import Channel, Oneshot
from agybridge.commands import (
    CallAgent,
    Chat,
    ChatStream,
    PyCommand,
    RegisterAgent,
    Run,
    Shutdown,
    Stream,
    UnregisterAgent,
)
from agybridge.config import RuntimeConfig
from agybridge.errors import (
    CommandCancelledError,
    CommandReusedError,
    DeadlockError,
    OperationTimeoutError,
    QueueClosedError,
    RuntimeBusyError,
)

__all__ = ["HeldContext", "HeldCounter", "LoopDoor", "Sender", "caller_spin_budget", "end_channel_with"]

logger = logging.getLogger("agybridge")

_COMMANDS = "a PyCommand (Chat, CallAgent, Run, RegisterAgent, UnregisterAgent, Shutdown)"

#: The command types a send takes as they are (a subclass, or Shutdown, takes the long check).
_PLAIN_COMMANDS = frozenset({Run, Chat, CallAgent, RegisterAgent, UnregisterAgent, Stream, ChatStream})


def caller_spin_budget(configured: float, in_flight: int) -> float:
    """How long a caller should poll for its answer before parking.

    Spinning pays only when the answer is microseconds away: when the command just
    submitted is the only one in flight. Behind other commands the wait outlasts any
    spin, and the spinner only takes a core from the runtime thread.
    """
    return configured if in_flight <= 1 else 0.0


class HeldCounter(Protocol):
    """The loop wing's count of idle held contexts (read here, written on the loop)."""

    count: int


class HeldContext(Protocol):
    """What a caller's face uses of the loop-side holder of a held context manager."""

    __qualname__: str
    held: Any
    #: Completed with ``__aenter__``'s value; the signal carries the body's exception in; the
    #: verdict carries ``(suppressed, what __aexit__ raised)`` out.
    entered: Oneshot
    signal: Oneshot
    verdict: Oneshot

    def __call__(self) -> Awaitable[None]:
        """The holder's task body, run on the loop as the enter command's coroutine."""


@dataclass(frozen=True, slots=True)
class LoopDoor:
    """What the send path needs of the loop's wing, as callables the facade binds.

    Every one of them is safe to call from any thread.
    """

    #: The runtime's own registry of agent states (never the process-wide view).
    registry: Any
    #: The runtime's command queue: ``queue.submit(cmd, limit)`` claims, admits, pushes and
    #: wakes in one compiled call (-1: admitted; see ``CommandQueue.submit`` for the rest).
    queue: Any
    #: Start the runtime thread if it is not running (raises if it cannot run any more).
    ensure_running: Callable[[], None]
    #: Whether the thread runs (a snapshot).
    is_running: Callable[[], bool]
    #: Whether the caller is the runtime's own loop thread.
    on_loop_thread: Callable[[], bool]
    #: In a forked child: rebuild the runtime's parts for this process (``after_fork="restart"``,
    #: which rebinds this Sender to a new door) or raise :class:`ForkedRuntimeError`.
    check_fork: Callable[[], None]
    #: Make the loop-side holder of a context manager held open by ``enter()``.
    make_holder: Callable[[Any], HeldContext]
    #: The error for a send refused by a closed queue (shut down, or died).
    closed_error: Callable[[], Exception]
    #: Ask the loop to cancel *cmd*'s task (the caller completed its oneshot).
    abort: Callable[[PyCommand], None]
    #: Ask the loop to stop the producer of a stream whose consumer left.
    stop_stream: Callable[[PyCommand], None]
    #: A oneshot completed once *cmd*'s task on the loop has ended (at once if it is not
    #: running), ordered after the abort / stop requests made before it.
    finished: Callable[[PyCommand], Oneshot]
    #: Shut the runtime down (a :class:`Shutdown` command): blocking, and awaited.
    shutdown: Callable[[float | None, float | None], None]
    ashutdown: Callable[[float | None], Awaitable[None]]


def end_channel_with(channel: Channel, what: str) -> Callable[[Oneshot], None]:
    """A done callback for a stream command's oneshot: end *channel* with its outcome.

    A result ends the stream cleanly (the producer is exhausted), an exception ends it with
    that exception after the items already buffered, a cancellation with
    :class:`CommandCancelledError`. If the consumer already left, nothing happens.
    """

    def end(shot: Oneshot) -> None:
        if shot.cancelled():
            channel.finish(CommandCancelledError(f"{what} was cancelled"))
        else:
            channel.finish(shot.exception(0))

    return end


_AGENT_COMMANDS = (Chat, ChatStream, CallAgent)


def _refuse_chat_on_its_host(cmd: Chat | ChatStream, here: object, registry: Any) -> None:
    # The sending runtime's own registry: through BRIDGE_STATE, off every runtime thread, an id
    # that two runtimes both registered is ambiguous (AgentOwnershipError), yet this chat has one.
    state = registry.find(cmd.agent_id)
    if state is None or state.host is None or host_key(state.host) is not here:
        return
    if any(tool.is_async for tool in list(state.tools.values())):
        raise DeadlockError(
            f"chat() with agent {cmd.agent_id!r} would block {state.host.describe()}, which runs that agent's "
            "async tools, so they could never run; on this loop use 'await runtime.achat(...)'"
        )


def _serves(cmd: PyCommand) -> bool:
    """Whether the caller of *cmd* may be asked to run thread-sensitive tool calls.

    A chat or an agent call: its agent's own tools, and those of any agent it reaches with an
    ``achat`` of its own, which inherits this caller (so they never run on the runtime loop).
    """
    return thread_sensitive_seen() and type(cmd) in _AGENT_COMMANDS


def blocking_caller(
    cmd: PyCommand, abort: Callable[[PyCommand], None] | None = None, registry: Any = BRIDGE_STATE
) -> BlockingCaller | None:
    """For a blocking send, before submitting: the caller object, or None on the fast path.

    *abort* cancels the command on the loop: the caller calls it when Ctrl-C lands while it
    runs a thread-sensitive tool. Raises :class:`DeadlockError` for a ``chat()`` made on the
    loop that hosts the agent's async tools.
    """
    if not _seen.caller_checks:
        return None  # the fast path: no host loop, thread-sensitive tool or worker anywhere
    here = running_host_key()
    serves = _serves(cmd)
    pool = worker_pool()  # a sync tool's worker thread: it lends its pool slot while it waits
    if here is None and not serves and pool is None:
        return None
    if here is not None and isinstance(cmd, Chat):
        _refuse_chat_on_its_host(cmd, here, registry)
    caller = BlockingCaller(cmd, here, serves, abort, pool)
    set_caller(cmd.context, caller)
    return caller


async def _before_async_send(cmd: PyCommand) -> None:
    """For an awaited send, before submitting: trio's cancelled-scope rule, the loop caller."""
    if asyncio._get_running_loop() is None and in_trio_run():
        try:
            await checkpoint_if_cancelled()  # an already-cancelled scope never submits
        except BaseException:
            if isinstance(cmd, PyCommand):
                cmd.oneshot.cancel()
            raise
    if _serves(cmd) and not on_a_runtime_loop():
        # Never on a runtime's own loop (an agent's achat to another agent): that command
        # keeps the caller it inherited, and its tools run where that caller is.
        set_caller(cmd.context, LoopCaller(cmd))


def _refuse_reuse(cmd: PyCommand, code: int) -> None:
    """Raise :class:`CommandReusedError` for the admission codes -2 (sent before) and -3 (done)."""
    if code == -2:
        raise CommandReusedError(
            f"{cmd.describe()} was already sent (its outcome: {cmd.oneshot!r}); commands are "
            "single-use, so make a new one for every send"
        )
    if code == -3:
        raise CommandReusedError(
            f"{cmd.describe()} carries a oneshot that is already completed ({cmd.oneshot!r}); "
            "give every command a new Oneshot"
        )


def _nothing() -> None:
    pass


def report_slow_cleanup(cmd: PyCommand, limit: float) -> None:
    """A cleanup on the loop outlasted the bound the caller waits for it: say so, go on."""
    logger.warning(
        "%s: the remote cleanup (its except/finally blocks) did not finish within the %s s operation "
        "timeout after the caller left; it keeps running on the runtime loop",
        cmd.describe(),
        limit,
    )


class Sender:
    """The caller's side of one runtime: submit once, then wait one of four ways.

    Made by the facade, which binds *door* to its loop thread and dispatcher; the faces
    (wrap, futures, handles, held contexts, streams) take a Sender, never the runtime.
    """

    def __init__(self, core: ModuleType, config: RuntimeConfig, door: LoopDoor, held: HeldCounter) -> None:
        self.core = core
        self.config = config
        self.oneshot: Callable[[], Oneshot] = core.Oneshot
        self._held = held  # idle held contexts: in flight, yet no caller waits behind them
        self._door = door
        self._queue = door.queue
        self._running = False  # True once a send saw the thread run; a closed queue resets it
        # The process these parts were last checked in (core.process_token(): no system call).
        self._process_token: Callable[[], int] = core.process_token
        self._checked_in = self._process_token()
        #: The bound of one round trip (``RuntimeConfig.operation_timeout``, never None once built).
        operation_timeout = config.operation_timeout
        assert operation_timeout is not None
        self.operation_timeout: float = operation_timeout
        self._caller_spin = config.caller_spin
        self._max_in_flight = config.max_in_flight
        self._limit = -1 if config.max_in_flight is None else config.max_in_flight

    def rebind(self, door: LoopDoor, held: HeldCounter) -> None:
        """Serve a rebuilt loop wing (a forked child's); the faces keep this Sender."""
        self._door, self._queue, self._held = door, door.queue, held
        self._running = False
        self._checked_in = self._process_token()

    @property
    def held(self) -> HeldCounter:
        """The count of idle held contexts of the loop wing this Sender serves."""
        return self._held

    def make_holder(self, source: Any) -> HeldContext:
        """The loop-side holder for a context manager that ``enter()`` will hold open."""
        return self._door.make_holder(source)

    def here(self) -> None:
        """Make sure the parts served are this process's (a no-op but in a forked child).

        The first step of every send: one compiled read of the core's fork count while
        nothing forked; in a forked child, the door's check (which rebuilds this runtime's
        parts there, rebinding this Sender, or raises :class:`ForkedRuntimeError`).
        """
        token = self._process_token()
        if token != self._checked_in:
            self._door.check_fork()
            self._checked_in = token

    # -- what every way of waiting shares ----------------------------------------------------

    def is_running(self) -> bool:
        """Whether the runtime thread runs (a snapshot)."""
        return self._door.is_running()

    def on_loop_thread(self) -> bool:
        """Whether the caller is the runtime's own loop thread."""
        return self._door.on_loop_thread()

    def submit(self, cmd: PyCommand) -> None:
        """Queue *cmd*, or raise why not; a refused command's oneshot records the refusal.

        The one way in: a lazy start, then one compiled call (``CommandQueue.submit``) that
        claims the single-use command, checks the ``max_in_flight`` bound, pushes and wakes.
        """
        if type(cmd) not in _PLAIN_COMMANDS and (not isinstance(cmd, PyCommand) or isinstance(cmd, Shutdown)):
            raise TypeError(f"expected {_COMMANDS}, not {cmd!r}")
        self._admit(cmd)

    def _admit(self, cmd: PyCommand) -> None:
        # submit() for a command already checked to be one (send() checks it first).
        code = -4
        if self._running:
            try:
                code = self._queue.submit(cmd, self._limit)
            except QueueClosedError:
                self._running = False
        if code == -4:
            code = self._submit_starting(cmd)
        if code != -1:
            _refuse_reuse(cmd, code)
            busy = RuntimeBusyError(
                f"{code} commands are in flight (max_in_flight={self._max_in_flight}); retry later or raise the limit"
            )
            cmd.oneshot.set_exception(busy)
            raise busy

    def _submit_starting(self, cmd: PyCommand) -> int:
        """The slow way in: start the runtime if needed, or say why it cannot take commands."""
        door = self._door
        try:
            if not door.is_running():
                _refuse_reuse(cmd, -2 if cmd.was_sent else -3 if cmd.oneshot.done() else -1)
                door.ensure_running()
            try:
                code: int = self._queue.submit(cmd, self._limit)
            except QueueClosedError:
                _refuse_reuse(cmd, -2 if cmd.was_sent else -3 if cmd.oneshot.done() else -1)
                raise door.closed_error() from None
        except CommandReusedError:
            raise  # the oneshot belongs to the first send
        except Exception as exc:
            # Refused (shut down, died): the oneshot records the same outcome. The command
            # never reached the queue, so the loop has nothing to abort.
            cmd.oneshot.set_exception(exc)
            raise
        self._running = True
        return code

    def abort(self, cmd: PyCommand) -> None:
        """The caller completed *cmd* (cancel or timeout): stop its task on the loop."""
        self._door.abort(cmd)

    def timeout_error(self, cmd: PyCommand, limit: float) -> OperationTimeoutError:
        """The error a caller's round-trip timeout completes *cmd* with."""
        agent = f" for agent {cmd.agent_id!r}" if cmd.agent_id else ""
        return OperationTimeoutError(f"{cmd.describe()}{agent} did not complete within the {limit} s operation timeout")

    def spin_budget(self) -> float:
        """How long this caller may poll before parking (held contexts are idle: not counted)."""
        return caller_spin_budget(self._caller_spin, self._queue.in_flight - self._held.count)

    def limit(self, timeout: float | None) -> float:
        """The round-trip bound for one send: *timeout*, or the configured default."""
        return _validate.timeout_or_default(timeout, self.operation_timeout)

    # -- the four ways of waiting ------------------------------------------------------------

    def send(self, cmd: PyCommand, timeout: float | None = None) -> Any:
        """Submit *cmd* and block until its outcome (see :meth:`PythonRuntime.send_command`)."""
        if self._process_token() != self._checked_in:
            self.here()  # in a forked child: this process's parts (the door may change)
        door = self._door
        if door.on_loop_thread():
            raise DeadlockError(
                f"send_command({cmd.describe() if isinstance(cmd, PyCommand) else cmd!r}) was called "
                "on the runtime's own thread, where blocking for a result can never finish; "
                "await the coroutine directly or use 'await runtime.asend_command(...)'"
            )
        limit = self.operation_timeout if timeout is None else self.limit(timeout)
        if type(cmd) not in _PLAIN_COMMANDS:
            if isinstance(cmd, Shutdown):
                door.shutdown(cmd.grace, limit)
                cmd.oneshot.set_result(None)
                return None
            if not isinstance(cmd, PyCommand):
                raise TypeError(f"expected {_COMMANDS}, not {cmd!r}")
        # None unless this thread runs a loop or the chat may need this thread for a tool.
        caller = blocking_caller(cmd, door.abort, door.registry) if _seen.caller_checks else None
        shot = cmd.oneshot
        try:
            # The submit is inside the guard too: Ctrl-C can land after the push but before
            # the wait, and the command must not keep running then.
            self._admit(cmd)
            spin = caller_spin_budget(self._caller_spin, self._queue.in_flight - self._held.count)
            done = shot.wait(limit, spin) if caller is None else caller.wait(limit, spin)
            if not done and shot.set_exception(self.timeout_error(cmd, limit)):
                door.abort(cmd)
        except Exception:
            raise
        except BaseException:
            # KeyboardInterrupt (or another signal handler's exception) while waiting.
            if shot.cancel():
                door.abort(cmd)
            raise
        return shot.result(0)

    async def asend(self, cmd: PyCommand, timeout: float | None = None) -> Any:
        """Submit *cmd* and await its outcome under asyncio or trio (see ``asend_command``)."""
        self.here()  # in a forked child: this process's parts (the door may change)
        door = self._door
        limit = self.limit(timeout)
        if isinstance(cmd, Shutdown):
            await door.ashutdown(cmd.grace)
            cmd.oneshot.set_result(None)
            return None
        if asyncio._get_running_loop() is None or _serves(cmd):
            await _before_async_send(cmd)  # trio: a cancelled scope never submits
        self.submit(cmd)
        spin = 0.0 if door.on_loop_thread() else self.spin_budget()
        aborted: list[bool] = []

        def abort() -> None:
            aborted.append(True)
            door.abort(cmd)

        try:
            return await await_oneshot(cmd.oneshot, limit, lambda: self.timeout_error(cmd, limit), abort, spin)
        except BaseException as exc:
            if aborted and not isinstance(exc, Exception):
                # This caller's cancellation stopped the command: return once the remote
                # except/finally blocks have run (bounded), as anyio's portal does. (A timeout
                # is reported at once: its bound is the caller's, and it has passed.)
                await self.await_cleanup(cmd, door.finished(cmd))
            raise

    def submit_future(self, cmd: PyCommand) -> CommandFuture[Any]:
        """Submit *cmd* without waiting; its outcome goes to the returned future."""
        self.here()  # in a forked child: this process's parts (the door may change)
        door = self._door
        future: CommandFuture[Any] = CommandFuture(cmd.oneshot, lambda: door.abort(cmd), door.on_loop_thread)
        try:
            self.submit(cmd)
        except Exception:
            raise
        except BaseException:
            # Ctrl-C after the push: nobody will get the future, so the command must not run on.
            if cmd.oneshot.cancel():
                door.abort(cmd)
            raise
        return future

    def start_stream(self, cmd: Stream | ChatStream, blocking: bool) -> StreamCaller | None:
        """Submit a stream's command; its channel ends with the command's outcome.

        A blocking consumer gets the caller object that serves its thread-sensitive tool calls
        (None on the fast path), and a streamed chat on the loop that hosts its agent's async
        tools is refused with :class:`DeadlockError`, as ``chat()`` is.
        """
        self.here()  # in a forked child: this process's parts (the door may change)
        door = self._door
        if blocking and door.on_loop_thread():
            raise DeadlockError(
                f"a blocking iteration of {cmd.describe()} was started on the runtime's own thread, where "
                "waiting for an item can never finish; use 'async for' over runtime.astream(...)"
            )
        caller = self._stream_caller(cmd) if blocking else None
        cmd.oneshot.add_done_callback(end_channel_with(cmd.channel, cmd.describe()))
        self.submit(cmd)
        return caller

    async def astart_stream(self, cmd: Stream | ChatStream) -> None:
        """:meth:`start_stream` for ``async for``: trio's cancelled-scope rule first (an
        already-cancelled scope never submits, as for every awaited call), and an
        ``achat_stream`` consumer's loop runs its thread-sensitive tools, as ``achat``'s does."""
        self.here()
        await _before_async_send(cmd)
        self.start_stream(cmd, blocking=False)

    def _stream_caller(self, cmd: Stream | ChatStream) -> StreamCaller | None:
        if not _seen.caller_checks:
            return None  # the fast path: no host loop, no thread-sensitive tool anywhere
        here = running_host_key()
        serves = thread_sensitive_seen()
        if here is None and not serves:
            return None
        if here is not None and isinstance(cmd, ChatStream):
            _refuse_chat_on_its_host(cmd, here, self._door.registry)
        caller = StreamCaller(cmd, here, serves, lambda: self.stop_stream(cmd))
        set_caller(cmd.context, caller)
        return caller

    def when_finished(self, cmd: PyCommand) -> Oneshot:
        """A oneshot completed once *cmd*'s task has ended on the loop (its ``finally`` ran)."""
        return self._door.finished(cmd)

    def wait_cleanup(self, cmd: PyCommand, finished: Oneshot) -> None:
        """Block until *finished*, at most the operation timeout; past it, report and go on."""
        if not finished.done() and not finished.wait(self.operation_timeout, 0.0):
            report_slow_cleanup(cmd, self.operation_timeout)

    async def await_cleanup(self, cmd: PyCommand, finished: Oneshot) -> None:
        """:meth:`wait_cleanup`, awaited (under trio shielded: the caller may be cancelled)."""
        if finished.done():
            return
        limit = self.operation_timeout
        try:
            await shielded_under_trio(
                await_oneshot(finished, limit, lambda: OperationTimeoutError("cleanup"), _nothing)
            )
        except OperationTimeoutError:
            report_slow_cleanup(cmd, limit)

    def stop_stream(self, cmd: Stream | ChatStream) -> None:
        """The consumer of *cmd* left: stop its producer on the loop."""
        self._door.stop_stream(cmd)
