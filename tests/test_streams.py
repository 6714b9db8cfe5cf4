"""Streams: async generators on the runtime loop, consumed from threads, asyncio and trio."""

from __future__ import annotations

import asyncio
import gc
import threading
import traceback
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import asyncio_host, trio_host

from agybridge import (
    AgentBridgeState,
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
