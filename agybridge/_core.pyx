# cython: language_level=3, freethreading_compatible=True
# cython: boundscheck=False, wraparound=False
# cython: embedsignature=True, embedsignature.format=clinic
"""Compiled hot path of agybridge: Oneshot, CommandQueue, AgentRegistry, Channel.

Same names, same signatures, same docstrings and same behaviour as the pure-Python twin
``agybridge._core_py``; the two files are laid out section by section in the same order so
that one can be checked against the other.

Free threading. ``freethreading_compatible`` is declared because nothing below relies on the
GIL for correctness; each kind of shared state is covered as follows:

* Object fields that change after construction (Oneshot's value, traceback and callbacks,
  CommandQueue's and Channel's item lists, flags and callbacks, AgentRegistry's writes) are
  read and written only while holding the object's ``cython.pymutex`` (a real ``PyMutex``
  on 3.13+, a PyThread lock before). Lock-free readers never load such an object field, as
  a concurrent replacement could free the object between the load and its incref.
* The C counters and flags that are read without the mutex (Oneshot's state,
  CommandQueue's and Channel's item counts, closed/finished/cancelled flags, wake-up
  counters) are written with a release store (while holding the mutex) and read with an
  acquire load (``agy_store_*``/``agy_load_*``), so a lock-free reader sees either the old
  or the new value and, after seeing a completion, everything written before it.
* Oneshot's ``_value`` and ``_tb`` are read without the mutex only after an acquire load saw
  the state leave pending; they are never written again after that, and the oneshot owns a
  reference to each. Fields set once in the constructor (a channel's capacity, a queue's
  wake callable) are never written again.
* AgentRegistry's lock-free reads (``get``, ``find``, ``in``, ``len``) are single calls on a
  dict that is never replaced; the dict's own per-object lock makes each of them atomic on
  the free-threaded build, as the GIL does on the default one.
* The spin-control counters are C atomics; blocking waits release the GIL (``with nogil:``).
"""

cimport cython
from cpython.exc cimport PyErr_CheckSignals
from cpython.pythread cimport (
    PY_LOCK_ACQUIRED,
    PY_LOCK_INTR,
    PyLockStatus,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_release_lock,
    PyThread_type_lock,
)

import math
import os
import time

from agybridge._diagnostics import report_callback_error
from agybridge._validate import agent_id as _check_agent_id  # the one agent-id validator
from agybridge.errors import (
    AgentAlreadyRegisteredError,
    CommandCancelledError,
    QueueClosedError,
    UnknownAgentError,
    WaitTimeoutError,
)

#: Which implementation this module is: the compiled core.
IMPLEMENTATION = "cython"

cdef extern from "pythread.h":
    PyLockStatus PyThread_acquire_lock_timed(
        PyThread_type_lock lock, long long microseconds, int intr_flag
    ) nogil

# Spin-then-park support. A waiter that expects its answer within microseconds polls a
# completion flag with the GIL released before it parks on a lock: parking and being woken
# costs an OS wake-up (tens of microseconds on an idle core), polling costs nothing but
# the core it runs on. The number of concurrent spinners is capped (normally at one fewer
# than the cores) so spinning callers can never starve the thread they are waiting for.
# A spinner yields its core every 64 polls (sched_yield): a wake-up through a socket or pipe
# tends to put the woken thread on the waker's core, expecting the waker to sleep, and a
# spinner that never yields keeps the very thread it waits for off that core, so spinning
# without yields was measured slower than not spinning at all.
# Only a lone waiter spins: while another thread is inside a wait too (parked, or woken and
# taking the GIL back) answers are queued behind each other and a spinner only takes a core
# from the threads doing the work, which cost several concurrent callers a measurable share
# of their throughput before this rule.
cdef extern from *:
    """
    #include <time.h>
    static int agy_spinners = 0;
    static int agy_waiters = 0;
    static int agy_max_spinners = 1;
    static inline int agy_load_int(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void agy_store_int(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline Py_ssize_t agy_load_ssize(Py_ssize_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void agy_store_ssize(Py_ssize_t *p, Py_ssize_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void agy_cpu_relax(void) {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
    #elif defined(__aarch64__)
        __asm__ __volatile__("yield");
    #endif
    }
    #include <sched.h>
    static inline void agy_yield(void) { sched_yield(); }
    static inline double agy_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
    static inline int agy_enter_spin(void) {
        if (__atomic_load_n(&agy_waiters, __ATOMIC_RELAXED) > 1) {
            return 0;
        }
        int n = __atomic_add_fetch(&agy_spinners, 1, __ATOMIC_ACQ_REL);
        if (n > __atomic_load_n(&agy_max_spinners, __ATOMIC_RELAXED)) {
            __atomic_sub_fetch(&agy_spinners, 1, __ATOMIC_ACQ_REL);
            return 0;
        }
        return 1;
    }
    static inline void agy_leave_spin(void) { __atomic_sub_fetch(&agy_spinners, 1, __ATOMIC_ACQ_REL); }
    static inline void agy_set_max_spinners(int n) { __atomic_store_n(&agy_max_spinners, n, __ATOMIC_RELAXED); }
    static inline void agy_enter_wait(void) { __atomic_add_fetch(&agy_waiters, 1, __ATOMIC_RELAXED); }
    static inline void agy_leave_wait(void) { __atomic_sub_fetch(&agy_waiters, 1, __ATOMIC_RELAXED); }
    """
    int agy_load_int(int *p) nogil
    void agy_store_int(int *p, int v) nogil
    Py_ssize_t agy_load_ssize(Py_ssize_t *p) nogil
    void agy_store_ssize(Py_ssize_t *p, Py_ssize_t v) nogil
    void agy_cpu_relax() nogil
    double agy_now() nogil
    void agy_yield() nogil
    int agy_enter_spin() nogil
    void agy_leave_spin() nogil
    void agy_set_max_spinners(int n) nogil
    void agy_enter_wait() nogil
    void agy_leave_wait() nogil


