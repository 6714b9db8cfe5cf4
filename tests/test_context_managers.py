"""enter()/aenter(): an async context manager held open on the runtime loop, in one task."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType, TracebackType
from typing import Any

import httpx
import pytest
from conftest import asyncio_host, cancel_once_started, ctrl_c_once, in_thread, make_config, settled, trio_host

from agybridge import CommandCancelledError, DeadlockError, OperationTimeoutError, PythonRuntime, RuntimeShutdownError


class Recorder:
    """An async context manager that records where and with what it was entered and exited."""

    def __init__(self, *, suppress: bool = False, enter_delay: float = 0.0, exit_delay: float = 0.0) -> None:
        self.suppress = suppress
        self.enter_delay = enter_delay
        self.exit_delay = exit_delay
        self.entered = threading.Event()
        self.exited = threading.Event()
        self.enter_task: asyncio.Task[Any] | None = None
        self.exit_task: asyncio.Task[Any] | None = None
        self.thread = ""
        self.exit_exc: BaseException | None = None
        self.exit_cancelled = threading.Event()
        self.enter_cancelled = threading.Event()
        self.entering = threading.Event()  # set once __aenter__ runs, in its task

    async def __aenter__(self) -> Recorder:
        self.enter_task = asyncio.current_task()
        self.entering.set()
        self.thread = threading.current_thread().name
        try:
            if self.enter_delay:
                await asyncio.sleep(self.enter_delay)
        except asyncio.CancelledError:
            self.enter_cancelled.set()
            raise
        self.entered.set()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self.exit_task = asyncio.current_task()
        self.exit_exc = exc
        try:
            if self.exit_delay:
                await asyncio.sleep(self.exit_delay)
        except asyncio.CancelledError:
            self.exit_cancelled.set()
            raise
        finally:
            self.exited.set()
        return self.suppress


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A tiny ASGI app: the real httpx.AsyncClient talks to it through httpx.ASGITransport."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": f"hello {scope['path'][1:]}".encode()})


def test_httpx_client_opened_from_threads_used_by_several_runs_and_closed(runtime: PythonRuntime) -> None:
    def make_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")

    with runtime.enter(make_client) as client:
        assert isinstance(client, httpx.AsyncClient) and not client.is_closed

        async def get(name: str) -> str:
            response = await client.get(f"/{name}")
            return response.text

        assert runtime.run(get, "a") == "hello a"
        # Several plain threads share the one client: it lives on the runtime loop.
        replies = [in_thread(lambda i=i: runtime.run(get, f"t{i}")) for i in range(4)]
        assert replies == [f"hello t{i}" for i in range(4)]
        get_sync = runtime.wrap(get)
        assert get_sync("w") == "hello w"
    assert client.is_closed


def test_enter_and_exit_run_in_one_task_on_the_runtime_loop(runtime: PythonRuntime) -> None:
    recorder = Recorder()
    with runtime.enter(recorder) as value:
        assert value is recorder and recorder.entered.is_set() and not recorder.exited.is_set()

        async def task_is_alive() -> bool:
            return recorder.enter_task is not None and not recorder.enter_task.done()

        assert runtime.run(task_is_alive)  # held open, on the loop, between the calls
    assert recorder.exited.is_set()
    assert recorder.enter_task is recorder.exit_task  # anyio#381: never two tasks
    assert recorder.thread == runtime.config.thread_name
    assert recorder.exit_exc is None

    @asynccontextmanager
    async def scoped() -> AsyncIterator[str]:
        # A cancel scope spanning the whole hold, as anyio task groups and asyncio.timeout
        # have: it is only valid if entered and exited in the same task.
        task = asyncio.current_task()
        yield "inside"
        assert asyncio.current_task() is task

    with runtime.enter(scoped) as text:
        assert text == "inside"


def test_body_exception_reaches_aexit_which_may_suppress_it(runtime: PythonRuntime) -> None:
    recorder = Recorder()
    error = ValueError("from the body")
    with pytest.raises(ValueError, match="from the body") as info:
        with runtime.enter(recorder):
            raise error
    assert info.value is error and recorder.exit_exc is error

    suppressing = Recorder(suppress=True)
    with runtime.enter(suppressing):
        raise KeyError("swallowed")
    assert isinstance(suppressing.exit_exc, KeyError)

    @asynccontextmanager
    async def translating() -> AsyncIterator[None]:
        try:
            yield
        except ValueError as exc:
            raise RuntimeError("translated") from exc

    with pytest.raises(RuntimeError, match="translated") as translated:
        with runtime.enter(translating):
            raise ValueError("original")
    assert isinstance(translated.value.__cause__, ValueError)


def test_a_failing_enter_propagates_and_never_exits(runtime: PythonRuntime) -> None:
    exited = threading.Event()

    @asynccontextmanager
    async def broken() -> AsyncIterator[None]:
        raise ConnectionError("cannot open")
        yield  # pragma: no cover
        exited.set()  # pragma: no cover

    with pytest.raises(ConnectionError, match="cannot open"):
        with runtime.enter(broken):
            pytest.fail("the body must not run")  # pragma: no cover
    assert not exited.is_set()
    with pytest.raises(TypeError, match="async context manager"):
        with runtime.enter(lambda: 42):  # type: ignore[arg-type, return-value]
            pass
    with pytest.raises(TypeError, match="async context manager"):
        runtime.enter(42)  # type: ignore[arg-type]
    held = runtime.enter(Recorder())
    with held:
        pass
    with pytest.raises(RuntimeError, match="only once"):
        with held:
            pass  # pragma: no cover


def test_timeouts_on_enter_and_on_exit_cancel_the_holder(runtime: PythonRuntime) -> None:
    slow_enter = Recorder(enter_delay=30)
    with pytest.raises(OperationTimeoutError, match=r"enter\(Recorder\).*0\.2 s"):
        with runtime.enter(slow_enter, timeout=0.2):
            pass  # pragma: no cover
    assert slow_enter.enter_cancelled.wait(10) and not slow_enter.exited.is_set()

    slow_exit = Recorder(exit_delay=30)
    with pytest.raises(OperationTimeoutError, match=r"0\.2 s"):
        with runtime.enter(slow_exit, timeout=0.2):
            pass
    assert slow_exit.exit_cancelled.wait(10), "giving up on the exit must cancel __aexit__"
    assert slow_exit.enter_task is slow_exit.exit_task


def test_ctrl_c_in_the_body_reaches_aexit(runtime: PythonRuntime) -> None:
    recorder = Recorder()
    in_body = threading.Event()
    ctrl_c_once(in_body)
    with pytest.raises(KeyboardInterrupt):
        with runtime.enter(recorder):
            in_body.set()
            threading.Event().wait(30)  # interrupted by the signal
    assert recorder.exited.is_set() and isinstance(recorder.exit_exc, KeyboardInterrupt)
    assert recorder.enter_task is recorder.exit_task


def test_ctrl_c_while_entering_cancels_the_enter(runtime: PythonRuntime) -> None:
    recorder = Recorder(enter_delay=30)
    ctrl_c_once(recorder.entering)
    with pytest.raises(KeyboardInterrupt):
        with runtime.enter(recorder, timeout=30):
            pytest.fail("the body must not run")  # pragma: no cover
    assert recorder.enter_cancelled.wait(10) and not recorder.exited.is_set()


def test_shutdown_while_held_exits_in_the_holder_task(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(shutdown_grace=0.1), core=core).start()
    recorder = Recorder()
    with pytest.raises(RuntimeShutdownError, match="shutdown"):
        with rt.enter(recorder):
            rt.shutdown(timeout=10)
            # Held and idle: shutdown exited it, in its own task, as a clean exit.
            assert recorder.exited.is_set()
    assert recorder.exit_exc is None
    assert recorder.enter_task is recorder.exit_task
    with pytest.raises(RuntimeShutdownError):
        with rt.enter(Recorder()):
            pass  # pragma: no cover


def test_shutdown_lets_a_released_context_manager_exit_normally(core: ModuleType) -> None:
    """Neither the exit signal nor the verdict needs the (closed) queue. An idle held context is
    exited cleanly (no exception, not cancelled) either by its caller's exit or, if the shutdown
    got there first, by the shutdown itself; a caller's exit that comes second is told so with
    RuntimeShutdownError, and is never refused or left hanging."""
    rt = PythonRuntime(make_config(shutdown_grace=5.0), core=core).start()
    recorder = Recorder(exit_delay=0.3)
    held = rt.enter(recorder)
    held.__enter__()
    stopper = threading.Thread(target=rt.shutdown)
    stopper.start()
    while rt.is_running:
        threading.Event().wait(0.01)
    try:
        assert held.__exit__(None, None, None) is False  # the caller's exit got there first
    except RuntimeShutdownError:
        pass  # the shutdown exited it first, cleanly
    stopper.join(10)
    assert recorder.exited.is_set() and recorder.exit_exc is None and not recorder.exit_cancelled.is_set()


def test_aenter_from_asyncio_and_trio(runtime: PythonRuntime) -> None:
    async def host() -> tuple[str, bool, Any]:
        recorder = Recorder()
        async with runtime.aenter(lambda: httpx.AsyncClient(transport=httpx.ASGITransport(app=app))) as client:

            async def get() -> str:
                return (await client.get("http://testserver/aio")).text

            text = await runtime.arun(get)
        try:
            async with runtime.aenter(recorder):
                raise ValueError("body")
        except ValueError:
            pass
        return text, client.is_closed, recorder.exit_exc

    for caller in (asyncio_host, trio_host):
        text, closed, exit_exc = caller(host)
        assert text == "hello aio" and closed and isinstance(exit_exc, ValueError)


def test_cancelled_trio_body_is_still_exited_cleanly(runtime: PythonRuntime) -> None:
    import trio

    recorder = Recorder(exit_delay=0.05)

    async def host() -> bool:
        with trio.move_on_after(0.1) as scope:
            async with runtime.aenter(recorder):
                await trio.sleep(30)
        return scope.cancelled_caught

    assert trio_host(host) is True
    # The exit wait is shielded: __aexit__ ran to its end with trio's Cancelled as the body's exception.
    assert recorder.exited.is_set() and not recorder.exit_cancelled.is_set()
    assert isinstance(recorder.exit_exc, trio.Cancelled)


def test_cancelled_asyncio_caller_while_entering_cancels_the_enter(runtime: PythonRuntime) -> None:
    recorder = Recorder(enter_delay=30)

    async def host() -> bool:
        return await cancel_once_started(runtime.aenter(recorder).__aenter__(), recorder.entering)

    assert asyncio_host(host) is True
    assert recorder.enter_cancelled.wait(10) and not recorder.exited.is_set()


def test_entering_from_the_runtime_loop_is_a_deadlock_error(runtime: PythonRuntime) -> None:
    async def on_loop() -> str:
        try:
            with runtime.enter(Recorder()):
                pass  # pragma: no cover
        except DeadlockError as exc:
            return str(exc)
        return "no error"

    assert "runtime's own thread" in runtime.run(on_loop)


def test_aexit_cancelled_on_the_loop_reports_command_cancelled(runtime: PythonRuntime) -> None:
    @asynccontextmanager
    async def self_cancelling_exit() -> AsyncIterator[None]:
        yield
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(1)

    with pytest.raises(CommandCancelledError, match="__aexit__ was cancelled"):
        with runtime.enter(self_cancelling_exit):
            pass
    assert runtime.run(asyncio.sleep, 0, "still serving") == "still serving"


def test_a_held_context_manager_does_not_stop_callers_from_spinning(
    runtime: PythonRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held open, it is in flight but idle: a run() in the body is still alone with its answer."""
    import agybridge.runtime

    asked: list[int] = []
    budget = agybridge._caller.send.caller_spin_budget

    def recording_budget(configured: float, in_flight: int) -> float:
        asked.append(in_flight)
        return budget(configured, in_flight)

    monkeypatch.setattr(agybridge._caller.send, "caller_spin_budget", recording_budget)
    with runtime.enter(Recorder()):
        assert runtime.metrics().in_flight == 1  # the holder
        asked.clear()
        # Each call takes a while, so it is surely still in flight when its caller asks.
        runtime.run(asyncio.sleep, 0.05)
        asyncio_host(lambda: runtime.arun(asyncio.sleep, 0.05))
        in_body = list(asked)
    assert in_body == [1, 1]  # each caller counted only its own command, not the holder


