"""The consuming end of a stream, on the caller's side: a thread, an asyncio loop or trio.

:class:`BlockingStream` is an iterator and context manager for plain threads;
:class:`AsyncStream` is an async iterator and async context manager for asyncio (any loop)
and trio. Both take the items the producer made meanwhile in one batch per wake-up, and
both close the producer on the runtime loop exactly once however the consumer leaves:
exhausted, ``break`` then garbage collection, ``close()``/``aclose()``, leaving the
``with``, an error, a per-item timeout, cancellation, or Ctrl-C while blocked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from agybridge import _validate
from agybridge._backends import await_oneshot
from agybridge._caller.send import Sender
from agybridge._caller.serving import StreamCaller
from agybridge._select import Oneshot
from agybridge.commands import ChatStream, Stream, callable_name
from agybridge.errors import CommandCancelledError, StreamTimeoutError

__all__ = ["AsyncStream", "BlockingStream", "stream_of_call", "stream_of_chat"]

T = TypeVar("T")
S = TypeVar("S", bound="_StreamBase[Any]")

_NEW, _OPEN, _CLOSED = 0, 1, 2


def _broken_error(what: str, exc: BaseException, delivered: int) -> BaseException:
    """The error every later read of a stream broken by *exc* raises: why, and at which item."""
    if isinstance(exc, StreamTimeoutError):
        return StreamTimeoutError(
            f"{what} timed out at item {delivered + 1} ({exc}); it was closed then, so no more items come"
        )
    return CommandCancelledError(
        f"{what} was cancelled at item {delivered + 1} (its read was interrupted by {type(exc).__name__}); "
        "it was closed then, so no more items come"
    )


class _StreamBase(Generic[T]):
    """What both faces share: starting the command, the current batch, closing once.

    A stream whose read failed for a reason of the consumer's side (a per-item timeout, a
    cancelled read, Ctrl-C) stays *broken*: every later read raises a typed error saying why
    and at which item, never a clean end a retrying consumer would take for the whole stream.
    Leaving it on purpose (``close()``, the end of ``with``) ends it cleanly; an error of the
    producer is raised once, after its items, and the stream then ends as a generator does.
    """

    def __init__(
        self,
        sender: Sender,
        make_command: Callable[[int], Stream | ChatStream],
        what: str,
        buffer: int,
        item_timeout: float,
    ) -> None:
        self._sender = sender
        self._make_command = make_command
        self._what = what
        self._buffer = buffer
        self._item_timeout = item_timeout
        self._state = _NEW
        self._cmd: Stream | ChatStream | None = None
        self._batch: list[Any] = []
        self._index = 0
        self._delivered = 0
        self._broken: BaseException | None = None
        self._producer_failed = False
        self._finished: Oneshot | None = None  # the loop's "its task ended", once we stopped it
        self._caller: StreamCaller | None = None

    def __repr__(self) -> str:
        state = ("not started", "open", "closed")[self._state]
        return f"<{type(self).__name__} {self._what} {state}>"

    def with_options(self: S, *, buffer: int | None = None, item_timeout: float | None = None) -> S:
        """Set the buffer size and the per-item timeout before the stream starts; return self.

        Kept apart from the call so that no option can collide with a keyword argument of
        the streamed function itself. *buffer* bounds how far the producer runs ahead of
        the consumer (items, 1 to ``sys.maxsize``: :class:`ConfigError` otherwise);
        *item_timeout* bounds the wait for each next item (seconds).
        """
        if self._state != _NEW:
            raise RuntimeError(f"{self._what} has already started; set its options before iterating")
        if buffer is not None:
            self._buffer = _validate.buffer_size(buffer)
        if item_timeout is not None:
            self._item_timeout = _validate.call_timeout("item_timeout", item_timeout)
        return self

    def _start(self, blocking: bool) -> None:
        cmd = self._make_command(self._buffer)
        try:
            self._caller = self._sender.start_stream(cmd, blocking)
        except BaseException:
            self._state = _CLOSED
            raise
        self._cmd = cmd
        self._state = _OPEN

    def _closed_read(self) -> BaseException | None:
        """What a read of a stream no longer open raises: its breakage, or None (a clean end)."""
        broken = self._broken
        if broken is None:
            return None
        return _broken_error(self._what, broken, self._delivered)

    def _break(self, exc: BaseException) -> None:
        """A read failed with *exc*: unless it is the producer's own error, the stream is broken."""
        if not self._producer_failed and self._broken is None and not isinstance(exc, StreamFinished):
            self._broken = exc
        self._close()

    def _channel(self) -> Any:
        assert self._cmd is not None
        return self._cmd.channel

    def _timeout_error(self) -> StreamTimeoutError:
        return StreamTimeoutError(f"{self._what} produced no item within its {self._item_timeout} s item timeout")

    def _next_from_batch(self) -> tuple[bool, Any]:
        """(True, item) if the current batch has one more, or what the channel says next.

        (False, None) means: wait for the channel. Raises ``StopIteration`` at a clean end
        and the producer's exception at a failed one (after closing either way).
        """
        if self._index < len(self._batch):
            item = self._batch[self._index]
            self._index += 1
            self._delivered += 1
            return True, item
        if self._state != _OPEN:
            raise StreamFinished  # closed meanwhile (by another task, or another reader)
        channel = self._channel()
        batch = channel.take()
        if batch:
            self._batch = batch
            self._index = 1
            self._delivered += 1
            return True, batch[0]
        if channel.ended:
            error = channel.end_exception()
            self._producer_failed = error is not None
            self._close()
            if error is not None:
                raise error
            raise StopIteration
        return False, None

    def _close(self) -> None:
        """Leave the stream: the producer is closed on the runtime loop, exactly once."""
        if self._state == _OPEN:
            self._state = _CLOSED
            cmd = self._cmd
            assert cmd is not None
            cmd.channel.cancel()
            self._batch = []
            if cmd.oneshot.cancel():
                self._sender.stop_stream(cmd)
            if cmd.oneshot.cancelled():
                # We stopped it (here, or its caller object on Ctrl-C): teardown waits for this.
                self._finished = self._sender.when_finished(cmd)
            if self._caller is not None:
                self._caller.close()
            self._wake_readers()
        else:
            self._state = _CLOSED

    def _wake_readers(self) -> None:
        """Wake readers waiting on the channel (the async face has some)."""

    def _teardown(self) -> None:
        """Close, and wait until the producer's clean-up ran on the loop (bounded)."""
        self._close()
        finished = self._finished
        if finished is not None and self._cmd is not None:
            self._sender.wait_cleanup(self._cmd, finished)

    async def _ateardown(self) -> None:
        self._close()
        finished = self._finished
        if finished is not None and self._cmd is not None:
            await self._sender.await_cleanup(self._cmd, finished)

    def __del__(self) -> None:
        # A consumer that broke out of its loop and dropped the stream leaves through here
        # (without waiting: a finalizer must never block).
        if self._state == _OPEN:
            self._close()


