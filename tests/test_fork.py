"""A runtime made before ``fork()`` works in the child (issue 24 points 1-3, 7; issue 26's fork items).

Every test forks with :func:`in_child`: the child runs one function and reports its outcome
through a pipe; the parent reads it with a deadline (a child that hangs is killed and the
test fails, naming the hang), so no verdict depends on timing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import faulthandler
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from conftest import make_config

from agybridge import (
    AgentBridgeState,
    ConfigError,
    ForkedRuntimeError,
    PythonRuntime,
    RuntimeConfig,
    RuntimeShutdownError,
    Tool,
    UnknownAgentError,
    dispatch_tool,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")


def _fork(c_level: bool | str = False) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads running
        if c_level:
            # fork(2) straight from C (PyDLL keeps the GIL held across the call, as C code
            # holding it would). True calls none of CPython's fork hooks. "uwsgi" calls
            # PyOS_AfterFork_Child in the child, as uWSGI does; from 3.13 that is a fatal error
            # without PyOS_BeforeFork first (the import lock it releases), so there both run.
            hooks = c_level == "uwsgi"
            both = hooks and sys.version_info >= (3, 13)
            if both:
                ctypes.pythonapi.PyOS_BeforeFork()
            pid: int = ctypes.PyDLL(None).fork()
            if pid == 0 and hooks:
                ctypes.pythonapi.PyOS_AfterFork_Child()
            elif both:
                ctypes.pythonapi.PyOS_AfterFork_Parent()
            return pid
        return os.fork()


def in_child(fn: Callable[[], object], timeout: float = 30.0, *, c_level: bool | str = False) -> str:
    """Run *fn* in a forked child; return its ``repr`` result, or fail with its traceback."""
    read_end, write_end = os.pipe()
    # A child forking again: its watchdog thread would not exist in the grandchild, whose own
    # dump_traceback_later() would then wait for it forever. The outer deadline still holds.
    faulthandler.cancel_dump_traceback_later()
    pid = _fork(c_level)
    if pid == 0:  # the child: never return into pytest
        code = 0
        os.setpgid(0, 0)  # its own process group: a hung child is killed with its descendants
        # A hang shows where: every thread's stack goes to the parent, then the child exits.
        faulthandler.dump_traceback_later(timeout * 0.8, exit=True, file=write_end)
        try:
            out = "ok " + repr(fn())
        except BaseException:
            out, code = "error " + traceback.format_exc(), 1
        try:
            os.write(write_end, out.encode())
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([read_end], [], [], timeout)
            if not ready:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:  # it had not yet made its group
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"the forked child did not finish within {timeout} s (it hung): {b''.join(chunks)!r}")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    out = b"".join(chunks).decode()
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert out.startswith("ok "), out
    return out[3:]


class PidAgent:
    made_in: list[int] = []

    def __init__(self) -> None:
        PidAgent.made_in.append(os.getpid())
        self.pid = os.getpid()

    async def chat(self, message: str) -> str:
        return f"{message}@{self.pid}"


async def pid() -> int:
    return os.getpid()


@pytest.fixture
def rt(core: ModuleType) -> Iterator[PythonRuntime]:
    runtime = PythonRuntime(make_config(), core=core)
    try:
        yield runtime
    finally:
        runtime.shutdown(timeout=10)


def test_a_runtime_never_started_before_the_fork_works_in_the_child(rt: PythonRuntime) -> None:
    def child() -> tuple[int, str]:
        rt.register_agent("a", PidAgent)
        return rt.run(pid), rt.chat("a", "hi")

    got_pid, reply = eval(in_child(child))
    assert reply == f"hi@{got_pid}" and got_pid != os.getpid()
    assert rt.agent_ids() == [] and not rt.is_running, "the parent never started it"


def test_a_started_runtime_restarts_in_the_child_with_its_agents_made_again(rt: PythonRuntime) -> None:
    PidAgent.made_in.clear()
    rt.register_agent("a", PidAgent)
    rt.register_agent("b", PidAgent)
    assert rt.chat("a", "x") == f"x@{os.getpid()}"

    def child() -> Any:
        metrics = rt.metrics()
        reply = rt.chat("a", "y")  # the first use: a new thread, the agents registered again
        threads = [t.ident for t in threading.enumerate() if t.name == rt.config.thread_name and t.is_alive()]
        return (metrics.submitted, metrics.in_flight, reply, rt.agent_ids(), PidAgent.made_in, threads)

    submitted, in_flight, reply, ids, made_in, threads = eval(in_child(child))
    assert (submitted, in_flight) == (0, 0), "metrics start at zero in the child"
    child_pid = made_in[-1]
    assert reply == f"y@{child_pid}", "the agent was made again, in the child"
    assert ids == ["a", "b"] and made_in[:2] == [os.getpid()] * 2 and made_in[2:] == [child_pid] * 2
    assert len(threads) == 1, "one runtime thread in the child: its own"
    assert rt.chat("b", "z") == f"z@{os.getpid()}", "the parent is untouched"
    assert PidAgent.made_in == [os.getpid()] * 2


def test_the_parents_in_flight_work_never_appears_in_the_child(rt: PythonRuntime) -> None:
    started, release = threading.Event(), threading.Event()

    async def parent_work() -> str:
        started.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 20)
        return "parent done"

    future = rt.submit(parent_work)
    assert started.wait(10)

    def child() -> tuple[int, int, int]:
        before = rt.metrics()
        assert rt.run(pid) == os.getpid()
        after = rt.metrics()
        return before.in_flight, after.submitted, after.completed

    assert eval(in_child(child)) == (0, 1, 1)
    release.set()
    assert future.result(10) == "parent done"


def test_after_fork_error_keeps_forked_runtime_error(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(after_fork="error"), core=core)
    fresh = PythonRuntime(make_config(after_fork="error"), core=core)
    try:
        rt.register_agent("a", PidAgent)

        def child() -> tuple[str, bool, int, int]:
            with pytest.raises(ForkedRuntimeError, match="after_fork='error'"):
                rt.chat("a", "x")
            with pytest.raises(ForkedRuntimeError):
                asyncio.run(rt.arun(pid))
            rt.shutdown()  # nothing to stop here: a no-op, never an error
            # A runtime never started before the fork works either way.
            return type(rt.bridge_state).__name__, rt.is_running, len(rt.agent_ids()), fresh.run(pid)

        _registry, running, n_ids, child_pid = eval(in_child(child))
        assert (running, n_ids) == (False, 0) and child_pid != os.getpid()
        assert rt.chat("a", "x") == f"x@{os.getpid()}"
    finally:
        rt.shutdown()
        fresh.shutdown()


@pytest.mark.parametrize("value", ["Restart", "", None, "ignore", 1])
def test_after_fork_with_an_unknown_value_names_the_field_and_the_choices(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"after_fork must be 'restart' or 'error'"):
        RuntimeConfig(after_fork=value)


def test_a_runtime_shut_down_before_the_fork_stays_shut_down_in_the_child(rt: PythonRuntime) -> None:
    rt.register_agent("a", PidAgent)
    rt.shutdown()

    def child() -> tuple[bool, int]:
        with pytest.raises(RuntimeShutdownError):
            rt.chat("a", "x")
        with pytest.raises(RuntimeShutdownError):
            rt.start()
        rt.shutdown()
        return rt.is_running, len(rt.agent_ids())

    assert eval(in_child(child)) == (False, 0)


def test_a_child_that_forks_again_restarts_again(rt: PythonRuntime) -> None:
    rt.register_agent("a", PidAgent)
    assert rt.chat("a", "p") == f"p@{os.getpid()}"

    def grandchild() -> str:
        return rt.chat("a", "g")

    def child() -> tuple[str, str]:
        mine = rt.chat("a", "c")
        return mine, in_child(grandchild)

    mine, theirs = eval(in_child(child))
    child_pid = int(mine.split("@")[1])
    grandchild_pid = int(eval(theirs).split("@")[1])
    assert len({os.getpid(), child_pid, grandchild_pid}) == 3


def test_a_fork_made_in_c_is_detected_by_pid(rt: PythonRuntime) -> None:
    """issue 26: a fork bypassing os.register_at_fork made chat() time out in the child.

    Made while the runtime's threads are idle (blocked outside the interpreter): a fork made in
    C with no PyOS_AfterFork_Child while other threads contend for the GIL can leave the GIL's
    own mutex locked in the child, which no library can survive (uWSGI calls it for that reason).
    """
    rt.register_agent("a", PidAgent)
    assert rt.chat("a", "p") == f"p@{os.getpid()}"

    def child() -> str:
        return rt.chat("a", "c", timeout=5)

    reply = eval(in_child(child, timeout=20, c_level=True))
    assert reply.startswith("c@") and reply != f"c@{os.getpid()}"


@pytest.mark.parametrize("c_level", [False, True], ids=["os.fork", "fork-in-c"])
def test_the_cores_process_token_differs_in_a_forked_child(core: ModuleType, c_level: bool) -> None:
    """The send path's only fork check: one read per send, which must change in every child."""
    parent = core.process_token()
    assert core.process_token() == parent  # stable within a process
    child = eval(in_child(core.process_token, c_level=c_level))
    assert child != parent