cdef extern from *:
    """
    #include <unistd.h>
    #include <errno.h>
    #include <stdint.h>
    static inline void agy_signal_fd(int fd, int is_eventfd) {
        ssize_t n;
        if (is_eventfd) {
            uint64_t one = 1;
            do { n = write(fd, &one, sizeof one); } while (n < 0 && errno == EINTR);
        } else {
            char one = 1;
            do { n = write(fd, &one, 1); } while (n < 0 && errno == EINTR);
        }
        (void)n;  /* EAGAIN: a full pipe has wake-ups pending already */
    }
    static inline void agy_drain_fd(int fd, int is_eventfd) {
        char buf[64];
        ssize_t n;
        if (is_eventfd) {
            do { n = read(fd, buf, 8); } while (n < 0 && errno == EINTR);
        } else {
            do { n = read(fd, buf, sizeof buf); } while (n > 0 || (n < 0 && errno == EINTR));
        }
        (void)n;
    }
    static inline void agy_close(int fd) { close(fd); }
    static inline void agy_add_ssize(Py_ssize_t *p, Py_ssize_t v) { __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL); }
    """
    void agy_signal_fd(int fd, int is_eventfd) nogil
    void agy_drain_fd(int fd, int is_eventfd) nogil
    void agy_close(int fd) nogil
    void agy_add_ssize(Py_ssize_t *p, Py_ssize_t v) nogil


def _wake_descriptors():
    """A non-blocking, close-on-exec eventfd (read end, write end, True), or a pipe (r, w, False)."""
    eventfd = getattr(os, "eventfd", None)
    if eventfd is not None:
        fd = eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return fd, fd, True
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w, False


cdef extern from *:
    """
    #include <pthread.h>
    static volatile long agy_forks = 0;  /* forks in this process's lineage, counted in each child */
    static void agy_count_fork(void) { agy_forks++; }
    static int agy_watch_forks(void) { return pthread_atfork(NULL, NULL, agy_count_fork); }
    static inline long agy_fork_count(void) { return agy_forks; }
    """
    int agy_watch_forks()
    long agy_fork_count() nogil


if agy_watch_forks() != 0:
    raise ImportError("pthread_atfork failed: the compiled core could not watch for forks")


def process_token():
    """A number that differs in a forked child from its value in the parent (no system call).

    The send path compares it with the value it saw when it was bound, to notice, on every
    send, that it now runs in a forked child. The compiled core counts forks with a
    ``pthread_atfork`` child handler (so a fork made in C is counted too, and reading it is
    one memory load); the twin returns ``os.getpid()``.
    """
    return agy_fork_count()


def set_max_spinners(int n):
    """Cap the number of threads spinning at once (0 disables spinning everywhere)."""
    if n < 0:
        raise ValueError(f"max spinners must be >= 0, not {n}")
    agy_set_max_spinners(n)


agy_set_max_spinners(max(0, (os.cpu_count() or 1) - 1))

__all__ = [
    "IMPLEMENTATION",
    "AgentRegistry",
    "Channel",
    "CommandQueue",
    "Oneshot",
    "process_token",
    "set_max_spinners",
]

# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------

cdef enum:
    _PENDING = 0
    _RESULT = 1
    _EXCEPTION = 2
    _CANCELLED = 3

# The longest single blocking wait; longer timeouts are waited in slices of this size.
cdef double _MAX_WAIT_SLICE = 3600.0

