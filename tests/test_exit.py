"""Process exit: a running tool never holds it, and late threads are still served.

Each scenario is a small script run in a subprocess (bounded by a timeout), on both cores.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import time
from types import ModuleType

import pytest

pytestmark = pytest.mark.timeout(60)

_PRELUDE = """
import importlib, sys, threading
from agybridge import AgentBridgeState, PythonRuntime, RuntimeConfig, dispatch_tool

core = importlib.import_module({core!r})

class Agent:
    def __init__(self, agent_id):
        self.agent_id = agent_id

    async def chat(self, message):
        return str(await dispatch_tool(self.agent_id, message, {{"args": {{}}}}))

runtime = PythonRuntime(RuntimeConfig(inter_agent_delay=0.0, shutdown_grace=0.2), core=core)
"""


def _run(core: ModuleType, body: str, timeout: float = 30.0) -> tuple[subprocess.CompletedProcess[str], float]:
    script = textwrap.dedent(_PRELUDE.format(core=core.__name__)) + textwrap.dedent(body)
    started = time.monotonic()
    # Run outside the source tree: with -c the current directory comes first on sys.path, and
    # a checkout's agybridge/ (no compiled core in it) would shadow the installed package.
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, cwd=tempfile.gettempdir()
    )
    return proc, time.monotonic() - started


def test_a_running_sync_tool_does_not_hold_the_exit_after_shutdown(core: ModuleType) -> None:
    proc, took = _run(
        core,
        """
        started = threading.Event()

        def hang():
            started.set()
            threading.Event().wait()  # never returns: abandoned at exit

        state = AgentBridgeState(tools=[hang])
        runtime.register_agent("a", lambda: Agent("a"), state)
        threading.Thread(target=lambda: runtime.chat("a", "hang", timeout=60), daemon=True).start()
        assert started.wait(10)
        runtime.shutdown(grace=0.1)
        print("shutdown returned", flush=True)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "shutdown returned"
    assert took < 20


def test_a_running_sync_tool_does_not_hold_the_exit_without_shutdown(core: ModuleType) -> None:
    proc, _took = _run(
        core,
        """
        started = threading.Event()

        def hang():
            started.set()
            threading.Event().wait()

        runtime.register_agent("a", lambda: Agent("a"), AgentBridgeState(tools=[hang]))
        threading.Thread(target=lambda: runtime.chat("a", "hang", timeout=60), daemon=True).start()
        assert started.wait(10)
        print("main returns", flush=True)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "main returns"


@pytest.mark.skipif(
    (3, 12, 0) <= sys.version_info[:3] < (3, 12, 3),
    reason="CPython 3.12.0-3.12.2 start no thread after the main thread returned (gh-113964)",
)
def test_a_late_non_daemon_thread_is_served_after_main_returns(core: ModuleType) -> None:
    proc, _took = _run(
        core,
        """
        seen = []

        def tool():
            return "tool ran"

        def hook(agent_id, event, context):
            seen.append(event)

        state = AgentBridgeState(tools=[tool], hooks={"before_tool": [hook], "after_chat": [hook]})
        runtime.register_agent("a", lambda: Agent("a"), state)

        def late():
            threading.main_thread().join()  # the main thread has returned: exit is under way
            print(runtime.chat("a", "tool", timeout=20), sorted(seen), flush=True)

        threading.Thread(target=late).start()
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "tool ran ['after_chat', 'before_tool']"
