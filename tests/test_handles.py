"""runtime.agent(id): call any async method of an agent, blocking or through .aio."""

from __future__ import annotations

import asyncio
import threading
from types import ModuleType

import pytest
from conftest import (
    asyncio_host,
    call_in_thread,
    cancel_once_started,
    ctrl_c_once,
    make_config,
    settled,
    trio_cancel_once_started,
    trio_host,
)

from agybridge import (
    AgentHandle,
    AgentMethod,
    CommandCancelledError,
    OperationTimeoutError,
    PythonRuntime,
    RuntimeShutdownError,
    UnknownAgentError,
)


class Summarizer:
    """An agent with more than chat: methods a caller wants to reach from sync code."""

    def __init__(self, name: str = "s") -> None:
        self.name = name
        self.notes: list[str] = []
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.closed = False

    async def chat(self, message: str) -> str:
        return f"{self.name}: {message}"

    async def summarize(self, text: str, words: int = 2) -> str:
        await asyncio.sleep(0)
        return " ".join(text.split()[:words])

    async def remember(self, note: str) -> int:
        self.notes.append(note)
        return len(self.notes)

    async def where(self) -> str:
        return threading.current_thread().name

    async def stall(self) -> None:
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    def sync_method(self) -> int:
        return 1

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def agent(runtime: PythonRuntime) -> Summarizer:
    made: list[Summarizer] = []
    runtime.register_agent("s1", lambda: made.append(Summarizer()) or made[-1])
    return made[0]


def test_blocking_face_calls_any_async_method(runtime: PythonRuntime, agent: Summarizer) -> None:
    handle = runtime.agent("s1", Summarizer)
    assert isinstance(handle, AgentHandle) and handle.agent_id == "s1"
    assert handle.chat("hi") == "s: hi"
    assert handle.summarize("one two three", words=1) == "one"
    assert handle.call(Summarizer.summarize, "a b c") == "a b"
    assert handle.call("remember", "x") == 1 and handle.remember("y") == 2
    assert agent.notes == ["x", "y"]
    assert handle.where() == runtime.config.thread_name
    assert repr(handle) == "<AgentHandle 's1' Summarizer>"


def test_aio_face_from_asyncio_and_trio(runtime: PythonRuntime, agent: Summarizer) -> None:
    handle = runtime.agent("s1", Summarizer)

    async def host() -> tuple[str, str, str, str]:
        aio = handle.aio
        return (
            await aio.chat("hi"),
            await aio.summarize("a b c", words=3),
            await aio.call(Summarizer.summarize, "d e f"),
            await aio.where(),
        )

    expected = ("s: hi", "a b c", "d e", runtime.config.thread_name)
    assert asyncio_host(host) == expected
    assert trio_host(host) == expected


def test_a_method_reached_by_name_carries_aio_as_a_wrapped_function_does(
    runtime: PythonRuntime, agent: Summarizer
) -> None:
    handle = runtime.agent("s1", Summarizer)
    method = handle.summarize
    assert isinstance(method, AgentMethod)
    assert repr(method) == "<AgentMethod 'summarize' of <AgentHandle 's1' Summarizer>>"
    assert method("a b c", words=1) == "a"

    async def host() -> tuple[str, int, str]:
        return (
            await handle.summarize.aio("a b c", words=3),
            await handle.remember.aio("x"),
            await handle.where.aio(),
        )

    assert asyncio_host(host) == ("a b c", 1, runtime.config.thread_name)
    assert trio_host(host) == ("a b c", 2, runtime.config.thread_name)
    assert agent.notes == ["x", "x"]

    async def missing() -> None:
        await handle.missing.aio()

    with pytest.raises(AttributeError, match=r"'s1'.*'missing'"):
        asyncio_host(missing)


