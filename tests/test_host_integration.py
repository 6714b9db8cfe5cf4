"""Host integration: context variables in every callback, deadlocks on the host's own loop,
host loops that are gone, trio's cancelled-scope rule, thread-sensitive tools.

Every test runs on both cores (the ``runtime`` fixture) and is bounded in time. Process
exit is tested in ``test_exit.py`` (subprocesses).
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from conftest import asyncio_host, in_thread, remote_probe, trio_cancel_once_started, trio_host
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agybridge import (
    AgentBridgeState,
    CallerGoneError,
    DeadlockError,
    HostLoopError,
    PythonRuntime,
    Tool,
    dispatch_tool,
)
from agybridge.state import AsyncioHost, TrioHost

pytestmark = pytest.mark.timeout(60)

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")

_exporter = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_exporter))
tracer = _provider.get_tracer("agybridge-tests")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _exporter.clear()
    yield _exporter
    _exporter.clear()


class CallingAgent:
    """Calls the tools named in the message (space-separated) inside its own span."""

    def __init__(self, agent_id: str, before: Callable[[], Any] | None = None) -> None:
        self.agent_id = agent_id
        self.before = before
        self.errors: list[BaseException] = []

    async def chat(self, message: str) -> str:
        if self.before is not None:
            await self.before()
        results = []
        with tracer.start_as_current_span("agent.chat"):
            for name in message.split():
                try:
                    results.append(str(await dispatch_tool(self.agent_id, name, {"args": {}})))
                except Exception as exc:
                    self.errors.append(exc)
                    raise
        return " ".join(results)


# ------------------------------------------------------------------------------------------
# 1. Context variables reach every callback, on every host
# ------------------------------------------------------------------------------------------


def _traced_state(seen: dict[str, str]) -> AgentBridgeState:
    def sync_tool() -> str:
        with tracer.start_as_current_span("tool.sync"):
            seen["sync_tool"] = REQUEST_ID.get()
        return "s"

    async def async_tool() -> str:
        await asyncio.sleep(0) if not trio.lowlevel.in_trio_run() else await trio.sleep(0)
        with tracer.start_as_current_span("tool.async"):
            seen["async_tool"] = REQUEST_ID.get()
        return "a"

    def hook(agent_id: str, event: str, context: Any) -> None:
        seen[event] = REQUEST_ID.get()

    def policy(agent_id: str, tool_name: str, context: Any) -> bool:
        seen[f"policy:{tool_name}"] = REQUEST_ID.get()
        return True

    return AgentBridgeState(
        tools=[Tool.from_function(sync_tool), Tool.from_function(async_tool)],
        hooks={event: [hook] for event in ("before_chat", "after_chat", "before_tool", "after_tool")},
        policies=[policy],
    )


def _check_one_trace(spans: InMemorySpanExporter, seen: dict[str, str], value: str) -> None:
    finished: dict[str, ReadableSpan] = {span.name: span for span in spans.get_finished_spans()}
    assert set(finished) == {"caller", "agent.chat", "tool.sync", "tool.async"}
    caller, chat = finished["caller"], finished["agent.chat"]
    assert chat.parent is not None and chat.parent.span_id == caller.context.span_id
    for name in ("tool.sync", "tool.async"):
        parent = finished[name].parent
        assert parent is not None and parent.span_id == chat.context.span_id, name
    assert {span.context.trace_id for span in finished.values()} == {caller.context.trace_id}
    expected = ["sync_tool", "async_tool", "before_chat", "after_chat", "before_tool", "after_tool"]
    expected += ["policy:sync_tool", "policy:async_tool"]
    assert {key: seen.get(key) for key in expected} == dict.fromkeys(expected, value)


def test_context_reaches_every_callback_from_a_thread(runtime: PythonRuntime, spans: InMemorySpanExporter) -> None:
    seen: dict[str, str] = {}
    runtime.register_agent("traced", lambda: CallingAgent("traced"), _traced_state(seen))

    def caller() -> str:
        REQUEST_ID.set("thread-request")
        with tracer.start_as_current_span("caller"):
            return runtime.chat("traced", "sync_tool async_tool")

    assert in_thread(caller) == "s a"
    _check_one_trace(spans, seen, "thread-request")


def test_context_reaches_every_callback_from_an_asyncio_host(
    runtime: PythonRuntime, spans: InMemorySpanExporter
) -> None:
    seen: dict[str, str] = {}

    async def host() -> str:
        await runtime.aregister_agent("traced", lambda: CallingAgent("traced"), _traced_state(seen))
        REQUEST_ID.set("asyncio-request")
        with tracer.start_as_current_span("caller"):
            return await runtime.achat("traced", "sync_tool async_tool")

    assert asyncio_host(host) == "s a"
    _check_one_trace(spans, seen, "asyncio-request")


def test_context_reaches_every_callback_from_a_trio_host(runtime: PythonRuntime, spans: InMemorySpanExporter) -> None:
    seen: dict[str, str] = {}

    async def host() -> str:
        await runtime.aregister_agent("traced", lambda: CallingAgent("traced"), _traced_state(seen))
        REQUEST_ID.set("trio-request")  # the run started with "stale" below
        with tracer.start_as_current_span("caller"):
            return await runtime.achat("traced", "sync_tool async_tool")

    def run() -> str:
        REQUEST_ID.set("stale")
        result: str = trio.run(host)
        return result

    assert in_thread(run) == "s a"
    _check_one_trace(spans, seen, "trio-request")


# ------------------------------------------------------------------------------------------
# 2. A blocking call that only the caller's own loop could finish fails at once
# ------------------------------------------------------------------------------------------


async def _host_tool() -> str:
    return "hosted"


def _host_state() -> AgentBridgeState:
    return AgentBridgeState(tools=[Tool.from_function(_host_tool)])


def _blocking_chat_on_its_host(runtime: PythonRuntime, host_runner: Callable[..., Any]) -> tuple[BaseException, float]:
    """Register an agent from a host (asyncio or trio) whose tools it hosts, then chat with it
    blocking from that host's own thread: the DeadlockError raised, and how long it took."""

    async def host() -> tuple[BaseException, float]:
        await runtime.aregister_agent("hosted", lambda: CallingAgent("hosted"), _host_state())
        started = time.monotonic()
        with pytest.raises(DeadlockError) as info:
            runtime.chat("hosted", "_host_tool")
        return info.value, time.monotonic() - started

    result: tuple[BaseException, float] = host_runner(host)
    return result