def test_a_fork_while_the_future_callback_thread_holds_its_lock_leaves_the_childs_callbacks_working(
    rt: PythonRuntime,
) -> None:
    from agybridge._caller import futures

    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # the parent's callback thread, caught inside its lock by the fork
        futures._CALLBACKS.run(concurrent.futures.Future(), [])  # it exists, with its lock
        with futures._CALLBACKS._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)

        def child() -> object:
            async def later() -> str:
                await asyncio.sleep(0.05)  # still pending when the callback is added
                return "answered"

            fired = threading.Event()
            future = rt.submit(later)
            future.add_done_callback(lambda _future: fired.set())
            return fired.wait(5), future.result(5)

        assert eval(in_child(child, timeout=20)) == (True, "answered")
    finally:
        release.set()
        holder.join(5)


def test_a_fork_from_a_worker_thread_and_from_the_runtime_thread(rt: PythonRuntime) -> None:
    rt.register_agent("a", PidAgent)

    def sync_tool() -> str:  # runs in one of the runtime's worker threads
        return in_child(lambda: rt.chat("a", "w"))

    async def on_the_loop() -> str:  # runs on the runtime thread itself
        return in_child(lambda: rt.chat("a", "l"))

    async def in_a_worker() -> str:
        return await asyncio.get_running_loop().run_in_executor(None, sync_tool)

    from_worker = eval(rt.run(in_a_worker))
    from_loop = eval(rt.run(on_the_loop))
    assert from_worker.startswith("w@") and from_loop.startswith("l@")
    assert os.getpid() not in {int(from_worker.split("@")[1]), int(from_loop.split("@")[1])}
    assert rt.chat("a", "p") == f"p@{os.getpid()}"


