"""The app every server test runs: a module-level runtime, imported before the server forks.

This is the natural code, and what the "Deploy it" page shows: the runtime and its agent are
made at import, in the server's master process, which then forks its workers. Each worker's
first request restarts the runtime there (a new thread and loop) and registers the agent
again from the same factory and state, so the factory runs again, in the worker. A resource
held for the worker's lifetime (here a tiny pool; in a real app an ``httpx.AsyncClient`` or a
database pool) is entered per worker, after the fork: ``start_worker()`` is what the
servers' post-fork hooks call. ``stop_worker()`` is what their worker-exit hooks call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from typing import Any
from urllib.parse import parse_qs

from agybridge import AgentBridgeState, PythonRuntime, RuntimeConfig, RuntimeShutdownError, Tool, dispatch_tool

# Made at import, in the master: it works in every forked worker (after_fork="restart").
runtime = PythonRuntime(RuntimeConfig(inter_agent_delay=0, shutdown_grace=5.0))


def worker_info() -> dict[str, Any]:
    """A host tool: a plain function of the app, run in the runtime's worker threads."""
    return {"pid": os.getpid(), "pool": _pool_pid()}


class Assistant:
    """The agent: awaits as a model call would, then calls the app's host tool."""

    def __init__(self) -> None:
        self.made_in = os.getpid()  # the factory runs again in every worker

    async def chat(self, message: str) -> str:
        marker = os.environ.get("AGY_STARTED_DIR")
        if marker:  # the server tests wait for requests to be in flight before signalling
            open(os.path.join(marker, f"{os.getpid()}-{id(asyncio.current_task())}"), "w").close()
        await asyncio.sleep(int(message or "0") / 1000)
        info = await dispatch_tool("assistant", "worker_info")
        return json.dumps({**info, "agent_made_in": self.made_in})


runtime.register_agent("assistant", Assistant, AgentBridgeState(tools=[Tool.from_function(worker_info)]))


class Pool:
    """Stands for an HTTP client or a database pool: opened on the runtime loop, per worker."""

    async def __aenter__(self) -> Pool:
        self.pid = os.getpid()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        _log(f"pool of {self.pid} closed, exception: {exc_info[0]}")


# Per process: the held context (keep it: dropped, it would be exited) and what it gave.
_held: dict[int, tuple[contextlib.ExitStack, Pool]] = {}
_held_lock = threading.Lock()


def start_worker() -> None:
    """After the fork, in each worker: enter what the worker holds for its lifetime.

    Never exited by hand: the runtime's shutdown exits it, cleanly and at once.
    """
    with _held_lock:
        if os.getpid() not in _held:
            stack = contextlib.ExitStack()
            _held[os.getpid()] = (stack, stack.enter_context(runtime.enter(Pool)))


def _pool_pid() -> int | None:
    held = _held.get(os.getpid())
    return held[1].pid if held is not None else None


def stop_worker() -> None:
    """When a worker exits: shut the runtime down (held contexts are exited cleanly, at once)."""
    runtime.shutdown()
    left = [t.name for t in threading.enumerate() if t.name.startswith("agy-bridge")]
    _log(f"worker {os.getpid()} stopped; agybridge threads left: {left}")


try:  # under uWSGI: it calls uwsgi.atexit when a worker stops (a reload, a shutdown)
    import uwsgi  # type: ignore[import-not-found]
except ImportError:
    pass
else:
    uwsgi.atexit = stop_worker


def _log(line: str) -> None:
    log = os.environ.get("AGY_APP_LOG")
    if log:
        with open(log, "a") as f:
            f.write(line + "\n")


def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The WSGI app: one chat per request; a request arriving during shutdown gets a 503."""
    delay = parse_qs(environ.get("QUERY_STRING", "")).get("delay", ["0"])[0]
    try:
        start_worker()  # a no-op once the post-fork hook ran (uWSGI --lazy-apps has none)
        body, status = runtime.chat("assistant", delay), "200 OK"
    except RuntimeShutdownError:
        body, status = '{"error": "shutting down"}', "503 Service Unavailable"
    start_response(status, [("Content-Type", "application/json")])
    return [body.encode()]


def ask(delay_ms: int) -> dict[str, Any]:
    """For Celery tasks and multiprocessing pools: one chat, its answer decoded."""
    answer: dict[str, Any] = json.loads(runtime.chat("assistant", str(delay_ms)))
    return answer