class StreamFinished(Exception):
    """Raised inside a read when the stream was closed meanwhile; never leaves the stream."""


class BlockingStream(_StreamBase[T]):
    """The items of a stream, for a plain thread: ``for item in runtime.stream(fn): ...``.

    Also a context manager (``with runtime.stream(fn) as items:``), which closes the
    producer when the block is left and returns once the producer's ``finally`` blocks ran
    on the loop (bounded by the operation timeout; a slower clean-up is logged). The stream
    starts on first iteration (or on entering the ``with``). Each ``next()`` waits with the
    GIL released, at most the per-item timeout (:class:`StreamTimeoutError`); Ctrl-C
    interrupts the wait and closes the stream. The consuming thread runs the command's
    thread-sensitive tool calls, between items and while it waits for one.
    """

    def __iter__(self) -> BlockingStream[T]:
        if self._state == _NEW:
            self._start(blocking=True)
        return self

    def __next__(self) -> T:
        if self._state != _OPEN:
            if self._state == _NEW:
                self._start(blocking=True)
            else:
                error = self._closed_read()
                if error is not None:
                    raise error
                raise StopIteration
        caller = self._caller
        try:
            if caller is not None:
                caller.serve_pending()  # tool calls that came while the consumer was busy
            while True:
                ready, item = self._next_from_batch()
                if ready:
                    return item  # type: ignore[no-any-return]
                channel = self._channel()
                spin = self._sender.config.caller_spin
                if caller is not None:
                    readable = caller.wait(channel, self._item_timeout, spin)
                else:
                    readable = channel.wait(self._item_timeout, spin)
                if not readable:
                    raise self._timeout_error()
        except StopIteration:
            raise
        except StreamFinished:
            raise StopIteration from None
        except BaseException as exc:
            self._break(exc)  # an error, a timeout or Ctrl-C: the producer must not run on
            raise

    def close(self) -> None:
        """Stop consuming: the producer is closed on the runtime loop (idempotent); returns
        once its clean-up ran there (bounded by the operation timeout)."""
        self._teardown()

    def __enter__(self) -> BlockingStream[T]:
        return self.__iter__()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._teardown()


