"""Pure-Python twin of ``agybridge._core``.

Same names, same signatures, same docstrings and same behaviour as the compiled module;
it is what runs where no C compiler was available or ``AGYBRIDGE_NO_EXTENSIONS=1`` is set.
The two files are laid out section by section in the same order so that one can be checked
against the other. Locks are ``_thread`` locks: the cheapest primitive CPython offers, and
interruptible by Ctrl-C while waiting on POSIX.

Free threading: state that changes after construction is read and written under the
object's lock, except single attribute reads of flags, counts and never-replaced dicts,
which are atomic on the free-threaded build as well (each object's reference count and
each dict's own lock keep them consistent), exactly as described in ``agybridge._core``.
"""

from __future__ import annotations

import math
import os
import time
from _thread import allocate_lock
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

from agybridge._diagnostics import report_callback_error
from agybridge._validate import agent_id as _check_agent_id  # the one agent-id validator
from agybridge.errors import (
    AgentAlreadyRegisteredError,
    CommandCancelledError,
    QueueClosedError,
    UnknownAgentError,
    WaitTimeoutError,
)

__all__ = [
    "IMPLEMENTATION",
    "AgentRegistry",
    "Channel",
    "CommandQueue",
    "Oneshot",
    "process_token",
    "set_max_spinners",
]

#: Which implementation this module is: the pure-Python twin (agybridge._select reports what it
#: actually loaded from here).
IMPLEMENTATION: Literal["cython", "python"] = "python"

# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------

_PENDING = 0
_RESULT = 1
_EXCEPTION = 2
_CANCELLED = 3

# The longest single blocking wait; longer timeouts are waited in slices of this size.
_MAX_WAIT_SLICE = 3600.0

_MISSING: Any = object()


def _check_timeout(timeout: float | None) -> float:
    """Return the timeout as a float, ``-1.0`` meaning "wait forever"."""
    if timeout is None:
        return -1.0
    value = float(timeout)
    if math.isnan(value) or value < 0:
        raise ValueError(f"timeout must be None or a number >= 0, not {timeout!r}")
    return value


def process_token() -> int:
    """A number that differs in a forked child from its value in the parent (no system call).

    The send path compares it with the value it saw when it was bound, to notice, on every
    send, that it now runs in a forked child. The compiled core counts forks with a
    ``pthread_atfork`` child handler (so a fork made in C is counted too, and reading it is
    one memory load); the twin returns ``os.getpid()``.
    """
    return os.getpid()


def set_max_spinners(n: int) -> None:
    """Cap the number of threads spinning at once (0 disables spinning everywhere)."""
    # The twin never spins (a Python loop would hold the GIL), so this only validates *n*.
    if n < 0:
        raise ValueError(f"max spinners must be >= 0, not {n}")


# --------------------------------------------------------------------------------------
# Oneshot
# --------------------------------------------------------------------------------------


