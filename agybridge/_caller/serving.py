"""A thread that consumes a stream serves its command's thread-sensitive tool calls.

A blocked ``chat()`` caller runs its command's thread-sensitive tools while it waits
(:class:`~agybridge._origin.BlockingCaller`). A thread iterating ``chat_stream()`` or
``stream()`` is that command's caller too, but it is not always waiting: between two
``next()`` calls it is busy with the item it got. So a tool call posted to it waits in its
inbox until it next asks for an item; while it waits for the item it runs the call at once
(the producer is usually waiting for exactly that call). The wait is bounded by the chat
timeout on the loop's side; a consumer that leaves (``close()``, ``break`` then the end of
its ``with``, an error) fails the calls still waiting with :class:`CallerGoneError`, never
running them elsewhere.

Runs on the consumer's thread, except :meth:`StreamCaller.post` (the runtime loop) and the
readable callback (the producer's thread).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from agybridge._origin import Caller, Sent, Work
from agybridge._select import Channel
from agybridge.errors import CallerGoneError

__all__ = ["StreamCaller"]

#: Put in the inbox by the channel's readable callback: "take items now".
_READABLE = None


class StreamCaller(Caller):
    """The consumer thread of one blocking stream, as the caller of its command.

    *blocked_host* is the loop this thread runs (a tool call that needs it fails at once with
    :class:`DeadlockError`); *serves* says whether it runs thread-sensitive tool calls; *abort*
    stops the stream's producer on the loop.
    """

    def __init__(self, cmd: Sent, blocked_host: object | None, serves: bool, abort: Callable[[], object]) -> None:
        self.shot = cmd.oneshot
        self.label = cmd.describe()
        self.blocked_host = blocked_host
        self.thread = threading.current_thread().name
        self._abort = abort
        self._inbox: queue.SimpleQueue[Work | None] | None = queue.SimpleQueue() if serves else None
        self._lock = threading.Lock()
        self._closed = False
        self._registered = False  # a readable callback is registered on the channel
        self._interrupted = False

    def gone(self) -> BaseException | None:
        if self._closed or self.shot.done():
            return CallerGoneError(
                f"the thread {self.thread!r} consuming {self.label} left the stream (closed, broke out of it, "
                "failed or was interrupted), so its thread-sensitive tool call cannot run there"
            )
        return None

    def post(self, work: Work) -> None:
        with self._lock:
            inbox = self._inbox
            error = self.gone() if inbox is not None else CallerGoneError("this stream's consumer serves no tool calls")
            if error is None and inbox is not None:
                inbox.put(work)
                return
        work.shot.set_exception(error)

    def serve_pending(self) -> None:
        """Run the tool calls that arrived while the consumer was busy (between two reads)."""
        inbox = self._inbox
        if inbox is None:
            return
        while True:
            try:
                work = inbox.get_nowait()
            except queue.Empty:
                return
            if work is _READABLE:
                self._registered = False
            else:
                self._run(work)

    def wait(self, channel: Channel, timeout: float, spin: float) -> bool:
        """Wait up to *timeout* seconds for items (or the end): True, or False on timeout.

        Tool calls posted meanwhile run here, at once; each restarts the item timeout (the
        producer was waiting for this consumer, not the other way round).
        """
        inbox = self._inbox
        if inbox is None:
            return bool(channel.wait(timeout, spin))
        deadline = time.monotonic() + timeout
        while True:
            if not self._registered:
                if not channel.notify_readable(self._readable):
                    return True  # items (or the end) are there already
                self._registered = True
            remaining = min(deadline - time.monotonic(), threading.TIMEOUT_MAX)
            if remaining <= 0:
                return False
            try:
                work = inbox.get(timeout=remaining)
            except queue.Empty:
                return False
            if work is _READABLE:
                self._registered = False
                return True
            self._run(work)
            deadline = time.monotonic() + timeout

    def _readable(self) -> None:
        # On the producer's thread: the channel became readable (or ended).
        inbox = self._inbox
        if inbox is not None:
            inbox.put(_READABLE)

    def _run(self, work: Work) -> None:
        try:
            work.run(self.shot, reraise=True)
        except BaseException:
            # Ctrl-C (or sys.exit) in the tool: the stream's command is cancelled first, then
            # the tool call, so the agent sees its call cancelled, not an error to swallow.
            self._interrupted = True
            if self.shot.cancel():
                self._abort()
            work.shot.cancel()
            raise

    def close(self) -> None:
        """The consumer left: calls still waiting fail with :class:`CallerGoneError` (or are
        cancelled, after an interrupt cancelled the command)."""
        with self._lock:
            self._closed = True
        inbox = self._inbox
        if inbox is None:
            return
        cancelled = self._interrupted
        while True:
            try:
                work = inbox.get_nowait()
            except queue.Empty:
                return
            if work is _READABLE:
                continue
            if cancelled:
                work.shot.cancel()
            else:
                work.shot.set_exception(self.gone())
