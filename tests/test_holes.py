"""Issue 26: the holes of the second adversarial round, one test (or more) for each.

Thread-sensitive tools under Ctrl-C and in streams, trio's cancelled-scope rule for every
awaited call, broken streams, future callbacks, handles on sync methods, sniffio, task-group
errors in held contexts, teardown that waits for the remote clean-up, shutdown that runs what
it accepted, wrapper metadata, and the second list (timeouts, buffers, back-pressure, held
contexts, several readers, deadlocks, coroutine ``chat_stream``, nested chats and the worker
pool, agent-to-agent ``achat``). Every test runs on both cores (the ``runtime`` or ``core``
fixture) and is bounded in time; none synchronises with a bare sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import pytest
import sniffio
import trio
from conftest import asyncio_host, make_config, settled, trio_host

from agybridge import (
    AgentBridgeState,
    CallerGoneError,
    CommandCancelledError,
    ConfigError,
    DeadlockError,
    OperationTimeoutError,
    PythonRuntime,
    Run,
    StreamTimeoutError,
    Tool,
    dispatch_tool,
)

pytestmark = pytest.mark.timeout(60)

MARKER: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


def _main_thread_only() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")  # pragma: no cover - pytest runs tests there


class ToolLoopAgent:
    """Calls tool *tool* *calls* times, swallowing every tool error as an LLM agent does."""

    def __init__(self, agent_id: str, tool: str = "query", calls: int = 1) -> None:
        self.agent_id = agent_id
        self.tool = tool
        self.calls = calls
        self.swallowed: list[BaseException] = []
        self.results: list[Any] = []
        self.cancelled = threading.Event()
        self.completed = threading.Event()

    async def chat(self, message: str) -> str:
        mine = []
        try:
            for _ in range(self.calls):
                try:
                    mine.append(await dispatch_tool(self.agent_id, self.tool))
                except Exception as exc:  # an agent that handles tool errors carries on
                    self.swallowed.append(exc)
                self.results.append(mine[-1] if mine else None)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        self.completed.set()
        return " ".join(str(r) for r in mine)


class StreamingToolAgent:
    """Streams one chunk per tool call: the tool's result."""

    def __init__(self, agent_id: str, calls: int = 3, gate: threading.Event | None = None) -> None:
        self.agent_id = agent_id
        self.calls = calls
        self.gate = gate  # if given: the calls after the first wait until it is set
        self.errors: list[BaseException] = []

    async def chat_stream(self, message: str) -> AsyncIterator[str]:
        for i in range(self.calls):
            while i and self.gate is not None and not self.gate.is_set():
                await asyncio.sleep(0.001)
            try:
                value = await dispatch_tool(self.agent_id, "where")
            except Exception as exc:
                self.errors.append(exc)
                raise
            yield f"{value};"


def _where_state(runs: list[int] | None = None) -> AgentBridgeState:
    def where() -> int:
        if runs is not None:
            runs.append(threading.get_ident())
        return threading.get_ident()

    return AgentBridgeState(tools=[Tool.from_function(where, name="where", thread_sensitive=True)])


# ------------------------------------------------------------------------------------------
# 1. Ctrl-C while the caller's thread runs a thread-sensitive tool
# ------------------------------------------------------------------------------------------


def test_ctrl_c_in_a_thread_sensitive_tool_interrupts_the_chat_and_cancels_it(runtime: PythonRuntime) -> None:
    _main_thread_only()

    def slow_query() -> str:
        time.sleep(0.03)  # a slow query on the caller's own connection
        return "row"

    state = AgentBridgeState(tools=[Tool.from_function(slow_query, name="query", thread_sensitive=True)])
    agent = ToolLoopAgent("db", calls=40)
    runtime.register_agent("db", lambda: agent, state)
    for offset in range(12):
        agent.cancelled.clear()
        agent.completed.clear()
        agent.swallowed.clear()
        agent.results.clear()
        fired = threading.Event()
        sent_at: list[float] = []

        def interrupt(delay: float = 0.011 + offset * 0.017) -> None:
            if not fired.wait(delay):
                sent_at.append(time.monotonic())
                os.kill(os.getpid(), signal.SIGINT)

        killer = threading.Thread(target=interrupt)
        killer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                runtime.chat("db", "go", timeout=20)
            caught_at = time.monotonic()
        finally:
            fired.set()
            killer.join(10)
        assert sent_at and caught_at - sent_at[0] < 1.0, "Ctrl-C was not raised at once"
        assert agent.cancelled.wait(5), f"round {offset}: the chat was not cancelled on the loop"
        assert not agent.completed.is_set()
        # The agent never got a ToolError (or anything) it could swallow and carry on with.
        assert agent.swallowed == [], agent.swallowed
    assert runtime.chat("db", "go").count("row") == 40  # the runtime and the tool still work
    metrics = settled(runtime)
    assert metrics.in_flight == 0 and metrics.cancelled >= 12


