"""Streams: async generators on the runtime loop, consumed from threads, asyncio and trio."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import asyncio_host, trio_host

from agybridge import (
    AgentBridgeState,
    CommandCancelledError,
    DeadlockError,
    PythonRuntime,
    StreamTimeoutError,
)

pytestmark = pytest.mark.timeout(30)


class Producer:
    """An async generator function that records how far it got and when it was closed."""

    def __init__(self) -> None:
        self.made = 0
        self.closed = threading.Event()
        self.close_count = 0

    async def __call__(self, n: int, delay: float = 0.0) -> AsyncIterator[int]:
        try:
            for i in range(n):
                if delay:
                    await asyncio.sleep(delay)
                self.made += 1
                yield i
        finally:
            self.close_count += 1
            self.closed.set()


def test_items_arrive_in_order_exactly_once_from_a_thread(runtime: PythonRuntime) -> None:
    producer = Producer()
    assert list(runtime.stream(producer, 5000).with_options(buffer=16)) == list(range(5000))
    assert producer.closed.wait(5) and producer.close_count == 1


def test_break_closes_the_producer_once(runtime: PythonRuntime) -> None:
    producer = Producer()
    with runtime.stream(producer, 10**9).with_options(buffer=8) as items:
        for item in items:
            if item == 20:
                break
    assert producer.closed.wait(5) and producer.close_count == 1
    assert producer.made <= 21 + 8, "the producer ran more than the buffer ahead"


def test_a_dropped_iterator_closes_the_producer(runtime: PythonRuntime) -> None:
    producer = Producer()
    for item in runtime.stream(producer, 10**9):
        if item == 3:
            break
    gc.collect()
    assert producer.closed.wait(5) and producer.close_count == 1


def test_a_slow_consumer_holds_the_producer_to_the_buffer(runtime: PythonRuntime) -> None:
    producer = Producer()
    used = 0
    with runtime.stream(producer, 200).with_options(buffer=5) as items:
        for _item in items:
            used += 1
            assert producer.made - used <= 5
    assert used == 200


def test_the_producers_error_follows_its_items_with_its_traceback(runtime: PythonRuntime) -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise LookupError("model went away")

    got: list[int] = []
    with pytest.raises(LookupError, match="model went away") as info:
        for item in runtime.stream(failing):
            got.append(item)
    assert got == [1, 2]
    assert "failing" in [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]


def test_a_stall_raises_a_timeout_naming_the_stream_and_closes_it(runtime: PythonRuntime) -> None:
    producer = Producer()
    with pytest.raises(StreamTimeoutError, match=r"Stream\(Producer"):
        list(runtime.stream(producer, 3, 30).with_options(item_timeout=0.1))
    assert producer.closed.wait(5)


def test_options_never_collide_with_the_functions_own_keywords(runtime: PythonRuntime) -> None:
    async def echo(buffer: int, item_timeout: str) -> AsyncIterator[Any]:
        yield buffer
        yield item_timeout

    assert list(runtime.stream(echo, buffer=7, item_timeout="mine").with_options(buffer=2)) == [7, "mine"]


def test_bad_input_is_a_typed_error(runtime: PythonRuntime) -> None:
    async def not_a_stream() -> int:
        return 3

    with pytest.raises(TypeError, match="async iterable"):
        list(runtime.stream(not_a_stream))
    with pytest.raises(ValueError, match="buffer"):
        runtime.stream(not_a_stream).with_options(buffer=0)
    with pytest.raises(TypeError, match="buffer"):
        runtime.stream(not_a_stream).with_options(buffer=1.5)  # type: ignore[arg-type]


def test_a_coroutine_returning_an_async_iterable_streams_too(runtime: PythonRuntime) -> None:
    producer = Producer()

    async def make() -> AsyncIterator[int]:
        return producer(3)

    assert list(runtime.stream(make)) == [0, 1, 2]


def test_shutdown_mid_stream_delivers_what_was_made_then_fails(core: Any) -> None:
    from conftest import make_config

    from agybridge import RuntimeShutdownError

    rt = PythonRuntime(make_config(shutdown_grace=0.0), core=core).start()
    producer = Producer()
    got: list[int] = []
    with pytest.raises(RuntimeShutdownError):
        for item in rt.stream(producer, 10**9, 0.001).with_options(buffer=4):
            got.append(item)
            if item == 5:
                threading.Thread(target=rt.shutdown).start()
    assert got == list(range(len(got))) and len(got) >= 6
    assert producer.closed.wait(5)


def test_a_blocking_stream_on_the_runtime_thread_is_a_deadlock_error(runtime: PythonRuntime) -> None:
    producer = Producer()

    async def consume_blocking() -> None:
        list(runtime.stream(producer, 3))

    with pytest.raises(DeadlockError, match="astream"):
        runtime.run(consume_blocking)


def test_asyncio_and_trio_consumers(runtime: PythonRuntime) -> None:
    async def consume() -> list[int]:
        return [item async for item in runtime.astream(Producer(), 300)]

    assert asyncio_host(consume) == list(range(300))
    assert trio_host(consume) == list(range(300))


def test_asyncio_cancellation_closes_the_producer(runtime: PythonRuntime) -> None:
    producer = Producer()

    async def consume() -> None:
        async def reader() -> None:
            async for _item in runtime.astream(producer, 10**9, 0.001):
                pass

        task = asyncio.ensure_future(reader())
        while producer.made < 5:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio_host(consume)
    assert producer.closed.wait(5) and producer.close_count == 1


def test_trio_cancel_scope_closes_the_producer(runtime: PythonRuntime) -> None:
    import trio

    producer = Producer()

    async def consume() -> None:
        with trio.move_on_after(0.2):
            async with runtime.astream(producer, 10**9, 0.001) as items:
                async for _item in items:
                    pass

    trio_host(consume)
    assert producer.closed.wait(5) and producer.close_count == 1


class StreamingAgent:
    def __init__(self) -> None:
        self.closed = threading.Event()

    async def chat_stream(self, message: str) -> AsyncIterator[str]:
        try:
            for word in message.split():
                yield word + " "
        finally:
            self.closed.set()


class PlainAgent:
    async def chat(self, message: str) -> str:
        return message.upper()


def test_chat_stream_is_a_chat_with_hooks_once(runtime: PythonRuntime) -> None:
    events: list[tuple[str, Any]] = []
    state = AgentBridgeState(
        hooks={
            "before_chat": [lambda a, e, ctx: events.append((e, ctx["message"]))],
            "after_chat": [lambda a, e, ctx: events.append((e, ctx["reply"]))],
        }
    )
    runtime.register_agent("s", StreamingAgent, state)
    runtime.register_agent("p", PlainAgent)
    assert list(runtime.chat_stream("s", "one two three")) == ["one ", "two ", "three "]
    assert events == [("before_chat", "one two three"), ("after_chat", "one two three ")]
    assert runtime.chat("s", "joined reply") == "joined reply "
    assert list(runtime.chat_stream("p", "whole")) == ["WHOLE"]


def test_chat_stream_from_asyncio_and_trio(runtime: PythonRuntime) -> None:
    runtime.register_agent("s", StreamingAgent)

    async def consume() -> list[str]:
        return [chunk async for chunk in runtime.achat_stream("s", "a b")]

    assert asyncio_host(consume) == ["a ", "b "]
    assert trio_host(consume) == ["a ", "b "]


# -- early exit and outcomes: the cases not covered above ------------------------------------


class Stalling:
    """Yields *n* items, then stalls (as a model that stops answering); records its close."""

    def __init__(self) -> None:
        self.stalled = threading.Event()
        self.closed = threading.Event()
        self.close_count = 0

    async def __call__(self, n: int) -> AsyncIterator[int]:
        try:
            for i in range(n):
                yield i
            self.stalled.set()
            await asyncio.sleep(60)
            yield n
        finally:
            self.close_count += 1
            self.closed.set()


def test_close_called_explicitly_closes_the_producer_once(runtime: PythonRuntime) -> None:
    producer = Producer()
    items = runtime.stream(producer, 10**9).with_options(buffer=4)
    assert [next(items), next(items)] == [0, 1]
    items.close()
    assert producer.closed.wait(5) and producer.close_count == 1
    items.close()  # idempotent
    with pytest.raises(StopIteration):
        next(items)
    assert producer.close_count == 1
    assert "closed" in repr(items)


def test_close_before_iterating_never_starts_the_producer(runtime: PythonRuntime) -> None:
    producer = Producer()
    items = runtime.stream(producer, 10)
    items.close()
    assert list(items) == []
    assert producer.made == 0 and producer.close_count == 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signal delivery")
def test_ctrl_c_while_blocked_closes_the_producer_once(runtime: PythonRuntime) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    producer = Stalling()
    all_taken, interrupted = threading.Event(), threading.Event()

    def interrupt_when_blocked() -> None:
        if not (producer.stalled.wait(10) and all_taken.wait(10)):
            return
        # A SIGINT that lands in the microseconds between next() entering the core's wait
        # and the wait parking is only noticed when the wait ends (the core checks signals
        # when its park is interrupted); a user's Ctrl-C comes long after. Send again only
        # while the consumer is provably still blocked.
        for _attempt in range(5):
            os.kill(os.getpid(), signal.SIGINT)
            if interrupted.wait(1):
                return

    threading.Thread(target=interrupt_when_blocked).start()
    got: list[int] = []
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            for item in runtime.stream(producer, 3).with_options(item_timeout=30):
                got.append(item)
                if item == 2:
                    all_taken.set()  # the next next() blocks: the producer has stalled
    finally:
        interrupted.set()
    assert time.monotonic() - started < 10, "Ctrl-C did not interrupt the blocked next()"
    assert got == [0, 1, 2]
    assert producer.closed.wait(5) and producer.close_count == 1
    assert list(runtime.stream(Producer(), 3)) == [0, 1, 2]  # the runtime carries on


def test_asyncio_timeout_around_anext_closes_the_producer_once(runtime: PythonRuntime) -> None:
    producers = [Stalling(), Stalling()]

    async def consume() -> list[Any]:
        outcomes: list[Any] = []
        # asyncio.wait_for cancels the pending __anext__ when its time is up.
        items = runtime.astream(producers[0], 2).__aiter__()
        outcomes.append([await items.__anext__(), await items.__anext__()])
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(items.__anext__(), 0.1)
        with pytest.raises(CommandCancelledError, match="cancelled at item 3"):
            await items.__anext__()  # broken by the cancellation: it stays broken (issue 26)
        if sys.version_info >= (3, 11):
            got: list[int] = []
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    async for item in runtime.astream(producers[1], 2):
                        got.append(item)
            outcomes.append(got)
        return outcomes

    outcomes = asyncio_host(consume)
    assert outcomes[0] == [0, 1]
    assert producers[0].closed.wait(5) and producers[0].close_count == 1
    if sys.version_info >= (3, 11):
        assert outcomes[1] == [0, 1]
        assert producers[1].closed.wait(5) and producers[1].close_count == 1


def test_item_timeout_of_async_consumers_names_the_stream(runtime: PythonRuntime) -> None:
    producers = [Stalling(), Stalling()]

    async def consume(producer: Stalling) -> list[int]:
        got: list[int] = []
        with pytest.raises(StreamTimeoutError, match=r"Stream\(Stalling.*0.1 s item timeout"):
            async for item in runtime.astream(producer, 2).with_options(item_timeout=0.1):
                got.append(item)
        return got

    assert asyncio_host(lambda: consume(producers[0])) == [0, 1]
    assert trio_host(lambda: consume(producers[1])) == [0, 1]
    for producer in producers:
        assert producer.closed.wait(5) and producer.close_count == 1


def test_trio_fail_after_around_anext_closes_the_producer(runtime: PythonRuntime) -> None:
    import trio

    producer = Stalling()

    async def consume() -> list[int]:
        got: list[int] = []
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(0.2):
                async for item in runtime.astream(producer, 2):
                    got.append(item)
        return got

    assert trio_host(consume) == [0, 1]
    assert producer.closed.wait(5) and producer.close_count == 1


def test_the_producers_error_reaches_async_consumers_after_its_items(runtime: PythonRuntime) -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise KeyError("gone")

    async def consume() -> tuple[list[int], BaseException]:
        got: list[int] = []
        try:
            async for item in runtime.astream(failing):
                got.append(item)
        except KeyError as exc:
            return got, exc
        raise AssertionError("no error")

    for host in (asyncio_host, trio_host):
        got, error = host(consume)
        assert got == [1] and isinstance(error, KeyError)
        assert "failing" in [frame.name for frame in traceback.extract_tb(error.__traceback__)]


def test_runtime_death_mid_stream_delivers_what_was_made_then_fails(core: Any) -> None:
    from conftest import make_config

    from agybridge import RuntimeDiedError

    rt = PythonRuntime(make_config(), core=core).start()
    producer = Stalling()
    got: list[int] = []

    def die() -> None:
        raise SystemExit("injected fault")  # asyncio lets SystemExit escape run_forever

    with pytest.raises(RuntimeDiedError, match="injected fault"):
        for item in rt.stream(producer, 5).with_options(buffer=8, item_timeout=20):
            got.append(item)
            if item == 4:
                assert producer.stalled.wait(5)
                rt.loop.call_soon_threadsafe(die)
    assert got == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeDiedError):
        list(rt.stream(Producer(), 3))
    rt.shutdown()


def test_a_finally_block_that_awaits_runs_to_its_end(runtime: PythonRuntime) -> None:
    """The producer is closed by the consumer's leaving, never cut short by it (many races)."""
    finished: list[int] = []
    started: list[int] = []

    async def cleanup_awaits(i: int) -> AsyncIterator[int]:
        started.append(i)
        try:
            n = 0
            while True:
                await asyncio.sleep(0)
                yield n
                n += 1
        finally:
            await asyncio.sleep(0)
            await asyncio.sleep(0.001)
            finished.append(i)

    for i in range(200):
        for item in runtime.stream(cleanup_awaits, i).with_options(buffer=1 + i % 3):
            if item == i % 5:
                break
    # Every stream's producer has been closed, or is being closed: wait for the last ones.
    deadline = time.monotonic() + 10
    while len(finished) < len(started) and time.monotonic() < deadline:
        runtime.run(asyncio.sleep, 0.01)
    assert sorted(finished) == sorted(started) == list(range(200))


def test_leaving_a_chat_stream_early_cancels_the_chat(runtime: PythonRuntime) -> None:
    """No after_chat with a partial reply, no on_error: the chat ends as cancelled."""
    events: list[str] = []
    state = AgentBridgeState(
        hooks={event: [lambda a, e, ctx: events.append(e)] for event in ("before_chat", "after_chat", "on_error")}
    )
    agents: list[StreamingAgent] = []

    def factory() -> StreamingAgent:
        agents.append(StreamingAgent())
        return agents[-1]

    runtime.register_agent("s", factory, state)
    for chunk in runtime.chat_stream("s", " ".join(["word"] * 1000), buffer=2):
        assert chunk == "word "
        break
    assert agents[0].closed.wait(5)
    assert runtime.chat("s", "still here") == "still here "  # a later chat runs its hooks in full
    assert events == ["before_chat", "before_chat", "after_chat"]