# -- held for the app's lifetime (issue 24 point 8) ----------------------------------------


def test_idle_held_contexts_exit_at_once_last_entered_first_after_the_real_work(core: ModuleType) -> None:
    """Shutdown with a 30 s grace: nothing waits for idle held contexts; work in flight goes first."""
    rt = PythonRuntime(make_config(shutdown_grace=30.0), core=core).start()
    order: list[str] = []
    started = threading.Event()

    class Resource:
        def __init__(self, name: str) -> None:
            self.name = name

        async def __aenter__(self) -> Resource:
            return self

        async def __aexit__(self, *exc_info: Any) -> None:
            order.append(f"exit {self.name} {exc_info[0].__name__ if exc_info[0] else 'clean'}")

    async def request_using(resource: Resource) -> str:
        started.set()
        await asyncio.sleep(0.2)  # still using the resource when shutdown begins
        order.append(f"request done with {resource.name}")
        return "answered"

    first, second = rt.enter(Resource("pool")), rt.enter(Resource("client"))
    pool, _client = first.__enter__(), second.__enter__()
    in_flight = rt.submit(request_using, pool)
    assert started.wait(10)
    began = time.monotonic()
    rt.shutdown(timeout=40)
    took = time.monotonic() - began
    assert in_flight.result(1) == "answered"
    assert order == ["request done with pool", "exit client clean", "exit pool clean"]
    assert took < 15, f"shutdown waited {took:.1f} s: the 30 s grace applied to idle held contexts"
    for held in (second, first):
        with pytest.raises(RuntimeShutdownError, match="exited by the runtime's shutdown"):
            held.__exit__(None, None, None)