def test_sys_exit_in_a_thread_sensitive_tool_leaves_the_caller_as_sys_exit(runtime: PythonRuntime) -> None:
    def leave() -> None:
        raise SystemExit(3)

    state = AgentBridgeState(tools=[Tool.from_function(leave, name="query", thread_sensitive=True)])
    agent = ToolLoopAgent("exiting", calls=1)
    runtime.register_agent("exiting", lambda: agent, state)
    with pytest.raises(SystemExit):
        runtime.chat("exiting", "go")
    assert agent.cancelled.wait(5) and agent.swallowed == []


def test_ctrl_c_in_a_thread_sensitive_tool_of_a_stream_closes_it_and_cancels_the_chat(runtime: PythonRuntime) -> None:
    _main_thread_only()
    in_tool = threading.Event()
    cancelled = threading.Event()

    def where() -> int:
        in_tool.set()
        # A slow query, in steps: the kernel may deliver SIGINT to another thread, and then
        # Python raises it in the main thread at its next bytecode, not inside one long sleep.
        for _ in range(100):
            time.sleep(0.05)
        return 0  # pragma: no cover

    class Streamer:
        async def chat_stream(self, message: str) -> AsyncIterator[str]:
            try:
                yield str(await dispatch_tool("ts-stream", "where"))
            except asyncio.CancelledError:
                cancelled.set()
                raise

    state = AgentBridgeState(tools=[Tool.from_function(where, name="where", thread_sensitive=True)])
    runtime.register_agent("ts-stream", Streamer, state)

    def interrupt() -> None:
        if in_tool.wait(10):
            os.kill(os.getpid(), signal.SIGINT)

    killer = threading.Thread(target=interrupt)
    killer.start()
    started = time.monotonic()
    chunks = runtime.chat_stream("ts-stream", "go")
    try:
        with pytest.raises(KeyboardInterrupt):
            next(chunks)
    finally:
        killer.join(10)
    assert time.monotonic() - started < 4.0
    assert cancelled.wait(5), "the streamed chat was not cancelled on the loop"
    with pytest.raises(CommandCancelledError, match="cancelled at item 1"):
        next(chunks)
    assert settled(runtime).in_flight == 0


# ------------------------------------------------------------------------------------------
# 2. Streams serve thread-sensitive tools
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("buffer", [1, 64])
def test_chat_stream_serves_thread_sensitive_tools_on_the_consuming_thread(runtime: PythonRuntime, buffer: int) -> None:
    runtime.register_agent("streamer", lambda: StreamingToolAgent("streamer"), _where_state())
    me = threading.get_ident()
    chunks = list(runtime.chat_stream("streamer", "go", buffer=buffer))
    assert chunks == [f"{me};"] * 3

    def from_a_thread() -> list[str]:
        return list(runtime.chat_stream("streamer", "go", buffer=buffer))

    seen: list[Any] = []
    worker = threading.Thread(target=lambda: seen.append((threading.get_ident(), from_a_thread())))
    worker.start()
    worker.join(20)
    ident, got = seen[0]
    assert got == [f"{ident};"] * 3
    # A plain stream() serves them too.

    async def produce() -> AsyncIterator[int]:
        for _ in range(2):
            yield await dispatch_tool("streamer", "where")

    assert list(runtime.stream(produce)) == [me, me]


