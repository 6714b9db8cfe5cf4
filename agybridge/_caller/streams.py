"""The consuming end of a stream, on the caller's side: a thread, an asyncio loop or trio.

:class:`BlockingStream` is an iterator and context manager for plain threads;
:class:`AsyncStream` is an async iterator and async context manager for asyncio (any loop)
and trio. Both take the items the producer made meanwhile in one batch per wake-up, and
both close the producer on the runtime loop exactly once however the consumer leaves:
exhausted, ``break`` then garbage collection, ``close()``/``aclose()``, leaving the
``with``, an error, a per-item timeout, cancellation, or Ctrl-C while blocked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from agybridge import _validate
from agybridge._backends import await_oneshot
from agybridge._caller.send import Sender
from agybridge.commands import ChatStream, Stream, callable_name
from agybridge.errors import StreamTimeoutError

__all__ = ["AsyncStream", "BlockingStream", "stream_of_call", "stream_of_chat"]

T = TypeVar("T")
S = TypeVar("S", bound="_StreamBase[Any]")

_NEW, _OPEN, _CLOSED = 0, 1, 2


class _StreamBase(Generic[T]):
    """What both faces share: starting the command, the current batch, closing once."""

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

    def __repr__(self) -> str:
        state = ("not started", "open", "closed")[self._state]
        return f"<{type(self).__name__} {self._what} {state}>"

    def with_options(self: S, *, buffer: int | None = None, item_timeout: float | None = None) -> S:
        """Set the buffer size and the per-item timeout before the stream starts; return self.

        Kept apart from the call so that no option can collide with a keyword argument of
        the streamed function itself. *buffer* bounds how far the producer runs ahead of
        the consumer (items); *item_timeout* bounds the wait for each next item (seconds).
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
            self._sender.start_stream(cmd, blocking)
        except BaseException:
            self._state = _CLOSED
            raise
        self._cmd = cmd
        self._state = _OPEN

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
            return True, item
        channel = self._channel()
        batch = channel.take()
        if batch:
            self._batch = batch
            self._index = 1
            return True, batch[0]
        if channel.ended:
            error = channel.end_exception()
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
        else:
            self._state = _CLOSED

    def __del__(self) -> None:
        # A consumer that broke out of its loop and dropped the stream leaves through here.
        if self._state == _OPEN:
            self._close()


class BlockingStream(_StreamBase[T]):
    """The items of a stream, for a plain thread: ``for item in runtime.stream(fn): ...``.

    Also a context manager (``with runtime.stream(fn) as items:``), which closes the
    producer when the block is left. The stream starts on first iteration (or on entering
    the ``with``). Each ``next()`` waits with the GIL released, at most the per-item
    timeout (:class:`StreamTimeoutError`); Ctrl-C interrupts the wait and closes the stream.
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
                raise StopIteration
        try:
            while True:
                ready, item = self._next_from_batch()
                if ready:
                    return item  # type: ignore[no-any-return]
                if not self._channel().wait(self._item_timeout, self._sender.config.caller_spin):
                    raise self._timeout_error()
        except StopIteration:
            raise
        except BaseException:
            self._close()  # an error, a timeout or Ctrl-C: the producer must not run on
            raise

    def close(self) -> None:
        """Stop consuming: the producer is closed on the runtime loop (idempotent)."""
        self._close()

    def __enter__(self) -> BlockingStream[T]:
        return self.__iter__()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()


def _set_none(shot: Any) -> None:
    shot.set_result(None)


class AsyncStream(_StreamBase[T]):
    """The items of a stream, for asyncio (any loop) and trio: ``async for item in ...``.

    Also an async context manager. The caller is woken through its own loop (one wake-up
    per batch); cancelling the awaiting task, a per-item timeout or an error closes the
    producer on the runtime loop.
    """

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._state != _OPEN:
            if self._state == _NEW:
                self._start(blocking=False)
            else:
                raise StopAsyncIteration
        try:
            while True:
                try:
                    ready, item = self._next_from_batch()
                except StopIteration:
                    raise StopAsyncIteration from None
                if ready:
                    return item  # type: ignore[no-any-return]
                await self._wait_readable()
        except StopAsyncIteration:
            raise
        except BaseException:
            self._close()
            raise

    async def _wait_readable(self) -> None:
        shot = self._sender.oneshot()
        if not self._channel().notify_readable(functools.partial(_set_none, shot)):
            return  # readable already: take now
        await await_oneshot(
            shot, self._item_timeout, self._timeout_error, lambda: None, self._sender.config.caller_spin
        )

    async def aclose(self) -> None:
        """:meth:`BlockingStream.close`, awaited."""
        self._close()

    async def __aenter__(self) -> AsyncStream[T]:
        if self._state == _NEW:
            self._start(blocking=False)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()


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
