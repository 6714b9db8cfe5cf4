"""Fault injection and resource hygiene: misbehaving agents, tools, hooks and policies; leaks."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import tracemalloc
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from conftest import CallsTool, make_config, ping

from agybridge import (
    AgentBridgeState,
    ChatTimeoutError,
    PolicyError,
    PythonRuntime,
    RuntimeShutdownError,
)


@pytest.fixture
def quick_runtime(core: ModuleType) -> Any:
    rt = PythonRuntime(make_config(chat_timeout=0.3, shutdown_grace=0.2), core=core).start()
    yield rt
    rt.shutdown(timeout=10)


def test_agent_chat_raises(quick_runtime: PythonRuntime) -> None:
    class Broken:
        async def chat(self, message: str) -> str:
            raise ConnectionError("model provider unreachable")

    quick_runtime.register_agent("broken", Broken)
    with pytest.raises(ConnectionError, match="unreachable"):
        quick_runtime.chat("broken", "hi")
    assert quick_runtime.run(ping) == "pong"


def test_agent_hangs_past_the_chat_timeout(quick_runtime: PythonRuntime) -> None:
    class Hung:
        async def chat(self, message: str) -> str:
            await asyncio.Event().wait()
            return "never"

    quick_runtime.register_agent("hung", Hung)
    with pytest.raises(ChatTimeoutError, match="'hung'"):
        quick_runtime.chat("hung", "hi")
    assert quick_runtime.run(ping) == "pong"


def test_agent_blocks_the_loop_with_sync_work(quick_runtime: PythonRuntime) -> None:
    """A blocking agent delays the loop but loses nothing: queued work completes after it."""
    entered = threading.Event()
    release = threading.Event()

    class Blocking:
        async def chat(self, message: str) -> str:
            entered.set()
            release.wait(10)  # deliberately blocks the runtime loop
            return "blocked reply"

    quick_runtime.register_agent("blocking", Blocking)
    results: list[str] = []
    t = threading.Thread(target=lambda: results.append(quick_runtime.chat("blocking", "x", timeout=20)))
    t.start()
    assert entered.wait(10)
    pings = [threading.Thread(target=lambda: results.append(quick_runtime.run(ping, timeout=20))) for _ in range(5)]
    for p in pings:
        p.start()
    release.set()
    for p in [t, *pings]:
        p.join(timeout=20)
    # The chat timeout could not fire while the loop was blocked; when the loop came back the
    # reply was already there. Either way every command has exactly one outcome.
    assert sorted(results) == sorted(["blocked reply"] + ["pong"] * 5)


def _state_with(callback: Callable[..., Any], where: str) -> AgentBridgeState:
    """Bridge state whose tool "tool", before_tool hook or policy (per *where*) is *callback*."""

    def tool() -> str:
        if where == "tool":
            callback()
        return "done"

    return AgentBridgeState(
        tools={"tool": tool}.values(),
        hooks={"before_tool": [callback]} if where == "hook" else None,
        policies=[callback] if where == "policy" else (),
    )


@pytest.mark.parametrize("where", ["tool", "hook", "policy"])
def test_host_callback_hangs(quick_runtime: PythonRuntime, where: str) -> None:
    release = threading.Event()

    def hang(*args: Any) -> bool:
        release.wait(20)
        return True

    quick_runtime.register_agent("a", lambda: CallsTool("a", "tool"), _state_with(hang, where))
    try:
        with pytest.raises(ChatTimeoutError):
            quick_runtime.chat("a", "go")
        assert quick_runtime.run(ping) == "pong", "the runtime loop is still serving"
    finally:
        release.set()


@pytest.mark.parametrize("where", ["tool", "hook", "policy"])
def test_host_callback_raises(quick_runtime: PythonRuntime, where: str) -> None:
    def boom(*args: Any) -> Any:
        raise RuntimeError(f"{where} bug")

    quick_runtime.register_agent("a", lambda: CallsTool("a", "tool"), _state_with(boom, where))
    if where == "hook":
        assert quick_runtime.chat("a", "go") == "done"  # hooks observe; a failing hook is logged
    elif where == "policy":
        with pytest.raises(PolicyError):
            quick_runtime.chat("a", "go")
    else:
        with pytest.raises(RuntimeError, match="tool bug"):
            quick_runtime.chat("a", "go")
    assert quick_runtime.run(ping) == "pong"


def test_exception_escaping_a_done_callback(quick_runtime: PythonRuntime, core: ModuleType) -> None:
    from agybridge import Run

    cmd = Run(ping, oneshot=core.Oneshot())
    cmd.oneshot.add_done_callback(lambda shot: 1 / 0)
    assert quick_runtime.send_command(cmd) == "pong"
    assert quick_runtime.run(ping) == "pong"


def test_use_after_shutdown(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(), core=core).start()
    rt.shutdown()
    for call in (lambda: rt.run(ping), lambda: rt.chat("a", "b"), lambda: rt.register_agent("a", object)):
        with pytest.raises(RuntimeShutdownError):
            call()

    async def host() -> str:
        try:
            await rt.arun(ping)
        except RuntimeShutdownError:
            return "refused"
        return "ran"

    assert asyncio.run(host()) == "refused"


# ------------------------------------------------------------------------------------------
# Resource hygiene
# ------------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.timeout(300)
def test_start_shutdown_cycles_leave_nothing_behind(core: ModuleType) -> None:
    config = make_config(shutdown_grace=0.0)

    def cycle() -> None:
        rt = PythonRuntime(config, core=core).start()
        assert rt.run(ping) == "pong"
        rt.shutdown()

    for _ in range(20):  # warm up caches, logging, lazy imports
        cycle()
    gc.collect()
    # Compare sets, not counts: a leftover of an earlier test may end meanwhile.
    threads_before = set(threading.enumerate())
    fds_before = set(os.listdir("/proc/self/fd"))
    tracemalloc.start(25)
    try:
        gc.collect()
        snapshot_before = tracemalloc.take_snapshot()
        for _ in range(1000):
            cycle()
        gc.collect()
        snapshot_after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # Count what the runtime retains: allocations made with an agybridge frame on the stack.
    # (tracemalloc sees every thread, and leftovers of earlier tests may allocate meanwhile.)
    ours = [tracemalloc.Filter(True, "*agybridge*", all_frames=True)]
    after, before = snapshot_after.filter_traces(ours), snapshot_before.filter_traces(ours)
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    new_threads = set(threading.enumerate()) - threads_before
    assert not new_threads, [t.name for t in new_threads]
    new_fds = set(os.listdir("/proc/self/fd")) - fds_before
    assert not new_fds, f"file descriptors left open: {sorted(new_fds)}"
    assert growth < 512 * 1024, f"memory grew by {growth} bytes over 1,000 cycles"


def test_hot_paths_leak_no_references(core: ModuleType) -> None:
    """Reference counts of objects passed through the core are unchanged afterwards."""
    value = object()
    error = ValueError("kept")
    item = object()
    state = object()
    callback_calls = []

    def callback(shot: Any) -> None:
        callback_calls.append(1)

    before = (
        sys.getrefcount(value),
        sys.getrefcount(error),
        sys.getrefcount(item),
        sys.getrefcount(state),
        sys.getrefcount(callback),
    )
    for _ in range(2000):
        shot = core.Oneshot()
        shot.add_done_callback(callback)
        shot.set_result(value)
        shot.set_result(value)
        assert shot.result(0) is value
        shot.wait(0, 0.0)
        other = core.Oneshot()
        other.set_exception(error)
        try:
            other.result(0)
        except ValueError:
            pass
        other.exception(0)
        queue = core.CommandQueue(lambda: None)
        queue.push(item)
        queue.drain()
        queue.push(item)
        queue.close()
        registry = core.AgentRegistry()
        registry.insert("a", state)
        registry.get("a")
        registry.find("a")
        registry.remove("a")
        try:
            registry.get("a")
        except KeyError:
            pass
    del shot, other, queue, registry
    error.__traceback__ = None
    gc.collect()
    after = (
        sys.getrefcount(value),
        sys.getrefcount(error),
        sys.getrefcount(item),
        sys.getrefcount(state),
        sys.getrefcount(callback),
    )
    assert after == before
    assert len(callback_calls) == 2000


def test_waiter_timeout_leaves_no_thread_or_lock_behind(core: ModuleType) -> None:
    threads_before = set(threading.enumerate())
    for _ in range(200):
        shot = core.Oneshot()
        assert shot.wait(0.0005) is False
    assert not set(threading.enumerate()) - threads_before