def test_achat_stream_serves_thread_sensitive_tools_on_the_consumers_loop(runtime: PythonRuntime) -> None:
    runtime.register_agent("streamer", lambda: StreamingToolAgent("streamer"), _where_state())

    async def consume() -> tuple[int, list[str]]:
        return threading.get_ident(), [chunk async for chunk in runtime.achat_stream("streamer", "go", buffer=1)]

    for host in (asyncio_host, trio_host):
        ident, chunks = host(consume)
        assert chunks == [f"{ident};"] * 3


def _wait_for_tool_calls(runtime: PythonRuntime, agent_id: str, n: int) -> None:
    """Until agent *agent_id* has started *n* tool calls and the loop has posted the last one."""
    state = runtime.bridge_state.get(agent_id)
    deadline = time.monotonic() + 10
    while state.stats.tool_calls < n and time.monotonic() < deadline:
        threading.Event().wait(0.005)
    assert state.stats.tool_calls >= n
    for _ in range(2):
        runtime.run(asyncio.sleep, 0)  # loop iterations after the call started: it is posted


def test_a_busy_stream_consumer_serves_the_tool_call_when_it_next_asks(runtime: PythonRuntime) -> None:
    gate = threading.Event()
    runtime.register_agent("streamer", lambda: StreamingToolAgent("streamer", gate=gate), _where_state())
    me = threading.get_ident()
    got = []
    for chunk in runtime.chat_stream("streamer", "go", buffer=2):
        got.append(chunk)
        if len(got) == 1:
            # Busy with the item while the agent's next tool call is posted to this thread.
            gate.set()
            _wait_for_tool_calls(runtime, "streamer", 2)
    assert got == [f"{me};"] * 3


def test_a_stream_consumer_that_leaves_fails_pending_tool_calls_with_caller_gone(runtime: PythonRuntime) -> None:
    runs: list[int] = []
    gate = threading.Event()
    agent = StreamingToolAgent("leaver", gate=gate)
    runtime.register_agent("leaver", lambda: agent, _where_state(runs))
    with runtime.chat_stream("leaver", "go", buffer=2) as chunks:
        first = next(chunks)
        gate.set()
        _wait_for_tool_calls(runtime, "leaver", 2)  # the second call waits for this consumer
    assert first == f"{threading.get_ident()};"
    assert runs == [threading.get_ident()], "a pending call ran after its consumer left, or elsewhere"
    assert all(isinstance(error, CallerGoneError) for error in agent.errors), agent.errors
    assert settled(runtime).in_flight == 0


# ------------------------------------------------------------------------------------------
# 3. trio's cancelled-scope rule, for every awaited call
# ------------------------------------------------------------------------------------------


class _Cm:
    async def __aenter__(self) -> _Cm:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class Echo:
    async def chat(self, message: str) -> str:
        return message

    async def ping(self) -> str:
        return "pong"

    async def chat_stream(self, message: str) -> AsyncIterator[str]:
        yield message


async def _ran() -> str:
    return "ran"


async def _gen() -> AsyncIterator[int]:
    yield 1