def test_blocking_chat_on_the_asyncio_loop_hosting_its_tools_raises_deadlock(runtime: PythonRuntime) -> None:
    error, took = _blocking_chat_on_its_host(runtime, asyncio_host)
    assert took < 1.0
    assert "'hosted'" in str(error) and "asyncio loop" in str(error) and "achat" in str(error)
    assert runtime.metrics().in_flight == 0


def test_blocking_chat_in_the_trio_run_hosting_its_tools_raises_deadlock(runtime: PythonRuntime) -> None:
    error, took = _blocking_chat_on_its_host(runtime, trio_host)
    assert took < 1.0
    assert "'hosted'" in str(error) and "trio run" in str(error) and "achat" in str(error)


def test_blocking_run_that_needs_the_callers_loop_fails_at_once(runtime: PythonRuntime) -> None:
    async def host() -> tuple[BaseException, float]:
        await runtime.aregister_agent("hosted", lambda: CallingAgent("hosted"), _host_state())
        started = time.monotonic()
        with pytest.raises(DeadlockError) as info:
            runtime.run(dispatch_tool, "hosted", "_host_tool")
        return info.value, time.monotonic() - started

    error, took = asyncio_host(host)
    assert took < 1.0
    assert "'_host_tool'" in str(error) and "'hosted'" in str(error) and "arun" in str(error)


def test_blocking_calls_from_a_loop_that_hosts_nothing_they_need_are_allowed(runtime: PythonRuntime) -> None:
    # Jupyter runs cells inside a running loop: a blocking call that cannot deadlock works.
    runtime.register_agent("elsewhere", lambda: CallingAgent("elsewhere"), _host_state())

    async def host() -> tuple[str, int]:
        async def seven() -> int:
            return 7

        return runtime.chat("elsewhere", "_host_tool"), runtime.run(seven)

    assert asyncio_host(host) == ("hosted", 7)
    assert trio_host(host) == ("hosted", 7)


# ------------------------------------------------------------------------------------------
# 3. A host loop that is gone fails its tool calls at once
# ------------------------------------------------------------------------------------------