def test_a_held_context_dropped_without_exit_is_exited_with_a_resource_warning(runtime: PythonRuntime) -> None:
    recorder = Recorder()
    held = runtime.enter(recorder)
    held.__enter__()
    with pytest.warns(ResourceWarning, match="dropped without being exited"):
        del held  # CPython frees it here: its last reference
    gc.collect()
    assert recorder.exited.wait(10)
    assert recorder.exit_exc is None and recorder.enter_task is recorder.exit_task
    assert settled(runtime).in_flight == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_inherit_held_contexts(core: ModuleType) -> None:
    import warnings

    rt = PythonRuntime(make_config(), core=core).start()
    try:
        recorder = Recorder()
        held = rt.enter(recorder)
        held.__enter__()
        later = Recorder()
        made_before = rt.enter(later)  # made in the parent, entered only in the child
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: its own contexts, none of the parent's
            code = 1
            try:
                assert held.__exit__(None, None, None) is False  # the parent's: nothing to exit here
                mine = Recorder()
                with rt.enter(mine) as value:
                    assert value is mine and mine.entered.is_set()
                assert mine.exited.is_set() and rt.metrics().in_flight == 0
                made_before.__enter__()
                rt.shutdown(grace=30)  # idle and held in the child's runtime: exited at once, cleanly
                assert later.exited.is_set() and later.exit_exc is None
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not recorder.exited.is_set(), "the parent's context is still held"
        held.__exit__(None, None, None)
        assert recorder.exited.is_set() and recorder.exit_exc is None
    finally:
        rt.shutdown()