CALLS: dict[str, Any] = {
    "achat": lambda rt: rt.achat("echo", "hi"),
    "arun": lambda rt: rt.arun(_ran),
    "wrap.aio": lambda rt: rt.wrap(_ran).aio(),
    "handle.aio": lambda rt: rt.agent("echo").aio.ping(),
    "aenter": lambda rt: rt.aenter(_Cm()).__aenter__(),
    "astream": lambda rt: rt.astream(_gen).__anext__(),
    "achat_stream": lambda rt: rt.achat_stream("echo", "hi").__anext__(),
    "asend_command": lambda rt: rt.asend_command(Run(_ran)),
    "aregister_agent": lambda rt: rt.aregister_agent("other", Echo),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_awaited_call_in_a_cancelled_trio_scope_never_submits(runtime: PythonRuntime, call: str) -> None:
    runtime.register_agent("echo", Echo)
    before = runtime.metrics().submitted

    async def host() -> bool:
        with trio.CancelScope() as scope:
            scope.cancel()
            for _ in range(20):
                with pytest.raises(trio.Cancelled):
                    await CALLS[call](runtime)
        return True

    assert trio_host(host)
    assert runtime.metrics().submitted == before, f"{call} submitted in a cancelled scope"


# ------------------------------------------------------------------------------------------
# 4. A broken stream stays broken
# ------------------------------------------------------------------------------------------


async def _stalls_after(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i
    await asyncio.sleep(60)
    yield n  # pragma: no cover


def test_a_stream_broken_by_an_item_timeout_stays_broken(runtime: PythonRuntime) -> None:
    items = iter(runtime.stream(_stalls_after, 2).with_options(item_timeout=0.1))
    assert [next(items), next(items)] == [0, 1]
    with pytest.raises(StreamTimeoutError):
        next(items)
    for _ in range(2):
        with pytest.raises(StreamTimeoutError, match="timed out at item 3"):
            next(items)  # never a clean end a retrying consumer would take for the whole stream


def test_a_stream_broken_by_a_cancelled_read_stays_broken_under_asyncio_and_trio(runtime: PythonRuntime) -> None:
    async def on_asyncio() -> None:
        items = runtime.astream(_stalls_after, 1)
        assert await items.__anext__() == 0
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(items.__anext__(), 0.05)
        with pytest.raises(CommandCancelledError, match="cancelled at item 2"):
            await items.__anext__()

    async def on_trio() -> None:
        items = runtime.astream(_stalls_after, 1)
        assert await items.__anext__() == 0
        with trio.move_on_after(0.05):
            await items.__anext__()
        with pytest.raises(CommandCancelledError, match="cancelled at item 2"):
            await items.__anext__()

    asyncio_host(on_asyncio)
    trio_host(on_trio)


def test_a_stream_closed_on_purpose_ends_cleanly(runtime: PythonRuntime) -> None:
    items = runtime.stream(_stalls_after, 3)
    assert next(items) == 0
    items.close()
    assert list(items) == []


# ------------------------------------------------------------------------------------------
# 5. Future callbacks never run on the runtime loop
# ------------------------------------------------------------------------------------------


def test_future_callbacks_never_run_on_the_runtime_loop(runtime: PythonRuntime, caplog: Any) -> None:
    caplog.set_level(logging.ERROR, logger="concurrent.futures")
    gate = threading.Event()
    release = threading.Event()
    threads: list[str] = []
    done = threading.Event()

    async def gated() -> str:
        while not gate.is_set():
            await asyncio.sleep(0.002)
        return "x"

    def slow(_future: Any) -> None:
        threads.append(threading.current_thread().name)
        release.wait(20)

    def raising(_future: Any) -> None:
        raise ValueError("callback failed")

    def last(_future: Any) -> None:
        threads.append(threading.current_thread().name)
        done.set()

    future = runtime.submit(gated)
    for callback in (slow, raising, last):
        future.add_done_callback(callback)
    gate.set()
    assert future.result(10) == "x"
    try:
        # While the slow callback runs, every agent and command carries on.
        for _ in range(5):
            assert runtime.run(asyncio.sleep, 0, 1, timeout=2) == 1
    finally:
        release.set()
    assert done.wait(10)
    assert threads == ["agy-bridge-future-callbacks"] * 2
    assert "exception calling callback" in caplog.text and "callback failed" in caplog.text
    # Added to a future already done: at once, on the adding thread.
    here: list[str] = []
    future.add_done_callback(lambda _f: here.append(threading.current_thread().name))
    assert here == [threading.current_thread().name]


# ------------------------------------------------------------------------------------------
# 6. Handle calls to sync methods, 11. run() of sync callables: refused before they run
# ------------------------------------------------------------------------------------------


class WithSyncMethod:
    def __init__(self) -> None:
        self.sync_calls = 0

    async def chat(self, message: str) -> str:
        return message

    def tally(self) -> int:
        self.sync_calls += 1
        return self.sync_calls


def test_handle_call_to_a_sync_method_is_refused_before_it_runs(runtime: PythonRuntime) -> None:
    agent = WithSyncMethod()
    runtime.register_agent("s", lambda: agent)
    with pytest.raises(TypeError, match=r"WithSyncMethod\.tally is not a coroutine function"):
        runtime.agent("s").tally()

    async def aio() -> None:
        with pytest.raises(TypeError, match="tally"):
            await runtime.agent("s").aio.tally()

    asyncio_host(aio)
    assert agent.sync_calls == 0


def test_run_and_wrap_of_a_plain_function_are_refused_before_it_runs(runtime: PythonRuntime) -> None:
    calls: list[int] = []

    def side_effect() -> int:
        calls.append(1)
        return 1

    before = runtime.metrics().submitted
    with pytest.raises(TypeError, match="side_effect is a plain function"):
        runtime.run(side_effect)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="plain function"):
        runtime.wrap(side_effect)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="plain function"):
        runtime.submit(side_effect)  # type: ignore[arg-type]
    assert calls == [] and runtime.metrics().submitted == before
    # Callables that do return awaitables still run: partials and async __call__ objects.
    assert runtime.run(functools.partial(asyncio.sleep, 0, "p")) == "p"