def test_stopped_asyncio_host_loop_fails_tool_calls_at_once(runtime: PythonRuntime) -> None:
    loop = asyncio.new_event_loop()
    try:
        # run_until_complete leaves the loop stopped but not closed.
        in_thread(
            lambda: loop.run_until_complete(
                runtime.aregister_agent("stopped", lambda: CallingAgent("stopped"), _host_state())
            )
        )
        started = time.monotonic()
        with pytest.raises(HostLoopError, match="not running"):
            runtime.chat("stopped", "_host_tool")
        assert time.monotonic() - started < 1.0
    finally:
        loop.close()
    with pytest.raises(HostLoopError, match="closed"):
        runtime.chat("stopped", "_host_tool")


class _SignallingAsyncioHost(AsyncioHost):
    spawned: threading.Event

    def spawn(self, *args: Any, **kwargs: Any) -> Callable[[], None]:
        cancel = super().spawn(*args, **kwargs)
        self.spawned.set()
        return cancel


class _SignallingTrioHost(TrioHost):
    spawned: threading.Event

    def spawn(self, *args: Any, **kwargs: Any) -> Callable[[], None]:
        cancel = super().spawn(*args, **kwargs)
        self.spawned.set()
        return cancel


async def _slow_tool() -> str:
    await (trio.sleep(30) if trio.lowlevel.in_trio_run() else asyncio.sleep(30))
    return "late"


def _run_host_that_ends_with_a_queued_request(runtime: PythonRuntime, library: str) -> None:
    """The host's run ends while a tool request sits in its queue: the chat fails fast."""
    registered, spawned = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    async def host() -> None:
        if library == "trio":
            sig: Any = _SignallingTrioHost(trio.lowlevel.current_trio_token())
        else:
            sig = _SignallingAsyncioHost(asyncio.get_running_loop())
        object.__setattr__(sig, "spawned", spawned)
        state = AgentBridgeState(tools=[Tool.from_function(_slow_tool)], host=sig)
        await runtime.aregister_agent("ending", lambda: CallingAgent("ending"), state)
        registered.set()
        assert spawned.wait(10)  # block the host thread: the request stays queued
        # return without a checkpoint: the run ends with the request still queued

    def run_host() -> None:
        try:
            if library == "trio":
                trio.run(host)
            else:
                asyncio.run(host())
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run_host)
    thread.start()
    try:
        assert registered.wait(10)
        started = time.monotonic()
        with pytest.raises(HostLoopError):
            runtime.chat("ending", "_slow_tool")
        assert time.monotonic() - started < 2.0
    finally:
        spawned.set()
        thread.join(10)
    assert outcome == [None]  # the host's own run ended cleanly (no TrioInternalError)
    runtime.unregister_agent("ending")


@pytest.mark.parametrize("library", ["asyncio", "trio"])
def test_host_run_ending_with_a_queued_tool_request_fails_fast(runtime: PythonRuntime, library: str) -> None:
    for _ in range(5):
        _run_host_that_ends_with_a_queued_request(runtime, library)


@pytest.mark.parametrize("library", ["asyncio", "trio"])
def test_host_run_ending_while_a_tool_runs_fails_the_call(runtime: PythonRuntime, library: str) -> None:
    tool_started = threading.Event()

    async def waits() -> str:
        tool_started.set()
        return await _slow_tool()

    async def host() -> None:
        state = AgentBridgeState(tools=[Tool.from_function(waits)])
        await runtime.aregister_agent("ending", lambda: CallingAgent("ending"), state)
        registered.set()
        while not tool_started.is_set():
            await (trio.sleep(0.005) if library == "trio" else asyncio.sleep(0.005))

    registered = threading.Event()
    thread = threading.Thread(target=lambda: trio.run(host) if library == "trio" else asyncio.run(host()))
    thread.start()
    try:
        assert registered.wait(10)
        started = time.monotonic()
        with pytest.raises(HostLoopError):
            runtime.chat("ending", "waits")
        assert time.monotonic() - started < 2.0
    finally:
        thread.join(10)


# ------------------------------------------------------------------------------------------
# 4. trio callers in an already-cancelled scope
# ------------------------------------------------------------------------------------------