cdef object _MISSING = object()
cdef object _monotonic = time.monotonic


cdef double _check_timeout(object timeout) except? -2.0:
    """Return the timeout as a float, ``-1.0`` meaning "wait forever"."""
    if timeout is None:
        return -1.0
    cdef double value = float(timeout)
    if math.isnan(value) or value < 0:
        raise ValueError(f"timeout must be None or a number >= 0, not {timeout!r}")
    return value


cdef bint _spin_until(
    Py_ssize_t *count, int *flag, int *other_flag, double seconds, bint capped
) noexcept nogil:
    """Poll, GIL released, until ``*count != 0`` or a flag is set (NULL: not watched); True if so.

    The one spin of this module: Oneshot watches its state, CommandQueue its count, Channel its
    count and its two end flags. *capped* counts the spinner against the callers' cap (the
    queue's single consumer spins only while it has nothing else to do, so it is not).
    """
    cdef double deadline
    cdef int _i
    if seconds <= 0 or (capped and not agy_enter_spin()):
        return False
    deadline = agy_now() + seconds
    while True:
        for _i in range(64):
            if (
                (count != NULL and agy_load_ssize(count) != 0)
                or (flag != NULL and agy_load_int(flag) != 0)
                or (other_flag != NULL and agy_load_int(other_flag) != 0)
            ):
                if capped:
                    agy_leave_spin()
                return True
            agy_cpu_relax()
        if agy_now() >= deadline:
            if capped:
                agy_leave_spin()
            return False
        agy_yield()


cdef bint _park(PyThread_type_lock lock, double limit) except -1:
    """Block on *lock* for up to *limit* seconds (-1: forever), GIL released; True if acquired.

    The one park of this module. Signal handlers run first (a signal that arrived while the
    caller spun with the GIL released is not reported by the acquire) and whenever the
    acquire is interrupted, so Ctrl-C's ``KeyboardInterrupt`` propagates from here at once.
    Long waits are taken in slices (``_MAX_WAIT_SLICE``) against a monotonic deadline.
    """
    cdef PyLockStatus status
    cdef long long micros
    cdef double deadline = 0.0
    PyErr_CheckSignals()
    if limit >= 0:
        deadline = _monotonic() + limit
    while True:
        micros = -1 if limit < 0 else <long long>(min(limit, _MAX_WAIT_SLICE) * 1e6)
        with nogil:
            status = PyThread_acquire_lock_timed(lock, micros, 1)
        if status == PY_LOCK_ACQUIRED:
            return True
        if status == PY_LOCK_INTR:
            PyErr_CheckSignals()
        if limit >= 0:
            limit = deadline - _monotonic()
            if limit <= 0:
                return False


# --------------------------------------------------------------------------------------
# Oneshot
# --------------------------------------------------------------------------------------


