"""Signals sent to the process never land on agybridge's threads (issue 26).

Python runs signal handlers on the main thread only, and a blocked main thread is interrupted
only when the signal lands on it. Landing on the runtime thread (as uWSGI's and some process
managers' signals could), Ctrl-C reached a blocked ``chat()`` only after a wait slice, and a
C-level handler ran mid-loop on the runtime thread. Each test runs a script in a subprocess,
so the signal hits that process alone.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from types import ModuleType

import pytest

pytestmark = pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="needs POSIX signal masks")

PRELUDE = """
import asyncio, importlib, os, signal, sys, threading
from agybridge import PythonRuntime, RuntimeConfig
core = importlib.import_module(sys.argv[1])
"""


def run(core_name: str, body: str) -> subprocess.CompletedProcess[str]:
    script = PRELUDE + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script, core_name], capture_output=True, text=True, timeout=60, check=False, cwd="/"
    )


def test_the_runtime_and_worker_threads_never_take_a_signal_sent_to_the_process(core: ModuleType) -> None:
    """The main thread blocks SIGINT; a SIGINT sent to the process then stays pending, since no
    agybridge thread may take it (before, the runtime thread took it), and reaches the main
    thread the moment it unblocks it."""
    proc = run(
        core.__name__,
        """
        import _thread
        rt = PythonRuntime(RuntimeConfig(inter_agent_delay=0), core=core).start()
        async def in_a_worker():
            return await asyncio.get_running_loop().run_in_executor(None, threading.get_ident)
        rt.run(in_a_worker)  # a tool worker thread exists too
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        os.kill(os.getpid(), signal.SIGINT)
        assert rt.run(in_a_worker) != threading.get_ident()  # both threads still serve
        print("pending:", signal.SIGINT in signal.sigpending())
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            for _ in range(100):  # the handler runs at the next bytecode boundary
                pass
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted on the main thread")
        rt.shutdown()
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["pending: True", "interrupted on the main thread"], proc.stdout


def test_sigint_interrupts_a_blocked_chat_at_once_and_cancels_the_agent(core: ModuleType) -> None:
    proc = run(
        core.__name__,
        """
        import time
        cancelled = threading.Event()
        class Slow:
            async def chat(self, message):
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    cancelled.set()
                    raise
                return "never"
        rt = PythonRuntime(RuntimeConfig(inter_agent_delay=0), core=core)
        rt.register_agent("slow", Slow)
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        began = time.monotonic()
        try:
            rt.chat("slow", "hi")
        except KeyboardInterrupt:
            print("interrupted after", "under 2 s" if time.monotonic() - began < 2 else "too long")
        print("agent cancelled:", cancelled.wait(10))
        rt.shutdown()
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["interrupted after under 2 s", "agent cancelled: True"], proc.stdout