# ------------------------------------------------------------------------------------------
# 7. sniffio: the runtime loop always looks like asyncio
# ------------------------------------------------------------------------------------------


def test_code_on_the_runtime_loop_sees_asyncio_whatever_the_caller_runs(runtime: PythonRuntime) -> None:
    import anyio

    async def ask() -> tuple[str, str]:
        return sniffio.current_async_library(), MARKER.get()

    async def under_anyio_trio() -> tuple[tuple[str, str], None]:
        MARKER.set("crossed")
        asked = await runtime.arun(ask)
        await runtime.arun(anyio.sleep, 0)  # anyio on the runtime loop picks asyncio, not trio
        return asked, None

    asked, _ = anyio.run(under_anyio_trio, backend="trio")
    assert asked == ("asyncio", "crossed")
    token = sniffio.current_async_library_cvar.set("trio")
    try:
        MARKER.set("still crossed")
        assert runtime.run(ask) == ("asyncio", "still crossed")
    finally:
        sniffio.current_async_library_cvar.reset(token)


# ------------------------------------------------------------------------------------------
# 8. Task-group errors in held contexts keep their type
# ------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _failing_child_group() -> AsyncIterator[None]:
    async def child() -> None:
        raise ZeroDivisionError("child")

    async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined,unused-ignore]
        group.create_task(child())
        yield


@contextlib.asynccontextmanager
async def _failing_child_anyio_group() -> AsyncIterator[None]:
    import anyio

    async def child() -> None:
        raise ZeroDivisionError("child")

    async with anyio.create_task_group() as group:
        group.start_soon(child)
        yield


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup and ExceptionGroup are 3.11+")
@pytest.mark.parametrize("group", ["asyncio", "anyio"])
def test_a_task_group_childs_error_reaches_the_with_as_an_exception_group(runtime: PythonRuntime, group: str) -> None:
    make = _failing_child_group if group == "asyncio" else _failing_child_anyio_group
    for _ in range(40):  # both sides of the race: the child fails before or after the exit
        with pytest.raises(BaseExceptionGroup) as info:  # noqa: F821 - 3.11+
            with runtime.enter(make()):
                pass
        assert info.group_contains(ZeroDivisionError)  # type: ignore[attr-defined]

    async def aio() -> int:
        for _ in range(40):
            with pytest.raises(BaseExceptionGroup) as info:  # noqa: F821 - 3.11+
                async with runtime.aenter(make()):
                    pass
            assert info.group_contains(ZeroDivisionError)  # type: ignore[attr-defined]
        return 40

    assert asyncio_host(aio) == 40
    assert trio_host(aio) == 40
    assert settled(runtime).in_flight == 0


# ------------------------------------------------------------------------------------------
# 9. Teardown returns after the remote clean-up
# ------------------------------------------------------------------------------------------


class Cleanup:
    """A remote coroutine and a producer whose clean-up takes a moment and records that it ran."""

    def __init__(self, takes: float = 0.05) -> None:
        self.takes = takes
        self.started = threading.Event()
        self.cleaned = threading.Event()

    async def work(self) -> None:
        self.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(self.takes)  # an await inside the clean-up
            raise
        finally:
            self.cleaned.set()

    async def produce(self) -> AsyncIterator[int]:
        try:
            for i in range(1000):
                yield i
        finally:
            await asyncio.sleep(self.takes)
            self.cleaned.set()