def test_trio_await_in_a_cancelled_scope_never_submits(runtime: PythonRuntime) -> None:
    ran = [0]

    async def command() -> int:
        ran[0] += 1
        return 1

    before = runtime.metrics().submitted

    async def main() -> int:
        cancelled = 0
        for _ in range(200):
            with trio.CancelScope() as scope:
                scope.cancel()
                await runtime.arun(command)
            cancelled += scope.cancelled_caught
        return cancelled

    assert trio_host(main) == 200
    assert ran[0] == 0
    assert runtime.metrics().submitted == before


def test_trio_cancel_after_submission_cancels_the_command(runtime: PythonRuntime) -> None:
    command, started, cancelled = remote_probe()

    async def main() -> bool:
        return await trio_cancel_once_started(started, runtime.arun, command)

    assert trio_host(main)
    assert cancelled.wait(10)


# ------------------------------------------------------------------------------------------
# 5. Thread-sensitive sync tools run on the caller's thread
# ------------------------------------------------------------------------------------------


class _ThreadBound:
    """A sqlite connection and a thread-local made by the caller, checked by a tool."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.conn: sqlite3.Connection | None = None

    def open_here(self, marker: str) -> None:
        self.conn = sqlite3.connect(":memory:")  # refuses use from any other thread
        self.conn.execute("create table t (v text)")
        self.conn.execute("insert into t values (?)", (marker,))
        self.local.marker = marker

    def query(self) -> str:
        assert self.conn is not None
        (value,) = self.conn.execute("select v from t").fetchone()
        return f"{value}/{getattr(self.local, 'marker', 'no-local')}/{threading.current_thread().name}"


def _bound_state(bound: _ThreadBound, *, per_tool: bool) -> AgentBridgeState:
    if per_tool:
        return AgentBridgeState(tools=[Tool.from_function(bound.query, thread_sensitive=True)])
    return AgentBridgeState(tools=[Tool.from_function(bound.query)], thread_sensitive=True)


@pytest.mark.parametrize("per_tool", [True, False])
def test_thread_sensitive_tool_runs_on_a_blocked_sync_caller(runtime: PythonRuntime, per_tool: bool) -> None:
    bound = _ThreadBound()
    runtime.register_agent("bound", lambda: CallingAgent("bound"), _bound_state(bound, per_tool=per_tool))

    def caller() -> str:
        threading.current_thread().name = "the-caller"
        bound.open_here("sync")
        return runtime.chat("bound", "query query")

    assert in_thread(caller) == "sync/sync/the-caller sync/sync/the-caller"


def test_thread_bound_resource_fails_in_a_worker_without_the_flag(runtime: PythonRuntime) -> None:
    bound = _ThreadBound()
    runtime.register_agent("unbound", lambda: CallingAgent("unbound"), AgentBridgeState(tools=[bound.query]))
    bound.open_here("main")
    with pytest.raises(sqlite3.ProgrammingError, match="thread"):
        runtime.chat("unbound", "query")


def _chat_from_a_host_with_a_thread_bound_tool(
    runtime: PythonRuntime, host_runner: Callable[..., Any], thread_name: str, label: str
) -> str:
    """Chat, from a host (asyncio or trio) whose thread opened the tool's resource, with an
    agent whose thread-sensitive tool uses it: the tool's reply."""
    bound = _ThreadBound()
    runtime.register_agent("bound", lambda: CallingAgent("bound"), _bound_state(bound, per_tool=True))

    async def host() -> str:
        threading.current_thread().name = thread_name
        bound.open_here(label)
        return await runtime.achat("bound", "query")

    reply: str = host_runner(host)
    return reply


def test_thread_sensitive_tool_runs_on_an_asyncio_callers_loop_thread(runtime: PythonRuntime) -> None:
    reply = _chat_from_a_host_with_a_thread_bound_tool(runtime, asyncio_host, "asyncio-caller", "aio")
    assert reply == "aio/aio/asyncio-caller"


def test_thread_sensitive_tool_runs_on_a_trio_callers_thread(runtime: PythonRuntime) -> None:
    reply = _chat_from_a_host_with_a_thread_bound_tool(runtime, trio_host, "trio-caller", "trio")
    assert reply == "trio/trio/trio-caller"