@cython.final
cdef class Oneshot:
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

    cdef cython.pymutex _mutex
    cdef PyThread_type_lock _waitlock
    cdef int _state
    cdef object _value
    cdef object _tb  # the exception's traceback as set: every raise restarts from it
    cdef list _callbacks
    cdef object __weakref__

    def __cinit__(self):
        self._waitlock = PyThread_allocate_lock()
        if self._waitlock == NULL:
            raise MemoryError("cannot allocate the oneshot's wait lock")
        PyThread_acquire_lock_timed(self._waitlock, 0, 0)
        self._state = _PENDING
        self._value = None
        self._tb = None
        self._callbacks = None

    def __dealloc__(self):
        if self._waitlock != NULL:
            if self._state == _PENDING:
                # A lock must be released before it is freed on some platforms.
                PyThread_release_lock(self._waitlock)
            PyThread_free_lock(self._waitlock)
            self._waitlock = NULL

    def __repr__(self):
        names = {_PENDING: "pending", _RESULT: "result", _EXCEPTION: "exception", _CANCELLED: "cancelled"}
        return f"<Oneshot {names[agy_load_int(&self._state)]}>"

    # -- completion ---------------------------------------------------------------------

    cdef bint _complete(self, int state, object value, object tb=None) except -1:
        cdef list callbacks = None
        with self._mutex:
            if self._state != _PENDING:
                return False
            self._value = value
            self._tb = tb
            agy_store_int(&self._state, state)  # release: a spinning waiter then sees _value
            callbacks = self._callbacks
            self._callbacks = None
        PyThread_release_lock(self._waitlock)
        if callbacks is not None:
            for callback in callbacks:
                self._run_callback(callback)
        return True

    def set_result(self, value):
        """Complete with *value*. True if this call completed the oneshot, else False."""
        return self._complete(_RESULT, value)

    def set_exception(self, exc):
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
        return self._complete(_EXCEPTION, exc, (<BaseException>exc).__traceback__)

    def cancel(self):
        """Complete as cancelled. True if this call completed the oneshot, else False."""
        return self._complete(_CANCELLED, None)

    # -- inspection ---------------------------------------------------------------------

    def done(self):
        """True once any completion has happened."""
        return agy_load_int(&self._state) != _PENDING

    def cancelled(self):
        """True if the oneshot was completed by ``cancel()``."""
        return agy_load_int(&self._state) == _CANCELLED

    # -- waiting ------------------------------------------------------------------------

    cdef bint _wait(self, double limit, double spin=0.0) except -1:
        if agy_load_int(&self._state) != _PENDING:
            return True
        agy_enter_wait()  # counted until the GIL is back, so a lone waiter can be told apart
        try:
            return self._spin_then_park(limit, spin)
        finally:
            agy_leave_wait()

    cdef bint _spin_then_park(self, double limit, double spin) except -1:
        cdef bint spun = False
        if spin > 0:
            with nogil:
                spun = _spin_until(NULL, &self._state, NULL, spin if limit < 0 else min(spin, limit), True)
            if spun:
                return True
        if not _park(self._waitlock, limit):
            return agy_load_int(&self._state) != _PENDING
        # Pass the wake-up on to the next waiter: the lock stays released once done.
        PyThread_release_lock(self._waitlock)
        return True

    def wait(self, timeout=None, spin=0.0):
        """Block until done or *timeout* seconds pass; return ``done()``.

        With *spin* > 0 the waiter first polls for up to *spin* seconds with the GIL
        released (when a spinning slot is free) before parking: worth it when the answer is
        expected within microseconds. The pure-Python twin accepts and ignores *spin*.
        A signal handler that raises (Ctrl-C's ``KeyboardInterrupt``) interrupts the wait
        at once and propagates.
        """
        return self._wait(_check_timeout(timeout), spin)

    cdef object _outcome(self):
        cdef int state = agy_load_int(&self._state)
        if state == _RESULT:
            return self._value
        if state == _EXCEPTION:
            raise self._value.with_traceback(self._tb)
        raise CommandCancelledError("the oneshot was cancelled")

    def result(self, timeout=None):
        """Return the result, waiting up to *timeout* seconds (None: forever).

        Raises the stored exception, ``CommandCancelledError`` if cancelled, or
        ``WaitTimeoutError`` (a ``TimeoutError``) if still pending at the deadline.
        """
        if agy_load_int(&self._state) == _PENDING and not self._wait(_check_timeout(timeout)):
            raise WaitTimeoutError(f"oneshot not completed within {timeout} s")
        return self._outcome()

    def exception(self, timeout=None):
        """Like ``result()`` but return the stored exception (None after a result)."""
        if agy_load_int(&self._state) == _PENDING and not self._wait(_check_timeout(timeout)):
            raise WaitTimeoutError(f"oneshot not completed within {timeout} s")
        cdef int state = agy_load_int(&self._state)
        if state == _EXCEPTION:
            return self._value.with_traceback(self._tb)
        if state == _CANCELLED:
            raise CommandCancelledError("the oneshot was cancelled")
        return None

    # -- callbacks ----------------------------------------------------------------------

    def add_done_callback(self, fn):
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

    cdef void _run_callback(self, object fn) noexcept:
        # Every callback must run even if an earlier one raised, so nothing escapes here.
        try:
            fn(self)
        except BaseException as exc:
            try:
                report_callback_error(fn, exc)
            except BaseException:
                pass


# --------------------------------------------------------------------------------------
# CommandQueue
# --------------------------------------------------------------------------------------