def test_a_cancelled_aio_await_returns_after_the_remote_cleanup(runtime: PythonRuntime) -> None:
    async def on_asyncio() -> list[bool]:
        seen = []
        for make in (lambda c: runtime.arun(c.work), lambda c: runtime.wrap(c.work).aio()):
            cleanup = Cleanup()
            task = asyncio.ensure_future(make(cleanup))
            while not cleanup.started.is_set():
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            seen.append(cleanup.cleaned.is_set())
        return seen

    async def on_trio() -> list[bool]:
        cleanup = Cleanup()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runtime.arun, cleanup.work)
            while not cleanup.started.is_set():
                await trio.sleep(0.001)
            nursery.cancel_scope.cancel()
        return [cleanup.cleaned.is_set()]

    assert asyncio_host(on_asyncio) == [True, True]
    assert trio_host(on_trio) == [True]


def test_leaving_a_stream_returns_after_the_producers_cleanup(runtime: PythonRuntime) -> None:
    for leave in ("close", "with", "break"):
        cleanup = Cleanup()
        if leave == "close":
            items = runtime.stream(cleanup.produce)
            next(items)
            items.close()
        elif leave == "with":
            with runtime.stream(cleanup.produce) as items:
                next(items)
        else:
            with runtime.stream(cleanup.produce) as items:
                for _item in items:
                    break
        assert cleanup.cleaned.is_set(), leave

    async def aio() -> list[bool]:
        seen = []
        cleanup = Cleanup()
        items = runtime.astream(cleanup.produce)
        await items.__anext__()
        await items.aclose()
        seen.append(cleanup.cleaned.is_set())
        cleanup = Cleanup()
        async with runtime.astream(cleanup.produce) as items:
            async for _item in items:
                break
        seen.append(cleanup.cleaned.is_set())
        return seen

    assert asyncio_host(aio) == [True, True]
    assert trio_host(aio) == [True, True]


def test_a_cleanup_that_outlasts_the_operation_timeout_is_reported_not_waited_for(
    core: ModuleType, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="agybridge")
    rt = PythonRuntime(make_config(operation_timeout=0.2, shutdown_grace=0.1), core=core).start()
    try:
        cleanup = Cleanup(takes=2.0)
        items = rt.stream(cleanup.produce)
        next(items)
        started = time.monotonic()
        items.close()
        assert time.monotonic() - started < 1.5
        assert not cleanup.cleaned.is_set()
        assert "did not finish within the 0.2 s" in caplog.text
    finally:
        rt.shutdown(timeout=10)


# ------------------------------------------------------------------------------------------
# 10. Commands accepted before a shutdown run within its grace
# ------------------------------------------------------------------------------------------


def test_commands_accepted_before_a_shutdown_run_within_its_grace(core: ModuleType) -> None:
    for _ in range(20):
        with PythonRuntime(make_config(shutdown_grace=5.0), core=core) as rt:
            futures = [rt.submit(asyncio.sleep, 0, i) for i in range(5)]
        assert [f.result(10) for f in futures] == list(range(5))
    rt = PythonRuntime(make_config(shutdown_grace=0.1), core=core).start()
    slow = rt.submit(asyncio.sleep, 30)
    rt.shutdown()
    with pytest.raises(Exception, match="grace"):
        slow.result(10)  # only what outlasts the grace fails


# ------------------------------------------------------------------------------------------
# 11. Wrappers carry their function's metadata
# ------------------------------------------------------------------------------------------


class Service:
    async def fetch(self, key: str) -> str:
        """Fetch *key*."""
        return key


async def summarize(text: str) -> str:
    """Summarize *text*."""
    return text[:3]


def test_wrappers_carry_their_functions_metadata_on_both_faces(runtime: PythonRuntime) -> None:
    wrapped = runtime.wrap(summarize)
    for face in (wrapped, wrapped.aio):
        assert face.__name__ == "summarize"
        assert face.__qualname__ == "summarize"
        assert face.__doc__ == "Summarize *text*."
        assert face.__wrapped__ is summarize
        assert face.__module__ == __name__
    service = Service()
    bound = runtime.wrap(service.fetch)
    assert bound.__self__ is service and bound.aio.__self__ is service
    assert bound.__name__ == "fetch" and bound.aio.__doc__ == "Fetch *key*."
    assert bound("k") == "k"


