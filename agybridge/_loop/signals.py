"""Keep process-directed signals off agybridge's own threads.

A signal sent to the process (Ctrl-C, a process manager's SIGINT or SIGTERM, uWSGI's signals
to its workers) is delivered by the kernel to any one thread that does not block it. Python
runs its handlers on the main thread only, and a main thread blocked in a wait is interrupted
only if the signal landed on it: landing on the runtime thread, Ctrl-C reached a blocked
``chat()`` only when its wait next woke, and a C-level handler (uWSGI's) ran on the runtime
thread, mid-loop, where its exit path could never finish. So the runtime thread and the tool
workers block those signals: the kernel delivers them to a thread that can act on them.
Synchronous signals (SIGSEGV, SIGFPE, a broken pipe on a write) are left alone.
"""

from __future__ import annotations

import signal

__all__ = ["ASYNC_SIGNALS", "block_async_signals"]

#: The signals a process receives from outside, which a helper thread must never take.
ASYNC_SIGNALS: frozenset[int] = frozenset(
    getattr(signal, name)
    for name in (
        "SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGWINCH", "SIGTSTP",
        "SIGCONT",
    )
    if hasattr(signal, name)
)  # fmt: skip


def block_async_signals() -> None:
    """Block :data:`ASYNC_SIGNALS` in the calling thread (a no-op where threads have no mask)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, ASYNC_SIGNALS)