@cython.final
cdef class CommandQueue:
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

    cdef object _wake
    cdef cython.pymutex _mutex
    cdef list _items
    cdef Py_ssize_t _count  # len(_items), readable by a spinning consumer without the GIL
    cdef bint _armed
    cdef int _closed  # read without the mutex: atomic load/store
    cdef Py_ssize_t _wakeups  # read without the mutex: atomic load/store
    cdef Py_ssize_t _submitted  # admitted by submit(); written under the mutex
    cdef Py_ssize_t _finished  # reported by the consumer; atomic add
    cdef int _rfd  # the descriptor the consumer reads (-1: a wake callable instead)
    cdef int _wfd  # the descriptor a push writes (the same for an eventfd)
    cdef bint _eventfd
    cdef object __weakref__

    def __cinit__(self, *args, **kwargs):
        self._rfd = -1
        self._wfd = -1

    def __init__(self, wake=None):
        if wake is not None and not callable(wake):
            raise TypeError(f"CommandQueue(wake) needs a callable or None, not {type(wake).__name__}")
        self._wake = wake
        self._items = []
        self._count = 0
        self._armed = False
        self._closed = 0
        self._wakeups = 0
        self._submitted = 0
        self._finished = 0
        if wake is None and self._rfd < 0:
            self._rfd, self._wfd, self._eventfd = _wake_descriptors()

    def __dealloc__(self):
        if self._rfd >= 0:
            agy_close(self._rfd)
        if self._wfd >= 0 and self._wfd != self._rfd:
            agy_close(self._wfd)
        self._rfd = self._wfd = -1

    def __repr__(self):
        return f"<CommandQueue pending={agy_load_ssize(&self._count)} closed={bool(agy_load_int(&self._closed))}>"

    cdef inline void _signal(self) except *:
        # Outside the mutex: the descriptor is the queue's own and outlives every push.
        cdef int fd = self._wfd
        cdef bint is_eventfd = self._eventfd
        if fd >= 0:
            with nogil:
                agy_signal_fd(fd, is_eventfd)
        else:
            try:
                self._wake()
            except BaseException:
                with self._mutex:
                    self._armed = False
                raise

    def push(self, item):
        """Append *item*; wake the consumer if it is idle. Raises ``QueueClosedError`` after ``close()``.

        If ``wake()`` raises, the item stays queued, the queue is disarmed so the next
        push tries to wake the consumer again, and the exception propagates.
        """
        with self._mutex:
            if self._closed:
                raise QueueClosedError("the command queue is closed; no further commands are accepted")
            self._items.append(item)
            agy_store_ssize(&self._count, self._count + 1)
            if self._armed:
                return
            self._armed = True
            agy_store_ssize(&self._wakeups, self._wakeups + 1)
        self._signal()

    def submit(self, cmd, Py_ssize_t limit=-1):
        """Admit and push command *cmd* in one step; return -1, or why it was refused.

        Claims the single-use command (``cmd._unsent``), checks that its oneshot is still
        pending, checks the bound (*limit* commands in flight, -1 for none) and pushes,
        all under the queue's lock, so no burst of callers can overshoot the bound and a
        refusal touches nothing else. Returns -1 when admitted, ``-2`` when *cmd* was sent
        before, ``-3`` when its oneshot is already done, or the count in flight (>= 0) when
        the bound refused it. Raises ``QueueClosedError`` after ``close()`` (unclaimed).
        """
        cdef Py_ssize_t in_flight
        cdef list unsent = cmd._unsent
        with self._mutex:
            if self._closed:
                raise QueueClosedError("the command queue is closed; no further commands are accepted")
            in_flight = self._submitted - agy_load_ssize(&self._finished)
            if limit >= 0 and in_flight >= limit:
                return in_flight
            if not unsent:
                return -2
            unsent.pop()
            if cmd.oneshot.done():
                return -3
            self._items.append(cmd)
            agy_store_ssize(&self._count, self._count + 1)
            agy_store_ssize(&self._submitted, self._submitted + 1)
            if self._armed:
                return -1
            self._armed = True
            agy_store_ssize(&self._wakeups, self._wakeups + 1)
        self._signal()
        return -1

    def finished_one(self):
        """The consumer reports one admitted command finished (any outcome); any thread."""
        agy_add_ssize(&self._finished, 1)

    def unsubmit(self):
        """Take back one admission whose command never reached the queue (any thread)."""
        agy_add_ssize(&self._finished, 1)

    @property
    def in_flight(self):
        """Commands admitted by ``submit`` and not reported finished."""
        return agy_load_ssize(&self._submitted) - agy_load_ssize(&self._finished)

    @property
    def submitted(self):
        """Commands admitted by ``submit`` so far."""
        return agy_load_ssize(&self._submitted)

    def fileno(self):
        """The descriptor to watch for wake-ups (``loop.add_reader``); -1 with a wake callable."""
        return self._rfd

    def ack(self):
        """Consume a pending wake-up (the consumer calls it in its reader, before draining)."""
        cdef int fd = self._rfd
        cdef bint is_eventfd = self._eventfd
        if fd >= 0:
            with nogil:
                agy_drain_fd(fd, is_eventfd)

    cdef list _take(self, bint disarm_if_empty):
        cdef list items
        with self._mutex:
            items = self._items
            if items:
                self._items = []
                agy_store_ssize(&self._count, 0)
                return items
            if disarm_if_empty:
                self._armed = False
        return None

    def drain(self, spin=0.0):
        """Take every pending item, oldest first. An empty result marks the consumer idle.

        With *spin* > 0 an empty queue is polled for up to *spin* seconds (GIL released)
        before the consumer is marked idle, so a push arriving meanwhile is taken without
        any wake-up. The pure-Python twin accepts and ignores *spin*.
        """
        cdef list items
        cdef double seconds = spin
        items = self._take(seconds <= 0)
        if items is not None:
            return items
        if seconds <= 0:
            return []
        with nogil:
            # The single consumer's spin is not counted against the callers' spinner cap:
            # it only happens while the consumer has nothing else to do.
            _spin_until(&self._count, NULL, NULL, seconds, False)
        items = self._take(True)
        return items if items is not None else []

    def close(self):
        """Refuse all later pushes and return the items still queued, so they can be failed."""
        cdef list items = None
        with self._mutex:
            agy_store_int(&self._closed, 1)
            items = self._items
            self._items = []
            agy_store_ssize(&self._count, 0)
            self._armed = False
        return items

    @property
    def closed(self):
        """True after ``close()``."""
        return bool(agy_load_int(&self._closed))

    @property
    def wakeups(self):
        """How many times the consumer was woken (to show coalescing)."""
        return agy_load_ssize(&self._wakeups)

    def __len__(self):
        return agy_load_ssize(&self._count)