# ------------------------------------------------------------------------------------------
# The second list
# ------------------------------------------------------------------------------------------


class SlowCallable:
    """An async callable object whose attributes look like a wrapper's own."""

    def __init__(self) -> None:
        self.timeout = 5.0
        self._timeout = 5.0

    async def __call__(self) -> str:
        await asyncio.sleep(5)
        return "late"  # pragma: no cover


def test_a_wrapped_objects_timeout_attribute_never_overrides_the_wrappers(runtime: PythonRuntime) -> None:
    started = time.monotonic()
    with pytest.raises(OperationTimeoutError, match=r"0\.2 s"):
        runtime.wrap(SlowCallable(), timeout=0.2)()
    assert time.monotonic() - started < 2.0


def test_an_absurd_stream_buffer_is_a_config_error_when_given(runtime: PythonRuntime) -> None:
    for buffer in (2**63, 0, -1):
        with pytest.raises(ConfigError, match="buffer"):
            runtime.stream(_gen).with_options(buffer=buffer)
        with pytest.raises(ConfigError, match="buffer"):
            runtime.chat_stream("echo", "hi", buffer=buffer)
    assert list(runtime.stream(_gen).with_options(buffer=sys.maxsize)) == [1]


def test_a_stream_left_early_no_longer_counts_as_in_flight(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(max_in_flight=1), core=core).start()
    try:
        for _ in range(50):
            with rt.stream(_stalls_after, 3) as items:
                assert next(items) == 0
            assert rt.run(asyncio.sleep, 0, "ok") == "ok"
    finally:
        rt.shutdown(timeout=10)


class Suppressing:
    async def __aenter__(self) -> Suppressing:
        return self

    async def __aexit__(self, *exc_info: object) -> bool:
        return True


def test_a_held_contexts_exit_is_never_refused(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(max_in_flight=1), core=core).start()
    try:
        held = rt.enter(_Cm())
        with pytest.raises(RuntimeError, match="exited before it was entered"):
            held.__exit__(None, None, None)
        for _ in range(20):
            with rt.enter(Suppressing()):
                raise ValueError("suppressed by __aexit__")  # and never replaced by RuntimeBusyError
        with pytest.raises(RuntimeError, match="already exited"):
            held = rt.enter(_Cm())
            held.__enter__()
            held.__exit__(None, None, None)
            held.__exit__(None, None, None)

        async def aio() -> None:
            async with rt.aenter(Suppressing()):
                raise ValueError("suppressed")

        asyncio_host(aio)
        trio_host(aio)
    finally:
        rt.shutdown(timeout=10)


def test_aclose_from_another_task_wakes_the_reader_at_once(runtime: PythonRuntime) -> None:
    async def on_asyncio() -> float:
        items = runtime.astream(_stalls_after, 1).with_options(item_timeout=20)
        assert await items.__anext__() == 0
        reader = asyncio.ensure_future(items.__anext__())
        await asyncio.sleep(0.05)  # the reader is parked waiting for an item (not synchronisation)
        started = time.monotonic()
        await items.aclose()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(reader, 5)
        return time.monotonic() - started

    async def on_trio() -> float:
        items = runtime.astream(_stalls_after, 1).with_options(item_timeout=20)
        assert await items.__anext__() == 0
        ended: list[BaseException] = []

        async def read() -> None:
            try:
                await items.__anext__()
            except StopAsyncIteration as exc:
                ended.append(exc)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await trio.sleep(0.05)
                started = time.monotonic()
                await items.aclose()
        assert ended
        return time.monotonic() - started

    assert asyncio_host(on_asyncio) < 2.0
    assert trio_host(on_trio) < 2.0