class DetachedAgent:
    """Makes its tool call from a task that outlives the chat (as agents with background
    work do), once *gate* opens: by then the caller may have stopped waiting."""

    def __init__(self, agent_id: str, gate: threading.Event) -> None:
        self.agent_id = agent_id
        self.gate = gate
        self.started = threading.Event()
        self.finished = threading.Event()
        self.errors: list[BaseException] = []
        self.tasks: set[asyncio.Task[Any]] = set()

    async def chat(self, message: str) -> str:
        loop = asyncio.get_running_loop()

        async def later() -> str:
            try:
                await loop.run_in_executor(None, self.gate.wait, 10)
                return str(await dispatch_tool(self.agent_id, message, {"args": {}}))
            except Exception as exc:
                self.errors.append(exc)  # kept, not raised: nobody awaits this task any more
                return ""
            finally:
                self.finished.set()

        task = loop.create_task(later())  # made in the chat's context: same caller
        self.tasks.add(task)
        self.started.set()
        return await asyncio.shield(task)


def _gone_state(ran: list[str]) -> AgentBridgeState:
    return AgentBridgeState(tools=[Tool.from_function(lambda: ran.append("x"), name="query", thread_sensitive=True)])


def _late_agent(runtime: PythonRuntime) -> tuple[DetachedAgent, list[str]]:
    """Agent "late", whose thread-sensitive tool call comes once its gate opens, and the list
    the tool appends to if it ever runs."""
    ran: list[str] = []
    agent = DetachedAgent("late", threading.Event())
    runtime.register_agent("late", lambda: agent, _gone_state(ran))
    return agent, ran


def _assert_the_late_call_failed_typed(agent: DetachedAgent) -> None:
    """Open the gate now that the caller is gone: its tool call fails with CallerGoneError."""
    agent.gate.set()
    assert agent.finished.wait(10)
    assert [type(e) for e in agent.errors] == [CallerGoneError]


def test_thread_sensitive_tool_of_a_timed_out_sync_caller_fails_typed(runtime: PythonRuntime) -> None:
    agent, ran = _late_agent(runtime)
    with pytest.raises(TimeoutError):
        runtime.chat("late", "query", timeout=0.2)
    _assert_the_late_call_failed_typed(agent)
    assert "stopped waiting" in str(agent.errors[0])
    assert ran == []


def test_thread_sensitive_tool_of_a_cancelled_asyncio_caller_fails_typed(runtime: PythonRuntime) -> None:
    agent, ran = _late_agent(runtime)

    async def host() -> None:
        task = asyncio.ensure_future(runtime.achat("late", "query"))
        await asyncio.get_running_loop().run_in_executor(None, agent.started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio_host(host)
    _assert_the_late_call_failed_typed(agent)
    assert ran == []


def test_thread_sensitive_tool_of_a_cancelled_trio_caller_fails_typed(runtime: PythonRuntime) -> None:
    agent, ran = _late_agent(runtime)

    async def host() -> None:
        await trio_cancel_once_started(agent.started, runtime.achat, "late", "query")

    trio_host(host)
    _assert_the_late_call_failed_typed(agent)
    assert ran == []


def test_thread_sensitive_tool_without_a_chat_caller_fails_typed(runtime: PythonRuntime) -> None:
    state = AgentBridgeState(tools=[Tool.from_function(lambda: "x", name="query", thread_sensitive=True)])
    runtime.register_agent("nocaller", lambda: CallingAgent("nocaller"), state)
    with pytest.raises(CallerGoneError, match="thread-sensitive"):
        runtime.run(dispatch_tool, "nocaller", "query")


# ------------------------------------------------------------------------------------------
# 6. Worker threads (process exit itself is tested in test_exit.py)
# ------------------------------------------------------------------------------------------


def test_sync_callbacks_run_in_daemon_workers_in_the_commands_context(runtime: PythonRuntime) -> None:
    async def where() -> tuple[bool, str, str]:
        loop = asyncio.get_running_loop()
        REQUEST_ID.set("in-command")
        thread = await loop.run_in_executor(None, threading.current_thread)
        seen = await asyncio.to_thread(REQUEST_ID.get)
        return thread.daemon, thread.name, seen

    daemon, name, seen = runtime.run(where)
    assert daemon and name.startswith("agy-bridge-worker")
    assert seen == "in-command"