class AsyncStream(_StreamBase[T]):
    """The items of a stream, for asyncio (any loop) and trio: ``async for item in ...``.

    Also an async context manager. The caller is woken through its own loop (one wake-up
    per batch); cancelling the awaiting task, a per-item timeout or an error closes the
    producer on the runtime loop. Several tasks may read one stream (each item goes to one
    of them), and ``aclose()`` from another task wakes a waiting reader at once. In an
    already-cancelled trio scope the first read submits nothing. ``aclose()`` and leaving
    ``async with`` return once the producer's clean-up ran on the loop (bounded).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()  # the readers' waiters: taken by readers and the producer
        self._waiters: list[Oneshot] = []
        self._registered = False

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def _astart(self) -> None:
        cmd = self._make_command(self._buffer)
        self._cmd = cmd
        self._state = _OPEN  # claimed: a second reader during the start does not start again
        try:
            await self._sender.astart_stream(cmd)
        except BaseException:
            self._state = _CLOSED
            raise

    async def __anext__(self) -> T:
        if self._state == _NEW:
            await self._astart()
        elif self._state != _OPEN:
            error = self._closed_read()
            if error is not None:
                raise error
            raise StopAsyncIteration
        try:
            while True:
                try:
                    ready, item = self._next_from_batch()
                except (StopIteration, StreamFinished):
                    raise StopAsyncIteration from None
                if ready:
                    return item  # type: ignore[no-any-return]
                await self._wait_readable()
        except StopAsyncIteration:
            raise
        except BaseException as exc:
            self._break(exc)
            raise

    async def _wait_readable(self) -> None:
        shot = self._sender.oneshot()
        if not self._add_waiter(shot):
            return  # readable already: take now
        await await_oneshot(
            shot, self._item_timeout, self._timeout_error, lambda: None, self._sender.config.caller_spin
        )

    def _add_waiter(self, shot: Oneshot) -> bool:
        """Wait with the other readers for the channel to become readable; False: it is now."""
        with self._lock:
            if self._state != _OPEN:
                return False
            if not self._registered:
                if not self._channel().notify_readable(self._readable):
                    return False
                self._registered = True
            self._waiters.append(shot)
        return True

    def _readable(self) -> None:
        # On the producer's thread: the channel became readable or ended; wake every reader.
        with self._lock:
            self._registered = False
            waiters, self._waiters = self._waiters, []
        for shot in waiters:
            shot.set_result(None)

    def _wake_readers(self) -> None:
        # Closed (maybe by another task): the channel drops its callback, so wake them here.
        with self._lock:
            self._registered = False
            waiters, self._waiters = self._waiters, []
        for shot in waiters:
            shot.set_result(None)

    async def aclose(self) -> None:
        """:meth:`BlockingStream.close`, awaited: returns once the producer's clean-up ran on the
        runtime loop (bounded by the operation timeout)."""
        await self._ateardown()

    async def __aenter__(self) -> AsyncStream[T]:
        if self._state == _NEW:
            await self._astart()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._ateardown()


StreamFace = TypeVar("StreamFace", BlockingStream[Any], AsyncStream[Any])


def stream_of_call(
    face: type[StreamFace], sender: Sender, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> StreamFace:
    """A stream (of kind *face*) of the items ``fn(*args, **kwargs)`` yields on the runtime loop."""

    def make(buffer: int) -> Stream:
        return Stream(fn, args, kwargs, sender.core.Channel(buffer), oneshot=sender.oneshot())

    return face(sender, make, f"Stream({callable_name(fn)})", sender.config.stream_buffer, sender.operation_timeout)


def stream_of_chat(face: type[StreamFace], sender: Sender, agent_id: str, message: str) -> StreamFace:
    """A stream (of kind *face*) of agent *agent_id*'s reply to *message*, chunk by chunk."""
    ChatStream(agent_id, message, sender.core.Channel(1))  # bad input fails here, at the call

    def make(buffer: int) -> ChatStream:
        return ChatStream(agent_id, message, sender.core.Channel(buffer), oneshot=sender.oneshot())

    what = f"ChatStream(agent={agent_id!r})"
    return face(sender, make, what, sender.config.stream_buffer, sender.operation_timeout)