def test_two_tasks_reading_one_stream_both_get_items(runtime: PythonRuntime) -> None:
    async def numbers() -> AsyncIterator[int]:
        for i in range(200):
            await asyncio.sleep(0)
            yield i

    async def on_asyncio() -> list[int]:
        items = runtime.astream(numbers).with_options(item_timeout=20, buffer=1)
        got: list[int] = []

        async def read() -> None:
            async for item in items:
                got.append(item)

        await asyncio.wait_for(asyncio.gather(read(), read()), 10)
        return sorted(got)

    async def on_trio() -> list[int]:
        items = runtime.astream(numbers).with_options(item_timeout=20, buffer=1)
        got: list[int] = []

        async def read() -> None:
            async for item in items:
                got.append(item)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                nursery.start_soon(read)
        return sorted(got)

    assert asyncio_host(on_asyncio) == list(range(200))
    assert trio_host(on_trio) == list(range(200))


async def _host_tool() -> str:
    return "hosted"


class HostedStreamer:
    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id

    async def chat_stream(self, message: str) -> AsyncIterator[str]:
        yield str(await dispatch_tool(self.agent_id, "_host_tool"))


def test_a_blocking_stream_on_the_loop_its_tools_need_is_a_deadlock_error(runtime: PythonRuntime) -> None:
    async def produce() -> AsyncIterator[str]:
        yield str(await dispatch_tool("hosted", "_host_tool"))

    async def host() -> tuple[float, float]:
        state = AgentBridgeState(tools=[Tool.from_function(_host_tool)])
        await runtime.aregister_agent("hosted", lambda: HostedStreamer("hosted"), state)
        started = time.monotonic()
        with pytest.raises(DeadlockError, match="achat"):
            list(runtime.chat_stream("hosted", "go"))
        chat_took = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(DeadlockError, match="blocked"):
            list(runtime.stream(produce))
        return chat_took, time.monotonic() - started

    for took in asyncio_host(host):
        assert took < 2.0
    assert settled(runtime).in_flight == 0


def test_a_coroutine_chat_stream_is_refused_at_registration(runtime: PythonRuntime) -> None:
    class NotAGenerator:
        async def chat_stream(self, message: str) -> str:
            return message

    with pytest.raises(TypeError, match="'chat_stream' is a coroutine function"):
        runtime.register_agent("coro", NotAGenerator)
    assert "coro" not in runtime.agent_ids()


def test_nested_chats_from_sync_tools_do_not_starve_the_worker_pool(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(worker_threads=4, chat_timeout=20), core=core).start()
    try:

        def lookup() -> str:
            return "leaf"

        def ask_inner() -> str:
            return rt.chat("inner", "go")  # a sync tool blocked in a nested chat

        rt.register_agent(
            "inner", lambda: ToolLoopAgent("inner", "lookup"), AgentBridgeState(tools=[Tool.from_function(lookup)])
        )
        rt.register_agent(
            "outer",
            lambda: ToolLoopAgent("outer", "ask_inner"),
            AgentBridgeState(tools=[Tool.from_function(ask_inner)]),
        )
        rt.register_agent(
            "unrelated",
            lambda: ToolLoopAgent("unrelated", "lookup"),
            AgentBridgeState(tools=[Tool.from_function(lookup)]),
        )
        replies: list[str] = []

        async def many() -> list[str]:
            return list(await asyncio.gather(*(rt.achat("outer", "go") for _ in range(16))))

        worker = threading.Thread(target=lambda: replies.extend(asyncio.run(many())))
        worker.start()
        started = time.monotonic()
        assert rt.chat("unrelated", "go", timeout=10) == "leaf"
        assert time.monotonic() - started < 10
        worker.join(30)
        assert replies == ["leaf"] * 16
    finally:
        rt.shutdown(timeout=10)


def test_a_thread_sensitive_tool_reached_through_an_agents_achat_runs_on_the_callers_thread(
    runtime: PythonRuntime,
) -> None:
    class Delegating:
        async def chat(self, message: str) -> str:
            return await runtime.achat("inner", message)

    runs: list[int] = []
    runtime.register_agent("inner", lambda: ToolLoopAgent("inner", "where"), _where_state(runs))
    runtime.register_agent("outer", Delegating)
    me = threading.get_ident()
    assert runtime.chat("outer", "go") == str(me)
    assert runs == [me], "the tool ran on the runtime loop (or elsewhere), not on the caller's thread"

    async def aio() -> tuple[int, str]:
        return threading.get_ident(), await runtime.achat("outer", "go")

    for host in (asyncio_host, trio_host):
        ident, reply = host(aio)
        assert reply == str(ident)