# --------------------------------------------------------------------------------------
# AgentRegistry
# --------------------------------------------------------------------------------------


@cython.final
cdef class AgentRegistry:
    """Agent id -> per-agent state, shared by every thread.

    Reads are single dict look-ups, atomic in CPython with or without the GIL; writes take
    the registry's lock only for the check-and-set itself, never across a call out.

    Thread rules: every method may be called from any thread.
    :attr:`PythonRuntime.bridge_state` is one, and :data:`BRIDGE_STATE` resolves to the
    calling runtime's (the runtime writes to it on register and unregister; read it
    anywhere).
    """

    cdef dict _map
    cdef cython.pymutex _mutex
    cdef object __weakref__

    def __init__(self):
        self._map = {}

    def __repr__(self):
        return f"<AgentRegistry agents={len(self._map)}>"

    @cython.binding(False)  # a plain C method: the look-up is cheaper than a function-object call
    def get(self, agent_id):
        """Return the state of *agent_id*; ``UnknownAgentError`` (a ``KeyError``) names a missing id."""
        state = self._map.get(agent_id, _MISSING)
        if state is _MISSING:
            raise UnknownAgentError(agent_id)
        return state

    @cython.binding(False)
    def find(self, agent_id, default=None):
        """Return the state of *agent_id*, or *default* when it is not registered."""
        return self._map.get(agent_id, default)

    def insert(self, agent_id, state, *, replace=False):
        """Register *state* under *agent_id*.

        Raises ``AgentAlreadyRegisteredError`` if the id is taken and *replace* is false,
        ``TypeError``/``ValueError`` if the id is not a non-empty str.
        """
        agent_id = _check_agent_id(agent_id)
        with self._mutex:
            if not replace and agent_id in self._map:
                raise AgentAlreadyRegisteredError(agent_id)
            self._map[agent_id] = state

    def remove(self, agent_id):
        """Unregister *agent_id* and return its state; ``UnknownAgentError`` if absent."""
        state = _MISSING
        with self._mutex:
            state = self._map.pop(agent_id, _MISSING)
        if state is _MISSING:
            raise UnknownAgentError(agent_id)
        return state

    def ids(self):
        """A snapshot of the registered ids."""
        with self._mutex:
            return list(self._map)

    def clear(self):
        """Unregister every agent."""
        with self._mutex:
            self._map.clear()

    def __contains__(self, agent_id):
        return agent_id in self._map

    def __len__(self):
        return len(self._map)


# --------------------------------------------------------------------------------------
# Channel
# --------------------------------------------------------------------------------------