def test_an_agent_whose_factory_suspends_is_there_for_the_first_chat(rt: PythonRuntime) -> None:
    async def slow_factory() -> PidAgent:
        await asyncio.sleep(0.05)
        return PidAgent()

    rt.register_agent("slow", slow_factory)
    assert eval(in_child(lambda: rt.chat("slow", "x"))).startswith("x@")


def test_a_factory_that_fails_in_the_child_is_logged_and_the_others_still_come_back(
    rt: PythonRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    parent = os.getpid()

    def only_in_the_parent() -> PidAgent:
        if os.getpid() != parent:
            raise RuntimeError("no model credentials in this process")
        return PidAgent()

    rt.register_agent("picky", only_in_the_parent)
    rt.register_agent("ok", PidAgent)

    def child() -> tuple[str, list[str]]:
        records: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
        logging.getLogger("agybridge").addHandler(handler)
        with pytest.raises(UnknownAgentError):
            rt.chat("picky", "x")
        return rt.chat("ok", "y"), records

    reply, records = eval(in_child(child))
    assert reply.startswith("y@")
    assert any("'picky' could not be registered again in the forked child" in r for r in records)
    assert rt.chat("picky", "z") == f"z@{parent}"


def test_unregistered_agents_are_not_made_again(rt: PythonRuntime) -> None:
    rt.register_agent("gone", PidAgent)
    rt.register_agent("kept", PidAgent)
    rt.unregister_agent("gone")
    rt.register_agent("kept", PidAgent, replace=True)
    assert eval(in_child(rt.agent_ids)) == []  # nothing is made until the first use
    assert eval(in_child(lambda: (rt.run(pid), rt.agent_ids())[1])) == ["kept"]


class ToolAgent:
    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id

    async def chat(self, message: str) -> str:
        return str(await dispatch_tool(self.agent_id, "where"))


def _where_sync() -> str:
    return threading.current_thread().name


MODULE_STATE = AgentBridgeState(tools=[Tool.from_function(_where_sync, name="where", thread_sensitive=True)])


def test_a_childs_own_runtime_can_register_the_module_level_state(rt: PythonRuntime) -> None:
    """issue 26: the child's new runtime got AgentOwnershipError for the parent's state."""
    rt.register_agent("a", lambda: ToolAgent("a"), MODULE_STATE)
    assert rt.chat("a", "x") == threading.current_thread().name

    def child() -> str:
        with PythonRuntime(make_config(), core=rt.core) as own:
            own.register_agent("a", lambda: ToolAgent("a"), MODULE_STATE)
            return own.chat("a", "y")

    assert eval(in_child(child)) == threading.current_thread().name


def test_two_runtimes_with_the_same_agent_id_run_thread_sensitive_tools(core: ModuleType) -> None:
    """issue 26: thread-sensitive chats failed with AgentOwnershipError on both runtimes."""
    runtimes = [PythonRuntime(make_config(), core=core) for _ in range(2)]
    try:
        for runtime in runtimes:
            state = AgentBridgeState(tools=[Tool.from_function(_where_sync, name="where", thread_sensitive=True)])
            runtime.register_agent("same", lambda: ToolAgent("same"), state)
        for runtime in runtimes:
            assert runtime.chat("same", "x") == threading.current_thread().name

            async def from_a_loop(runtime: PythonRuntime = runtime) -> str:
                return await runtime.achat("same", "y")

            assert asyncio.run(from_a_loop()) == threading.current_thread().name
    finally:
        for runtime in runtimes:
            runtime.shutdown()


@pytest.mark.timeout(240)
@pytest.mark.timeout(240)
def test_fork_while_threads_hammer_the_runtime_never_deadlocks_the_child(core: ModuleType) -> None:
    """The scenario runs in a fresh interpreter: only this runtime's threads (and the hammering
    ones) exist when it forks, so the verdict does not depend on which threads earlier tests
    of this session left behind. Every child must finish: a deadlocked one fails the run."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import test_fork; "
        "from conftest import make_config; from agybridge import PythonRuntime; "
        "from agybridge._select import load_core; "
        "rt = PythonRuntime(make_config(), core=load_core(sys.argv[2])); "
        "test_fork.hammer_and_fork(rt); rt.shutdown(timeout=10); print('hammered')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, os.path.dirname(__file__), core.IMPLEMENTATION],
        capture_output=True,
        text=True,
        timeout=220,
        cwd=os.path.dirname(__file__),
    )
    assert proc.returncode == 0 and "hammered" in proc.stdout, proc.stdout + proc.stderr


def hammer_and_fork(rt: PythonRuntime) -> None:
    """Producers mid-push, registry look-ups, sync tools in workers: fork many times meanwhile."""

    def sync_tool() -> str:
        threading.Event().wait(0.001)
        return "tool"

    state = AgentBridgeState(tools=[Tool.from_function(sync_tool, name="where")])
    rt.register_agent("t", lambda: ToolAgent("t"), state)
    rt.register_agent("a", PidAgent)

    async def call_sync_tool() -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, sync_tool)

    stop = threading.Event()
    errors: list[BaseException] = []

    def hammer(kind: int) -> None:
        try:
            while not stop.is_set():
                if kind == 0:
                    rt.chat("a", "h")
                elif kind == 1:
                    rt.bridge_state.find("a")
                    rt.agent_ids()
                elif kind == 2:
                    rt.run(call_sync_tool)
                else:
                    rt.submit(pid).result(10)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i % 4,), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    try:
        for i in range(40):

            def child() -> str:
                return rt.chat("a", "c", timeout=10) if i % 2 else str(rt.run(call_sync_tool, timeout=10))

            got = eval(in_child(child, timeout=30, c_level="uwsgi" if i % 4 == 3 else False))
            assert got == "tool" if i % 2 == 0 else got.startswith("c@"), got
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not errors, errors


def test_threads_of_a_child_racing_to_the_first_use_rebuild_once(rt: PythonRuntime) -> None:
    """A gthread worker's threads all take their first request at once."""
    PidAgent.made_in.clear()
    rt.register_agent("a", PidAgent)

    def child() -> tuple[int, int, int]:
        start = threading.Barrier(8)
        replies: list[str] = []

        def first_use() -> None:
            start.wait(10)
            replies.append(rt.chat("a", "r", timeout=10))

        threads = [threading.Thread(target=first_use) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        runtime_threads = [t for t in threading.enumerate() if t.name == rt.config.thread_name]
        return len(set(replies)), PidAgent.made_in.count(os.getpid()), len(runtime_threads)

    assert eval(in_child(child)) == (1, 1, 1), "one rebuild: one thread, the agent made once, one answer"