class Oneshot:
    """A single-assignment completion cell shared by one producer and its waiters.

    The first of ``set_result``/``set_exception``/``cancel`` wins and returns True; every
    later one returns False instead of raising, because racing completers (a result
    arriving while a caller times out or cancels) are normal, and exactly one outcome must
    be kept. Waiters block on a lock created held (completion releases it), so a blocking
    wait costs no polling; other event loops are woken through ``add_done_callback``.

    Thread rules: any thread may complete it, wait on it or add done callbacks; asyncio and
    trio callers await it through a done callback, never by blocking in ``wait``. The
    runtime makes one per command (of its own core); make one yourself only to build a
    :class:`PyCommand` by hand, and give every command a new one.
    """

    __slots__ = ("__weakref__", "_callbacks", "_mutex", "_state", "_tb", "_value", "_waitlock")

    def __init__(self) -> None:
        self._mutex = allocate_lock()
        self._waitlock = allocate_lock()
        self._waitlock.acquire()
        self._state = _PENDING
        self._value: Any = None
        self._tb: TracebackType | None = None  # the exception's traceback as set: every raise restarts from it
        self._callbacks: list[Callable[[Oneshot], object]] | None = None

    def __repr__(self) -> str:
        names = {_PENDING: "pending", _RESULT: "result", _EXCEPTION: "exception", _CANCELLED: "cancelled"}
        return f"<Oneshot {names[self._state]}>"

    # -- completion ---------------------------------------------------------------------

    def _complete(self, state: int, value: Any, tb: TracebackType | None = None) -> bool:
        with self._mutex:
            if self._state != _PENDING:
                return False
            self._value = value
            self._tb = tb
            self._state = state
            callbacks = self._callbacks
            self._callbacks = None
        self._waitlock.release()
        if callbacks is not None:
            for callback in callbacks:
                self._run_callback(callback)
        return True

    def set_result(self, value: Any) -> bool:
        """Complete with *value*. True if this call completed the oneshot, else False."""
        return self._complete(_RESULT, value)

    def set_exception(self, exc: BaseException | type[BaseException]) -> bool:
        """Complete with an exception (an instance, or a class to instantiate).

        The exception object is kept as is, so its type, message and ``__traceback__``
        reach the waiter intact. The traceback is recorded now and restored before every
        ``result()`` raise and ``exception()`` return, so repeated raises keep the frames
        where the error happened and never pile up frames of their own.
        True if this call completed the oneshot, else False.
        """
        if isinstance(exc, type) and issubclass(exc, BaseException):
            exc = exc()
        if not isinstance(exc, BaseException):
            raise TypeError(f"set_exception() needs an exception, not {type(exc).__name__}")
        return self._complete(_EXCEPTION, exc, exc.__traceback__)

    def cancel(self) -> bool:
        """Complete as cancelled. True if this call completed the oneshot, else False."""
        return self._complete(_CANCELLED, None)

    # -- inspection ---------------------------------------------------------------------

    def done(self) -> bool:
        """True once any completion has happened."""
        return self._state != _PENDING

    def cancelled(self) -> bool:
        """True if the oneshot was completed by ``cancel()``."""
        return self._state == _CANCELLED

    # -- waiting ------------------------------------------------------------------------

    def wait(self, timeout: float | None = None, spin: float = 0.0) -> bool:
        """Block until done or *timeout* seconds pass; return ``done()``.

        With *spin* > 0 the waiter first polls for up to *spin* seconds with the GIL
        released (when a spinning slot is free) before parking: worth it when the answer is
        expected within microseconds. The pure-Python twin accepts and ignores *spin*.
        A signal handler that raises (Ctrl-C's ``KeyboardInterrupt``) interrupts the wait
        at once and propagates.
        """
        limit = _check_timeout(timeout)
        if self._state != _PENDING:
            return True
        waitlock = self._waitlock
        if limit < 0:
            while not waitlock.acquire(True, _MAX_WAIT_SLICE):
                pass
        else:
            deadline = time.monotonic() + limit
            while True:
                if waitlock.acquire(True, min(limit, _MAX_WAIT_SLICE)):
                    break
                limit = deadline - time.monotonic()
                if limit <= 0:
                    return self._state != _PENDING
        # Pass the wake-up on to the next waiter: the lock stays released once done.
        waitlock.release()
        return True

    def _outcome(self) -> Any:
        state = self._state
        if state == _RESULT:
            return self._value
        if state == _EXCEPTION:
            raise self._value.with_traceback(self._tb)
        raise CommandCancelledError("the oneshot was cancelled")

    def result(self, timeout: float | None = None) -> Any:
        """Return the result, waiting up to *timeout* seconds (None: forever).

        Raises the stored exception, ``CommandCancelledError`` if cancelled, or
        ``WaitTimeoutError`` (a ``TimeoutError``) if still pending at the deadline.
        """
        if self._state == _PENDING and not self.wait(timeout):
            raise WaitTimeoutError(f"oneshot not completed within {timeout} s")
        return self._outcome()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Like ``result()`` but return the stored exception (None after a result)."""
        if self._state == _PENDING and not self.wait(timeout):
            raise WaitTimeoutError(f"oneshot not completed within {timeout} s")
        state = self._state
        if state == _EXCEPTION:
            exc: BaseException = self._value
            return exc.with_traceback(self._tb)
        if state == _CANCELLED:
            raise CommandCancelledError("the oneshot was cancelled")
        return None

    # -- callbacks ----------------------------------------------------------------------

    def add_done_callback(self, fn: Callable[[Oneshot], object]) -> None:
        """Call ``fn(oneshot)`` exactly once when done (now, if already done).

        The callback runs on whichever thread completed the oneshot, so it must be short
        and thread-safe (``loop.call_soon_threadsafe``, ``TrioToken.run_sync_soon``). An
        exception escaping it is logged on the ``agybridge`` logger, never propagated.
        """
        if not callable(fn):
            raise TypeError(f"add_done_callback() needs a callable, not {type(fn).__name__}")
        with self._mutex:
            if self._state == _PENDING:
                if self._callbacks is None:
                    self._callbacks = [fn]
                else:
                    self._callbacks.append(fn)
                return
        self._run_callback(fn)

    def _run_callback(self, fn: Callable[[Oneshot], object]) -> None:
        # Every callback must run even if an earlier one raised, so nothing escapes here.
        try:
            fn(self)
        except BaseException as exc:  # noqa: BLE001 - the completer must finish whatever a callback does
            try:
                report_callback_error(fn, exc)
            except BaseException:  # noqa: BLE001 - logging itself failed: nothing left to tell
                pass


def _wake_descriptors() -> tuple[int, int, bool]:
    """A non-blocking, close-on-exec eventfd (read end, write end, True), or a pipe (r, w, False)."""
    eventfd = getattr(os, "eventfd", None)
    if eventfd is not None:
        fd: int = eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return fd, fd, True
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w, False


# --------------------------------------------------------------------------------------
# CommandQueue
# --------------------------------------------------------------------------------------


class CommandQueue:
    """Multi-producer, single-consumer queue with coalesced wake-ups and admission.

    A push wakes the consumer only when the consumer is idle, i.e. when no wake-up is
    outstanding. The consumer counts as busy from that wake-up until a ``drain()`` comes
    back empty, so it must keep draining until it gets an empty list; pushes in between
    are picked up by those drains without another wake-up. A burst of N pushes therefore
    costs one wake-up, not N. The "armed" flag is cleared only by the empty drain, inside
    the same locked step that found nothing, so no item can be stranded between a drain
    and the next push.

    The wake-up is either a callable or, by default, a file descriptor the queue owns: an
    ``eventfd`` (a pipe where there is none) that the idle-to-armed push writes with the
    GIL released. The consumer registers :meth:`fileno` with its loop's ``add_reader`` and
    calls :meth:`ack` in the reader callback, before draining. Writing a descriptor is one
    system call and no Python code on the producer's side; the loop's own
    ``call_soon_threadsafe`` costs a Handle and a socket write per call, never coalesced.

    :meth:`submit` is the runtime's one call per send: claim the single-use command, check
    the ``max_in_flight`` bound, push and wake, under one lock. Commands it admitted count
    as in flight until the consumer reports each finished (:meth:`finished_one`).

    :param wake: called with no arguments, on the pushing thread, whenever a push finds the
        consumer idle; it must be cheap, thread-safe and non-blocking. None (the default):
        the queue wakes its consumer through its own descriptor instead.

    Thread rules: any number of threads may ``push`` or ``submit``; exactly one consumer
    (the runtime loop) may ``drain`` and ``ack``; ``close`` may be called from any thread.
    The descriptor lives as long as the queue, so no push can ever write to a closed one.
    """

    __slots__ = (
        "__weakref__",
        "_armed",
        "_closed",
        "_eventfd",
        "_finished",
        "_items",
        "_mutex",
        "_rfd",
        "_submitted",
        "_wake",
        "_wakeups",
        "_wfd",
    )

    def __init__(self, wake: Callable[[], object] | None = None) -> None:
        if wake is not None and not callable(wake):
            raise TypeError(f"CommandQueue(wake) needs a callable or None, not {type(wake).__name__}")
        self._wake = wake
        self._mutex = allocate_lock()
        self._items: list[Any] = []
        self._armed = False
        self._closed = False
        self._wakeups = 0
        self._submitted = 0
        self._finished = 0
        self._rfd, self._wfd, self._eventfd = _wake_descriptors() if wake is None else (-1, -1, False)

    def __del__(self) -> None:
        for fd in {getattr(self, "_rfd", -1), getattr(self, "_wfd", -1)} - {-1}:
            try:
                os.close(fd)
            except OSError:
                pass
        self._rfd = self._wfd = -1

    def __repr__(self) -> str:
        return f"<CommandQueue pending={len(self._items)} closed={self._closed}>"

    def _signal(self) -> None:
        # Outside the mutex: the descriptor is the queue's own and outlives every push.
        if self._wfd >= 0:
            try:
                if self._eventfd:
                    os.eventfd_write(self._wfd, 1)
                else:
                    os.write(self._wfd, b"\x01")
            except BlockingIOError:
                pass  # a full pipe has wake-ups pending already
            return
        try:
            self._wake()  # type: ignore[misc]
        except BaseException:
            with self._mutex:
                self._armed = False
            raise

    def push(self, item: Any) -> None:
        """Append *item*; wake the consumer if it is idle. Raises ``QueueClosedError`` after ``close()``.

        If ``wake()`` raises, the item stays queued, the queue is disarmed so the next
        push tries to wake the consumer again, and the exception propagates.
        """
        with self._mutex:
            if self._closed:
                raise QueueClosedError("the command queue is closed; no further commands are accepted")
            self._items.append(item)
            if self._armed:
                return
            self._armed = True
            self._wakeups += 1
        self._signal()

    def submit(self, cmd: Any, limit: int = -1) -> int:
        """Admit and push command *cmd* in one step; return -1, or why it was refused.

        Claims the single-use command (``cmd._unsent``), checks that its oneshot is still
        pending, checks the bound (*limit* commands in flight, -1 for none) and pushes,
        all under the queue's lock, so no burst of callers can overshoot the bound and a
        refusal touches nothing else. Returns -1 when admitted, ``-2`` when *cmd* was sent
        before, ``-3`` when its oneshot is already done, or the count in flight (>= 0) when
        the bound refused it. Raises ``QueueClosedError`` after ``close()`` (unclaimed).
        """
        unsent: list[Any] = cmd._unsent
        with self._mutex:
            if self._closed:
                raise QueueClosedError("the command queue is closed; no further commands are accepted")
            in_flight = self._submitted - self._finished
            if limit >= 0 and in_flight >= limit:
                return in_flight
            try:
                unsent.pop()
            except IndexError:
                return -2
            if cmd.oneshot.done():
                return -3
            self._items.append(cmd)
            self._submitted += 1
            if self._armed:
                return -1
            self._armed = True
            self._wakeups += 1
        self._signal()
        return -1

    def finished_one(self) -> None:
        """The consumer reports one admitted command finished (any outcome); any thread."""
        with self._mutex:
            self._finished += 1

    def unsubmit(self) -> None:
        """Take back one admission whose command never reached the queue (any thread)."""
        with self._mutex:
            self._finished += 1

    @property
    def in_flight(self) -> int:
        """Commands admitted by ``submit`` and not reported finished."""
        return self._submitted - self._finished

    @property
    def submitted(self) -> int:
        """Commands admitted by ``submit`` so far."""
        return self._submitted

    def fileno(self) -> int:
        """The descriptor to watch for wake-ups (``loop.add_reader``); -1 with a wake callable."""
        return self._rfd

    def ack(self) -> None:
        """Consume a pending wake-up (the consumer calls it in its reader, before draining)."""
        if self._rfd < 0:
            return
        try:
            if self._eventfd:
                os.eventfd_read(self._rfd)
            else:
                while os.read(self._rfd, 64):
                    pass
        except BlockingIOError:
            pass

    def drain(self, spin: float = 0.0) -> list[Any]:
        """Take every pending item, oldest first. An empty result marks the consumer idle.

        With *spin* > 0 an empty queue is polled for up to *spin* seconds (GIL released)
        before the consumer is marked idle, so a push arriving meanwhile is taken without
        any wake-up. The pure-Python twin accepts and ignores *spin*.
        """
        with self._mutex:
            items = self._items
            if items:
                self._items = []
                return items
            self._armed = False
        return []

    def close(self) -> list[Any]:
        """Refuse all later pushes and return the items still queued, so they can be failed."""
        with self._mutex:
            self._closed = True
            items = self._items
            self._items = []
            self._armed = False
        return items

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._closed

    @property
    def wakeups(self) -> int:
        """How many times the consumer was woken (to show coalescing)."""
        return self._wakeups

    def __len__(self) -> int:
        return len(self._items)


# --------------------------------------------------------------------------------------
# AgentRegistry
# --------------------------------------------------------------------------------------


class AgentRegistry:
    """Agent id -> per-agent state, shared by every thread.

    Reads are single dict look-ups, atomic in CPython with or without the GIL; writes take
    the registry's lock only for the check-and-set itself, never across a call out.

    Thread rules: every method may be called from any thread.
    :attr:`PythonRuntime.bridge_state` is one, and :data:`BRIDGE_STATE` resolves to the
    calling runtime's (the runtime writes to it on register and unregister; read it
    anywhere).
    """

    __slots__ = ("__weakref__", "_map", "_mutex")

    def __init__(self) -> None:
        self._map: dict[str, Any] = {}
        self._mutex = allocate_lock()

    def __repr__(self) -> str:
        return f"<AgentRegistry agents={len(self._map)}>"

    def get(self, agent_id: str) -> Any:
        """Return the state of *agent_id*; ``UnknownAgentError`` (a ``KeyError``) names a missing id."""
        state = self._map.get(agent_id, _MISSING)
        if state is _MISSING:
            raise UnknownAgentError(agent_id)
        return state

    def find(self, agent_id: str, default: Any = None) -> Any:
        """Return the state of *agent_id*, or *default* when it is not registered."""
        return self._map.get(agent_id, default)

    def insert(self, agent_id: str, state: Any, *, replace: bool = False) -> None:
        """Register *state* under *agent_id*.

        Raises ``AgentAlreadyRegisteredError`` if the id is taken and *replace* is false,
        ``TypeError``/``ValueError`` if the id is not a non-empty str.
        """
        agent_id = _check_agent_id(agent_id)
        with self._mutex:
            if not replace and agent_id in self._map:
                raise AgentAlreadyRegisteredError(agent_id)
            self._map[agent_id] = state

    def remove(self, agent_id: str) -> Any:
        """Unregister *agent_id* and return its state; ``UnknownAgentError`` if absent."""
        with self._mutex:
            state = self._map.pop(agent_id, _MISSING)
        if state is _MISSING:
            raise UnknownAgentError(agent_id)
        return state

    def ids(self) -> list[str]:
        """A snapshot of the registered ids."""
        with self._mutex:
            return list(self._map)

    def clear(self) -> None:
        """Unregister every agent."""
        with self._mutex:
            self._map.clear()

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._map

    def __len__(self) -> int:
        return len(self._map)


# --------------------------------------------------------------------------------------
# Channel
# --------------------------------------------------------------------------------------


class Channel:
    """A bounded single-producer, single-consumer buffer carrying one stream's items.

    The producer is the runtime's loop thread; the one consumer is a plain thread, another
    asyncio loop or trio. The bound is the back-pressure: the producer checks ``full()``
    before it computes the next item, and the items of the batch the consumer took last
    still count toward ``capacity`` until it takes again (it does so only once it has used
    them up), so the producer never runs more than ``capacity`` items ahead of what the
    consumer has used.

    Producer: ``put`` returns False without appending when the buffer is full or the
    consumer has cancelled, and ``cancelled`` tells the two apart (a cancelled consumer is
    gone for good, a full buffer drains). When full, it calls ``notify_writable(fn)`` and
    resumes when *fn* runs, or at once if that returned False. ``finish`` ends the stream.

    Consumer: ``take`` never raises and never blocks; the loop is::

        while True:
            batch = channel.take()
            if batch:
                handle(batch)
            elif channel.ended:
                error = channel.end_exception()  # raise it if not None, else stop
            else:
                channel.wait()  # or: notify_readable(fn) and await fn (False: loop now)

    ``ended`` turns True only once everything buffered before the end was taken, so
    checking it after an empty batch can neither skip items nor miss the error.

    Wake-ups are coalesced both ways, as in ``CommandQueue``: the consumer is woken only
    when the buffer goes from empty to non-empty or the stream ends, the producer only when
    it goes from full to not full or the consumer cancels, so a burst of puts costs one
    wake-up; ``reader_wakeups`` and ``writer_wakeups`` count them. One mutex guards the
    buffer, the flags and the callbacks; callbacks run after it is released.

    :param capacity: the most items the producer may run ahead of the consumer.
    :raises TypeError: *capacity* is not an int.
    :raises ValueError: *capacity* is below 1.
    """

    __slots__ = (
        "__weakref__",
        "_cancelled",
        "_capacity",
        "_exc",
        "_finished",
        "_held",
        "_items",
        "_mutex",
        "_on_readable",
        "_on_writable",
        "_parked",
        "_reader_wakeups",
        "_tb",
        "_waitlock",
        "_writer_wakeups",
    )

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        self._mutex = allocate_lock()
        # Held except while a wake-up of a parked consumer is pending.
        self._waitlock = allocate_lock()
        self._waitlock.acquire()
        self._capacity = capacity
        self._items: list[Any] = []
        # Items of the consumer's last batch, counted toward capacity until its next take().
        self._held = 0
        self._finished = False
        self._cancelled = False
        self._parked = False
        self._exc: BaseException | None = None
        self._tb: TracebackType | None = None
        self._on_readable: Callable[[], object] | None = None
        self._on_writable: Callable[[], object] | None = None
        self._reader_wakeups = 0
        self._writer_wakeups = 0

    def __repr__(self) -> str:
        state = "open"
        if self._cancelled:
            state = "cancelled"
        elif self._finished:
            state = "finished"
        return f"<Channel {len(self._items)}/{self._capacity} {state}>"

    # -- producer -----------------------------------------------------------------------

    def _wake_reader_locked(self) -> Callable[[], object] | None:
        # With the mutex held, on a transition to readable: release a parked consumer and
        # hand back the readable callback (if any) for the caller to run after unlocking.
        callback = self._on_readable
        if self._parked:
            self._parked = False
            self._reader_wakeups += 1
            self._waitlock.release()
        if callback is not None:
            self._on_readable = None
            self._reader_wakeups += 1
        return callback

    def put(self, item: Any) -> bool:
        """Append *item*; True if appended, False if the buffer is full or the consumer cancelled.

        After False, ``cancelled`` says whether to stop (the consumer is gone) or to wait for
        room with ``notify_writable``. Only the transition from empty to non-empty wakes the
        consumer. Raises ``QueueClosedError`` after ``finish()``: the producer has ended
        the stream itself, so a later put is a bug, not a race.
        """
        callback = None
        with self._mutex:
            if self._finished:
                raise QueueClosedError("put() after finish(): the stream has already ended")
            items = self._items
            if self._cancelled or len(items) + self._held >= self._capacity:
                return False
            items.append(item)
            if len(items) == 1:
                callback = self._wake_reader_locked()
        if callback is not None:
            self._run_callback(callback)
        return True

    def full(self) -> bool:
        """True when ``capacity`` items are buffered or held by the consumer: check before producing."""
        return len(self._items) + self._held >= self._capacity

    def finish(self, exc: BaseException | None = None) -> bool:
        """End the stream, with *exc* as its error if given; items already buffered come first.

        The traceback *exc* carries now is recorded and restored by ``end_exception()``, so
        the consumer sees where the error happened however often it is raised. True if this
        call ended the stream; False if it had already been finished or cancelled.
        """
        if exc is not None and not isinstance(exc, BaseException):
            raise TypeError(f"finish() needs an exception or None, not {type(exc).__name__}")
        with self._mutex:
            if self._finished or self._cancelled:
                return False
            self._exc = exc
            self._tb = None if exc is None else exc.__traceback__
            self._finished = True
            callback = self._wake_reader_locked()
        if callback is not None:
            self._run_callback(callback)
        return True

    def notify_writable(self, fn: Callable[[], object]) -> bool:
        """Call ``fn()`` once, when the buffer goes from full to not full or the consumer cancels.

        Returns False without registering when there is room already or the consumer has
        cancelled, so the producer never waits for a wake-up that cannot come. *fn* runs on
        the consumer's thread (make it ``loop.call_soon_threadsafe(...)``); an exception
        escaping it is logged, never propagated. One registration at a time (RuntimeError).
        """
        if not callable(fn):
            raise TypeError(f"notify_writable() needs a callable, not {type(fn).__name__}")
        with self._mutex:
            if self._cancelled or len(self._items) + self._held < self._capacity:
                return False
            if self._on_writable is not None:
                raise RuntimeError("a writable callback is already registered")
            self._on_writable = fn
        return True

    # -- consumer -----------------------------------------------------------------------

    def take(self) -> list[Any]:
        """Every buffered item, oldest first, in one list; an empty list if there are none.

        Never raises and never blocks: after an empty list, ``ended`` says whether the
        stream is over. Calling it says the previous batch is used up: those items stop
        counting toward ``capacity`` and the new batch starts counting, so a producer
        waiting for room is woken when that frees some.
        """
        callback = None
        with self._mutex:
            items = self._items
            was_full = len(items) + self._held >= self._capacity
            if items:
                self._items = []
            else:
                items = []  # never hand out the live list: the producer appends to it
            self._held = len(items)
            if was_full and self._held < self._capacity:
                callback = self._on_writable
                if callback is not None:
                    self._on_writable = None
                    self._writer_wakeups += 1
        if callback is not None:
            self._run_callback(callback)
        return items

    def _readable(self) -> bool:
        return bool(self._items) or self._finished or self._cancelled

    def _unpark(self) -> None:
        with self._mutex:
            woken = not self._parked
            self._parked = False
        if woken:
            # A waker released the lock before this wait gave up: take that release back
            # (it happened under the mutex, so it is already there) to keep the lock held.
            self._waitlock.acquire(False)

    def wait(self, timeout: float | None = None, spin: float = 0.0) -> bool:
        """Block until items are buffered or the stream ended (True), or *timeout* passes (False).

        For a consumer on a plain thread; it parks only on an empty buffer, so a burst of
        puts costs it one wake-up. *spin* and Ctrl-C behave as in ``Oneshot.wait``: with
        *spin* > 0 it first polls with the GIL released, and a signal handler that raises
        interrupts the wait at once. The pure-Python twin accepts and ignores *spin*.
        """
        limit = _check_timeout(timeout)
        with self._mutex:
            if self._readable():
                return True
            self._parked = True
        waitlock = self._waitlock
        woken = False
        try:
            if limit < 0:
                while not waitlock.acquire(True, _MAX_WAIT_SLICE):
                    pass
                woken = True
                return True
            deadline = time.monotonic() + limit
            while True:
                if waitlock.acquire(True, min(limit, _MAX_WAIT_SLICE)):
                    woken = True
                    return True
                limit = deadline - time.monotonic()
                if limit <= 0:
                    break
        finally:
            if not woken:
                self._unpark()
        return self._readable()

    def notify_readable(self, fn: Callable[[], object]) -> bool:
        """Call ``fn()`` once, when the buffer goes from empty to non-empty or the stream ends.

        For consumers on an event loop. Returns False without registering when items are
        buffered or the stream has ended (take them now instead). *fn* runs on the
        producer's thread, so it must be thread-safe (``loop.call_soon_threadsafe``,
        ``TrioToken.run_sync_soon``); an exception escaping it is logged, never propagated.
        One registration at a time (RuntimeError).
        """
        if not callable(fn):
            raise TypeError(f"notify_readable() needs a callable, not {type(fn).__name__}")
        with self._mutex:
            if self._items or self._finished or self._cancelled:
                return False
            if self._on_readable is not None:
                raise RuntimeError("a readable callback is already registered")
            self._on_readable = fn
        return True

    def cancel(self) -> bool:
        """Leave early: drop buffered items, refuse later puts and wake a waiting producer.

        A registered readable callback is dropped uncalled (the consumer is the one
        leaving) and a consumer blocked in ``wait`` returns. True on the first call.
        """
        with self._mutex:
            if self._cancelled:
                return False
            self._cancelled = True
            dropped = self._items  # released after unlocking: an item's finalizer may run
            self._items = []
            self._held = 0
            self._on_readable = None
            if self._parked:
                self._parked = False
                self._waitlock.release()
            callback = self._on_writable
            if callback is not None:
                self._on_writable = None
                self._writer_wakeups += 1
        del dropped
        if callback is not None:
            self._run_callback(callback)
        return True

    def end_exception(self) -> BaseException | None:
        """The error the stream was finished with, or None (clean end, not finished, cancelled).

        Its ``__traceback__`` is reset to the one recorded by ``finish()``, so
        ``raise channel.end_exception()`` shows where it happened, however often it runs.
        """
        with self._mutex:
            exc = self._exc
            tb = self._tb
        if exc is None:
            return None
        return exc.with_traceback(tb)

    # -- state --------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """The most items the buffer holds."""
        return self._capacity

    @property
    def cancelled(self) -> bool:
        """True after the consumer called ``cancel()``."""
        return self._cancelled

    @property
    def finished(self) -> bool:
        """True after the producer called ``finish()`` (items may still be buffered)."""
        return self._finished

    @property
    def ended(self) -> bool:
        """True once the stream is over for the consumer: finished or cancelled, and drained."""
        if not (self._finished or self._cancelled):
            return False
        return not self._items

    @property
    def reader_wakeups(self) -> int:
        """How many times the consumer was woken (readable callback or parked wait)."""
        return self._reader_wakeups

    @property
    def writer_wakeups(self) -> int:
        """How many times the producer's writable callback was called."""
        return self._writer_wakeups

    def __len__(self) -> int:
        return len(self._items)

    def _run_callback(self, fn: Callable[[], object]) -> None:
        # The caller must finish its own step whatever the callback does, so nothing escapes.
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - the caller's step must complete whatever a callback does
            try:
                report_callback_error(fn, exc)
            except BaseException:  # noqa: BLE001 - logging itself failed: nothing left to tell
                pass
