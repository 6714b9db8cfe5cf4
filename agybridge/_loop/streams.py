"""The producing end of a stream; runs on the runtime loop thread only.

A stream's producer is an async iterable on the runtime loop; its items cross to the
consumer through a :class:`~agybridge.Channel`. The producer is advanced only while the
channel has room (it checks before computing the next item, so it never runs more than
the buffer ahead of the consumer) and parks on a future the consumer's ``take`` wakes.
Ending the channel is not done here: the send path ends it with the command's outcome (see
:func:`agybridge._caller.send.end_channel_with`), so a stream ends exactly when its command does, whatever the
reason (exhausted, failed, cancelled, shut down, the runtime died).

A consumer that leaves cancels the channel, then asks the loop to stop the stream
(:func:`stop_stream`). The task is cancelled only while the producer's own code is
running (inside ``__anext__``, or before the pump started): a producer parked for room,
or already being closed, stops by itself, and cancelling it then would cut its
``finally`` blocks short at their first ``await``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from agybridge._select import Channel
from agybridge.commands import ChatStream, PyCommand, Stream

__all__ = ["ConsumerLeft", "open_source", "pump", "run_stream", "stop_stream"]

# Channels whose pump is parked for room or closing its producer: it stops by itself once
# the consumer cancels. Touched only on the loop thread that runs the pump (one per
# runtime); a set's add/discard/membership are atomic, so runtimes never interfere.
_SELF_STOPPING: set[Channel] = set()


class ConsumerLeft(asyncio.CancelledError):
    """The consumer left before the producer was done: the stream's command is cancelled.

    A ``CancelledError`` so that a streamed chat ends as cancelled (no ``after_chat`` with a
    partial reply), exactly as when the task itself is cancelled.
    """


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _room(channel: Channel) -> None:
    """Wait until the consumer frees room (or leaves)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        # Runs on the consumer's thread (inside its take() or cancel()).
        try:
            loop.call_soon_threadsafe(_set_done, fut)
        except RuntimeError:
            pass  # the runtime loop is closed: nothing is waiting any more

    if channel.notify_writable(wake):
        await fut


async def pump(channel: Channel, items: AsyncIterator[Any]) -> None:
    """Move items from *items* into *channel* until it is exhausted, then close *items* here.

    Raises :class:`ConsumerLeft` if the consumer left first; *items* is closed on this loop
    (its ``finally`` blocks run to their end) however the pump ends.
    """
    try:
        while not channel.cancelled:
            if channel.full():
                _SELF_STOPPING.add(channel)
                try:
                    await _room(channel)
                finally:
                    _SELF_STOPPING.discard(channel)
                continue
            try:
                item = await items.__anext__()
            except StopAsyncIteration:
                return
            if not channel.put(item):
                break  # the consumer left while the item was being made
        raise ConsumerLeft("the consumer left the stream")
    finally:
        _SELF_STOPPING.add(channel)
        try:
            await close_source(items)
        finally:
            _SELF_STOPPING.discard(channel)


def stop_stream(cmd: PyCommand, abort: Callable[[PyCommand], None]) -> None:
    """On the loop: the consumer of *cmd* left; cancel its task unless the pump stops by itself."""
    if isinstance(cmd, (Stream, ChatStream)) and cmd.channel in _SELF_STOPPING:
        return
    abort(cmd)


async def open_source(source: Any, what: str) -> AsyncIterator[Any]:
    """The async iterator behind *source*: an async iterable, or an awaitable of one."""
    if not hasattr(source, "__aiter__") and inspect.isawaitable(source):
        source = await source
    if not hasattr(source, "__aiter__"):
        raise TypeError(
            f"{what} must give an async iterable (an async generator function, or a coroutine "
            f"function returning an async iterable), but it gave {type(source).__name__} {source!r}"
        )
    iterator: AsyncIterator[Any] = source.__aiter__()
    return iterator


async def close_source(items: AsyncIterator[Any]) -> None:
    """Close *items* on this loop (its ``finally`` blocks run here); a no-op when it finished."""
    aclose = getattr(items, "aclose", None)
    if aclose is not None:
        await aclose()


async def run_stream(cmd: Stream) -> None:
    """The handler of :class:`~agybridge.commands.Stream` commands."""
    items = await open_source(cmd.fn(*cmd.args, **cmd.kwargs), cmd.describe())
    await pump(cmd.channel, items)
