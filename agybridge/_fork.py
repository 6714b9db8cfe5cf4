"""Per-process locks: a forked child never waits on a lock a vanished thread holds.

A child of ``fork()`` has a copy of every lock of its parent, held or not, but only the thread
that forked: a lock another thread held at that moment stays held forever in the copy. So the
process-wide state of agybridge (the registry of runtimes in :mod:`agybridge._registry`) is
guarded by :func:`process_lock`, which gives each process its own lock, made on its first use
there. How a runtime itself survives a fork is in :mod:`agybridge._loop.fork`.
"""

from __future__ import annotations

import os
import threading

__all__ = ["process_lock"]

# One lock per (process id, purpose). ``dict.setdefault`` is atomic, so every thread of a new
# process gets the same new lock, which no thread of the parent can be holding.
_PROCESS_LOCKS: dict[tuple[int, str], threading.Lock] = {}


def process_lock(purpose: str) -> threading.Lock:
    """This process's own lock for *purpose* (a new one in every forked child)."""
    key = (os.getpid(), purpose)
    lock = _PROCESS_LOCKS.get(key)
    if lock is None:
        lock = _PROCESS_LOCKS.setdefault(key, threading.Lock())
        for stale in [k for k in list(_PROCESS_LOCKS) if k[0] != key[0]]:  # list(): one atomic copy
            _PROCESS_LOCKS.pop(stale, None)  # the parent's, copied into this child
    return lock
