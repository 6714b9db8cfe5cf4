"""Channel: ordering, batching, back-pressure, end of stream, cancel, waits, interrupts, stress."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import traceback
from types import ModuleType
from typing import Any

import pytest
from conftest import ctrl_c_soon

from agybridge.errors import QueueClosedError

WAIT = 10.0  # bound on every blocking step; far above what any of them should take


class Counter:
    """A callback that counts its calls and sets an event on each."""

    def __init__(self) -> None:
        self.calls = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.event.set()


def _raise_deep() -> None:
    raise LookupError("stream failure")


def _failure() -> LookupError:
    try:
        _raise_deep()
    except LookupError as exc:
        return exc
    raise AssertionError("unreachable")


def _frames(exc: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(exc.__traceback__)]


def test_items_come_out_in_order_as_one_batch(core: ModuleType) -> None:
    channel = core.Channel(10)
    assert channel.take() == []
    for i in range(10):
        assert channel.put(i) is True
    assert len(channel) == 10
    assert channel.take() == list(range(10))
    assert channel.take() == [] and len(channel) == 0
    assert channel.put("next") is True
    assert channel.take() == ["next"]


def test_a_burst_costs_the_consumer_one_wakeup(core: ModuleType) -> None:
    channel = core.Channel(100)
    woken = Counter()
    assert channel.notify_readable(woken) is True
    for i in range(100):
        channel.put(i)
    assert woken.calls == 1 and channel.reader_wakeups == 1
    assert channel.notify_readable(woken) is False  # readable already: take instead of waiting
    assert channel.take() == list(range(100))
    assert channel.take() == []  # the batch is used up: its room is free again
    assert channel.notify_readable(woken) is True
    for i in range(50):
        channel.put(i)
    assert woken.calls == 2 and channel.reader_wakeups == 2


def test_one_readable_registration_at_a_time(core: ModuleType) -> None:
    channel = core.Channel(1)
    assert channel.notify_readable(Counter()) is True
    with pytest.raises(RuntimeError, match="already registered"):
        channel.notify_readable(Counter())
    with pytest.raises(TypeError, match="callable"):
        core.Channel(1).notify_readable(42)
    with pytest.raises(TypeError, match="callable"):
        core.Channel(1).notify_writable(42)


def test_full_buffer_refuses_puts_and_wakes_the_producer_once_when_drained(core: ModuleType) -> None:
    channel = core.Channel(3)
    writable = Counter()
    assert channel.notify_writable(writable) is False  # room already: nothing to wait for
    for i in range(3):
        assert channel.full() is False
        assert channel.put(i) is True
    assert channel.full() is True
    assert channel.put(3) is False
    assert channel.cancelled is False  # refused because full, not because the consumer left
    assert len(channel) == 3
    assert channel.notify_writable(writable) is True
    with pytest.raises(RuntimeError, match="already registered"):
        channel.notify_writable(Counter())
    assert channel.take() == [0, 1, 2]
    # The batch just taken still counts until the consumer takes again: it is not used up.
    assert channel.full() is True and channel.put(3) is False
    assert writable.calls == 0
    assert channel.take() == []
    assert writable.calls == 1 and channel.writer_wakeups == 1
    assert channel.put(3) is True
    assert channel.take() == [3]
    assert channel.take() == []
    assert writable.calls == 1 and channel.writer_wakeups == 1  # not-full -> not-full wakes nobody


def test_an_empty_take_never_hands_out_the_live_buffer(core: ModuleType) -> None:
    """Regression: an empty take() once returned the list puts append to, so a batch was read twice."""
    channel = core.Channel(4)
    empty = channel.take()
    channel.put("late")
    assert empty == [] and channel.take() == ["late"]


def test_the_producer_never_runs_more_than_capacity_ahead_of_what_was_used(core: ModuleType) -> None:
    channel = core.Channel(4)
    produced = used = 0
    for _ in range(10):
        while channel.put(produced):
            produced += 1
            assert produced - used <= 4
        batch = channel.take()
        if batch:
            assert channel.put(-1) is False, "the consumer still holds the batch: no room yet"
        used += len(batch)  # used up; the next take() frees its room
    assert produced == used == 20  # 4 items every other round: take() alternates batch / release


def test_clean_finish_delivers_items_first(core: ModuleType) -> None:
    channel = core.Channel(4)
    readable = Counter()
    channel.put("a")
    channel.put("b")
    assert channel.finish() is True
    assert channel.finish() is False
    assert channel.finished is True and channel.ended is False
    with pytest.raises(QueueClosedError):
        channel.put("c")
    assert channel.notify_readable(readable) is False
    assert channel.take() == ["a", "b"]
    assert channel.take() == []
    assert channel.ended is True and channel.end_exception() is None
    assert channel.wait(timeout=0) is True


def test_finish_wakes_a_waiting_consumer(core: ModuleType) -> None:
    channel = core.Channel(4)
    readable = Counter()
    assert channel.notify_readable(readable) is True
    channel.finish()
    assert readable.calls == 1 and channel.reader_wakeups == 1
    assert channel.ended is True


def test_finish_with_an_error_keeps_its_original_traceback(core: ModuleType) -> None:
    channel = core.Channel(4)
    error = _failure()
    channel.put(1)
    channel.put(2)
    assert channel.finish(error) is True
    assert channel.finish(RuntimeError("late")) is False
    assert channel.take() == [1, 2]
    assert channel.take() == [] and channel.ended is True
    lengths: set[int] = set()
    for _ in range(100):
        with pytest.raises(LookupError, match="stream failure") as info:
            raise channel.end_exception()  # type: ignore[misc]
        assert info.value is error
        assert "_raise_deep" in _frames(info.value)
        lengths.add(len(_frames(info.value)))
    assert len(lengths) == 1
    with pytest.raises(TypeError, match="exception"):
        core.Channel(1).finish("not an exception")


def test_cancel_wakes_the_producer_and_refuses_puts(core: ModuleType) -> None:
    channel = core.Channel(2)
    readable = Counter()
    writable = Counter()
    channel.put(1)
    channel.put(2)
    assert channel.notify_writable(writable) is True
    assert channel.cancel() is True
    assert channel.cancel() is False
    assert writable.calls == 1 and channel.writer_wakeups == 1
    assert channel.cancelled is True and channel.ended is True and len(channel) == 0
    assert channel.put(3) is False and channel.cancelled is True  # refused because the consumer left
    assert channel.take() == []
    assert channel.notify_writable(writable) is False
    assert channel.notify_readable(readable) is False
    assert channel.finish() is False
    assert readable.calls == 0


def test_cancel_drops_a_registered_readable_callback(core: ModuleType) -> None:
    channel = core.Channel(2)
    readable = Counter()
    assert channel.notify_readable(readable) is True
    channel.cancel()
    assert readable.calls == 0


def test_cancel_releases_a_blocked_wait(core: ModuleType) -> None:
    channel = core.Channel(2)
    result: list[bool] = []
    started = threading.Event()

    def consumer() -> None:
        started.set()
        result.append(channel.wait(timeout=WAIT))

    thread = threading.Thread(target=consumer)
    thread.start()
    assert started.wait(WAIT)
    channel.cancel()
    thread.join(WAIT)
    assert result == [True] and channel.ended is True


@pytest.mark.parametrize("spin", [0.0, 0.001])
def test_blocking_wait_is_released_by_a_put_from_another_thread(core: ModuleType, spin: float) -> None:
    channel = core.Channel(8)
    started = threading.Event()
    got: list[Any] = []

    def consumer() -> None:
        started.set()
        if channel.wait(timeout=WAIT, spin=spin):
            got.extend(channel.take())

    thread = threading.Thread(target=consumer)
    thread.start()
    assert started.wait(WAIT)
    channel.put("item")
    thread.join(WAIT)
    assert not thread.is_alive()
    assert got == ["item"]
    assert channel.reader_wakeups <= 1


def test_wait_timeout_returns_false_and_leaves_the_channel_usable(core: ModuleType) -> None:
    channel = core.Channel(2)
    assert channel.wait(timeout=0) is False
    assert channel.wait(timeout=0.02) is False
    assert channel.wait(timeout=0.02, spin=0.005) is False
    channel.put(1)
    assert channel.wait(timeout=0) is True
    assert channel.take() == [1]
    assert channel.wait(timeout=0.02) is False  # the wait lock is held again after each round
    with pytest.raises(ValueError, match="timeout"):
        channel.wait(timeout=-1)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signal delivery")
@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs the main thread")
def test_ctrl_c_interrupts_a_blocked_wait(core: ModuleType) -> None:
    channel = core.Channel(2)
    with ctrl_c_soon(), pytest.raises(KeyboardInterrupt):
        channel.wait(timeout=30)
    assert channel.take() == [] and not channel.ended
    # The interrupted wait left nothing behind: the next waits time out and wake as usual.
    assert channel.wait(timeout=0.02) is False
    channel.put(1)
    assert channel.wait(timeout=WAIT) is True and channel.take() == [1]


def test_callback_exceptions_are_reported_not_raised(core: ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    channel = core.Channel(1)

    def bad_reader() -> None:
        raise RuntimeError("reader boom")

    def bad_writer() -> None:
        raise RuntimeError("writer boom")

    with caplog.at_level(logging.ERROR, logger="agybridge"):
        assert channel.notify_readable(bad_reader) is True
        assert channel.put(1) is True
        assert channel.notify_writable(bad_writer) is True
        assert channel.take() == [1]
        assert channel.take() == []  # the batch is used up: room again, the producer is woken
    messages = {str(r.exc_info[1]) for r in caplog.records if r.exc_info}
    assert messages == {"reader boom", "writer boom"}


@pytest.mark.parametrize("bad", [0, -1])
def test_capacity_below_one_is_a_value_error(core: ModuleType, bad: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        core.Channel(bad)


@pytest.mark.parametrize("bad", [True, 1.5, "3", None])
def test_capacity_must_be_an_int(core: ModuleType, bad: Any) -> None:
    with pytest.raises(TypeError, match="capacity"):
        core.Channel(bad)


def test_repr_and_properties(core: ModuleType) -> None:
    channel = core.Channel(5)
    assert channel.capacity == 5
    channel.put(1)
    assert "1/5" in repr(channel) and "open" in repr(channel)
    channel.finish()
    assert "finished" in repr(channel)
    channel.cancel()
    assert "cancelled" in repr(channel)


def test_threaded_stress_keeps_every_item_in_order_within_capacity(core: ModuleType) -> None:
    total = 100_000
    capacity = 64
    channel = core.Channel(capacity)
    received: list[int] = []
    problems: list[str] = []
    max_len = 0
    max_batch = 0

    def producer() -> None:
        nonlocal max_len
        room = threading.Event()
        for i in range(total):
            while channel.full():
                room.clear()
                if channel.notify_writable(room.set) and not room.wait(WAIT):
                    problems.append(f"producer starved at {i}")
                    return
            # The next item is made only now, with room for it: never more than capacity ahead.
            if not channel.put(i):
                problems.append(f"put refused at {i}")
                return
            max_len = max(max_len, len(channel))
        channel.finish()

    def consumer() -> None:
        nonlocal max_batch
        while True:
            batch = channel.take()
            if batch:
                max_batch = max(max_batch, len(batch))
                received.extend(batch)
            elif channel.ended:
                return
            elif not channel.wait(timeout=WAIT):
                problems.append(f"consumer starved after {len(received)}")
                return

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert problems == []
    assert received == list(range(total))
    assert max_len <= capacity and max_batch <= capacity
    assert channel.end_exception() is None


def test_asyncio_consumer_with_readable_callbacks(core: ModuleType) -> None:
    total = 5_000
    channel = core.Channel(16)
    stop_producer = threading.Event()

    def producer() -> None:
        room = threading.Event()
        for i in range(total):
            while channel.full():
                room.clear()
                if channel.notify_writable(room.set) and not room.wait(WAIT):
                    return
            if stop_producer.is_set():
                return
            channel.put(i)
        channel.finish(_failure())

    async def consume() -> list[int]:
        loop = asyncio.get_running_loop()
        received: list[int] = []
        while True:
            batch = channel.take()
            if batch:
                received.extend(batch)
                continue
            if channel.ended:
                error = channel.end_exception()
                assert isinstance(error, LookupError) and "_raise_deep" in _frames(error)
                return received
            ready = loop.create_future()

            def wake(ready: asyncio.Future[None] = ready) -> None:
                loop.call_soon_threadsafe(lambda: ready.done() or ready.set_result(None))

            if channel.notify_readable(wake):
                await asyncio.wait_for(ready, WAIT)

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        received = asyncio.run(consume())
    finally:
        stop_producer.set()
        channel.cancel()
        thread.join(WAIT)
    assert received == list(range(total))
    assert channel.reader_wakeups <= total