@cython.final
cdef class Channel:
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

    cdef cython.pymutex _mutex
    cdef PyThread_type_lock _waitlock  # held except while a wake-up of a parked consumer is pending
    cdef Py_ssize_t _capacity
    cdef list _items
    cdef Py_ssize_t _count  # len(_items), readable by a spinning consumer without the GIL
    cdef Py_ssize_t _held  # items of the consumer's last batch, counted until its next take()
    cdef int _finished
    cdef int _cancelled
    cdef bint _parked
    cdef object _exc
    cdef object _tb
    cdef object _on_readable
    cdef object _on_writable
    cdef Py_ssize_t _reader_wakeups
    cdef Py_ssize_t _writer_wakeups
    cdef object __weakref__

    def __cinit__(self, *args, **kwargs):
        self._waitlock = PyThread_allocate_lock()
        if self._waitlock == NULL:
            raise MemoryError("cannot allocate the channel's wait lock")
        PyThread_acquire_lock_timed(self._waitlock, 0, 0)

    def __init__(self, capacity):
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        self._capacity = capacity
        self._items = []
        self._count = 0
        self._held = 0
        self._finished = 0
        self._cancelled = 0
        self._parked = False
        self._exc = None
        self._tb = None
        self._on_readable = None
        self._on_writable = None
        self._reader_wakeups = 0
        self._writer_wakeups = 0

    def __dealloc__(self):
        if self._waitlock != NULL:
            # Held or not, leave it released: a lock must be released before it is freed.
            PyThread_acquire_lock_timed(self._waitlock, 0, 0)
            PyThread_release_lock(self._waitlock)
            PyThread_free_lock(self._waitlock)
            self._waitlock = NULL

    def __repr__(self):
        cdef str state = "open"
        if agy_load_int(&self._cancelled):
            state = "cancelled"
        elif agy_load_int(&self._finished):
            state = "finished"
        return f"<Channel {agy_load_ssize(&self._count)}/{self._capacity} {state}>"

    # -- producer -----------------------------------------------------------------------

    cdef object _wake_reader_locked(self):
        # With the mutex held, on a transition to readable: release a parked consumer and
        # hand back the readable callback (if any) for the caller to run after unlocking.
        cdef object callback = self._on_readable
        if self._parked:
            self._parked = False
            agy_store_ssize(&self._reader_wakeups, self._reader_wakeups + 1)
            PyThread_release_lock(self._waitlock)
        if callback is not None:
            self._on_readable = None
            agy_store_ssize(&self._reader_wakeups, self._reader_wakeups + 1)
        return callback

    def put(self, item):
        """Append *item*; True if appended, False if the buffer is full or the consumer cancelled.

        After False, ``cancelled`` says whether to stop (the consumer is gone) or to wait for
        room with ``notify_writable``. Only the transition from empty to non-empty wakes the
        consumer. Raises ``QueueClosedError`` after ``finish()``: the producer has ended
        the stream itself, so a later put is a bug, not a race.
        """
        cdef object callback = None
        with self._mutex:
            if self._finished:
                raise QueueClosedError("put() after finish(): the stream has already ended")
            if self._cancelled or self._count + self._held >= self._capacity:
                return False
            self._items.append(item)
            agy_store_ssize(&self._count, self._count + 1)
            if self._count == 1:
                callback = self._wake_reader_locked()
        if callback is not None:
            self._run_callback(callback)
        return True

    def full(self):
        """True when ``capacity`` items are buffered or held by the consumer: check before producing."""
        return agy_load_ssize(&self._count) + agy_load_ssize(&self._held) >= self._capacity

    def finish(self, exc=None):
        """End the stream, with *exc* as its error if given; items already buffered come first.

        The traceback *exc* carries now is recorded and restored by ``end_exception()``, so
        the consumer sees where the error happened however often it is raised. True if this
        call ended the stream; False if it had already been finished or cancelled.
        """
        cdef object callback = None
        if exc is not None and not isinstance(exc, BaseException):
            raise TypeError(f"finish() needs an exception or None, not {type(exc).__name__}")
        with self._mutex:
            if self._finished or self._cancelled:
                return False
            self._exc = exc
            self._tb = None if exc is None else (<BaseException>exc).__traceback__
            agy_store_int(&self._finished, 1)
            callback = self._wake_reader_locked()
        if callback is not None:
            self._run_callback(callback)
        return True

    def notify_writable(self, fn):
        """Call ``fn()`` once, when the buffer goes from full to not full or the consumer cancels.

        Returns False without registering when there is room already or the consumer has
        cancelled, so the producer never waits for a wake-up that cannot come. *fn* runs on
        the consumer's thread (make it ``loop.call_soon_threadsafe(...)``); an exception
        escaping it is logged, never propagated. One registration at a time (RuntimeError).
        """
        if not callable(fn):
            raise TypeError(f"notify_writable() needs a callable, not {type(fn).__name__}")
        with self._mutex:
            if self._cancelled or self._count + self._held < self._capacity:
                return False
            if self._on_writable is not None:
                raise RuntimeError("a writable callback is already registered")
            self._on_writable = fn
        return True

    # -- consumer -----------------------------------------------------------------------

    def take(self):
        """Every buffered item, oldest first, in one list; an empty list if there are none.

        Never raises and never blocks: after an empty list, ``ended`` says whether the
        stream is over. Calling it says the previous batch is used up: those items stop
        counting toward ``capacity`` and the new batch starts counting, so a producer
        waiting for room is woken when that frees some.
        """
        cdef list items
        cdef object callback = None
        cdef bint was_full
        with self._mutex:
            was_full = self._count + self._held >= self._capacity
            items = self._items
            if items:
                self._items = []
                agy_store_ssize(&self._count, 0)
            else:
                items = []  # never hand out the live list: the producer appends to it
            agy_store_ssize(&self._held, len(items))
            if was_full and self._held < self._capacity:
                callback = self._on_writable
                if callback is not None:
                    self._on_writable = None
                    agy_store_ssize(&self._writer_wakeups, self._writer_wakeups + 1)
        if callback is not None:
            self._run_callback(callback)
        return items

    cdef bint _readable(self) noexcept nogil:
        return (
            agy_load_ssize(&self._count) != 0
            or agy_load_int(&self._finished) != 0
            or agy_load_int(&self._cancelled) != 0
        )

    cdef void _unpark(self) noexcept:
        cdef bint woken
        with self._mutex:
            woken = not self._parked
            self._parked = False
        if woken:
            # A waker released the lock before this wait gave up: take that release back
            # (it happened under the mutex, so it is already there) to keep the lock held.
            PyThread_acquire_lock_timed(self._waitlock, 0, 0)

    cdef bint _wait(self, double limit, double spin) except -1:
        if self._readable():
            return True
        agy_enter_wait()  # counted until the GIL is back, so a lone waiter can be told apart
        try:
            return self._spin_then_park(limit, spin)
        finally:
            agy_leave_wait()

    cdef bint _spin_then_park(self, double limit, double spin) except -1:
        cdef bint spun = False
        cdef bint woken = False
        if spin > 0:
            with nogil:
                spun = _spin_until(
                    &self._count, &self._finished, &self._cancelled, spin if limit < 0 else min(spin, limit), True
                )
            if spun:
                return True
        with self._mutex:
            if self._readable():
                return True
            self._parked = True
        try:
            woken = _park(self._waitlock, limit)
        finally:
            if not woken:
                self._unpark()
        return woken or self._readable()

    def wait(self, timeout=None, spin=0.0):
        """Block until items are buffered or the stream ended (True), or *timeout* passes (False).

        For a consumer on a plain thread; it parks only on an empty buffer, so a burst of
        puts costs it one wake-up. *spin* and Ctrl-C behave as in ``Oneshot.wait``: with
        *spin* > 0 it first polls with the GIL released, and a signal handler that raises
        interrupts the wait at once. The pure-Python twin accepts and ignores *spin*.
        """
        return self._wait(_check_timeout(timeout), spin)

    def notify_readable(self, fn):
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
            if self._count or self._finished or self._cancelled:
                return False
            if self._on_readable is not None:
                raise RuntimeError("a readable callback is already registered")
            self._on_readable = fn
        return True

    def cancel(self):
        """Leave early: drop buffered items, refuse later puts and wake a waiting producer.

        A registered readable callback is dropped uncalled (the consumer is the one
        leaving) and a consumer blocked in ``wait`` returns. True on the first call.
        """
        cdef list dropped
        cdef object callback = None
        with self._mutex:
            if self._cancelled:
                return False
            agy_store_int(&self._cancelled, 1)
            dropped = self._items  # released after unlocking: an item's finalizer may run
            self._items = []
            agy_store_ssize(&self._count, 0)
            agy_store_ssize(&self._held, 0)
            self._on_readable = None
            if self._parked:
                self._parked = False
                PyThread_release_lock(self._waitlock)
            callback = self._on_writable
            if callback is not None:
                self._on_writable = None
                agy_store_ssize(&self._writer_wakeups, self._writer_wakeups + 1)
        del dropped
        if callback is not None:
            self._run_callback(callback)
        return True

    def end_exception(self):
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
    def capacity(self):
        """The most items the buffer holds."""
        return self._capacity

    @property
    def cancelled(self):
        """True after the consumer called ``cancel()``."""
        return bool(agy_load_int(&self._cancelled))

    @property
    def finished(self):
        """True after the producer called ``finish()`` (items may still be buffered)."""
        return bool(agy_load_int(&self._finished))

    @property
    def ended(self):
        """True once the stream is over for the consumer: finished or cancelled, and drained."""
        if not (agy_load_int(&self._finished) or agy_load_int(&self._cancelled)):
            return False
        return agy_load_ssize(&self._count) == 0

    @property
    def reader_wakeups(self):
        """How many times the consumer was woken (readable callback or parked wait)."""
        return agy_load_ssize(&self._reader_wakeups)

    @property
    def writer_wakeups(self):
        """How many times the producer's writable callback was called."""
        return agy_load_ssize(&self._writer_wakeups)

    def __len__(self):
        return agy_load_ssize(&self._count)

    cdef void _run_callback(self, object fn) noexcept:
        # The caller must finish its own step whatever the callback does, so nothing escapes.
        try:
            fn()
        except BaseException as exc:
            try:
                report_callback_error(fn, exc)
            except BaseException:
                pass