def test_errors_name_the_agent_and_the_method(runtime: PythonRuntime, agent: Summarizer) -> None:
    with pytest.raises(UnknownAgentError, match="nobody"):
        runtime.agent("nobody").summarize("x")
    handle = runtime.agent("s1")
    with pytest.raises(AttributeError, match=r"'s1'.*'missing'"):
        handle.missing()
    with pytest.raises(TypeError, match=r"sync_method is not a coroutine function"):
        handle.sync_method()
    with pytest.raises(AttributeError, match="private"):
        handle.call("_secret")
    with pytest.raises(AttributeError):
        handle._secret  # noqa: B018 - private names are never forwarded
    with pytest.raises(TypeError, match="not the str"):
        runtime.agent("s1", str).call("upper")
    with pytest.raises(TypeError, match="must be a class"):
        runtime.agent("s1", 42)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="non-empty"):
        runtime.agent("")
    assert runtime.agent("s1").summarize("still fine") == "still fine"


def test_call_timeout_cancels_the_method(runtime: PythonRuntime, agent: Summarizer) -> None:
    handle = runtime.agent("s1", Summarizer, timeout=0.2)
    with pytest.raises(OperationTimeoutError, match=r"CallAgent\(agent='s1', method='stall'\).*0\.2 s"):
        handle.stall()
    assert agent.cancelled.wait(10)
    assert settled(runtime).timed_out == 1


def test_cancelled_aio_call_cancels_the_method(runtime: PythonRuntime, agent: Summarizer) -> None:
    handle = runtime.agent("s1", Summarizer)

    async def host() -> bool:
        return await cancel_once_started(handle.aio.stall(), agent.started)

    assert asyncio_host(host) is True
    assert agent.cancelled.wait(10)

    agent.started.clear()
    agent.cancelled.clear()

    async def trio_host_fn() -> bool:
        return await trio_cancel_once_started(agent.started, handle.aio.stall)

    assert trio_host(trio_host_fn) is True
    assert agent.cancelled.wait(10)

    # A method reached by name, awaited through its own .aio, is cancelled the same way.
    agent.started.clear()
    agent.cancelled.clear()

    async def method_aio() -> bool:
        return await cancel_once_started(handle.stall.aio(), agent.started)

    assert asyncio_host(method_aio) is True
    assert agent.cancelled.wait(10)
    assert settled(runtime).cancelled == 3


def test_ctrl_c_interrupts_a_handle_call_and_cancels_it(runtime: PythonRuntime, agent: Summarizer) -> None:
    ctrl_c_once(agent.started)
    with pytest.raises(KeyboardInterrupt):
        runtime.agent("s1").stall()
    assert agent.cancelled.wait(10)


def test_unregister_fails_in_flight_calls_and_replace_reaches_the_new_agent(
    runtime: PythonRuntime, agent: Summarizer
) -> None:
    handle = runtime.agent("s1", Summarizer)
    waiter, errors = call_in_thread(handle.stall)
    assert agent.started.wait(10)
    runtime.register_agent("s1", lambda: Summarizer("second"), replace=True)
    waiter.join(10)
    assert errors and isinstance(errors[0], CommandCancelledError) and "replaced" in str(errors[0])
    assert agent.cancelled.wait(10) and agent.closed
    assert handle.chat("hi") == "second: hi"  # a handle is a name: it reaches the new agent
    runtime.unregister_agent("s1")
    with pytest.raises(UnknownAgentError):
        handle.summarize("gone")


def test_shutdown_fails_in_flight_and_later_handle_calls(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(shutdown_grace=0.1), core=core).start()
    made: list[Summarizer] = []
    rt.register_agent("s1", lambda: made.append(Summarizer()) or made[-1])
    handle = rt.agent("s1", Summarizer)
    waiter, errors = call_in_thread(handle.stall)
    assert made[0].started.wait(10)
    rt.shutdown(timeout=10)
    waiter.join(10)
    assert errors and isinstance(errors[0], RuntimeShutdownError)
    assert made[0].cancelled.is_set() and made[0].closed
    with pytest.raises(RuntimeShutdownError):
        handle.summarize("late")
