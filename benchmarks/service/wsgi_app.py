"""The threaded WSGI service, in the modes chosen by ``AGY_SERVICE_MODE``.

- ``none``: no agent, no bridge; the handler waits the agent's delay with ``time.sleep`` (the
  same stand-in I/O, done the way a plain sync service would). This is the ceiling.
- ``agybridge``: one :class:`~agybridge.PythonRuntime` per worker process; the handler calls
  ``runtime.chat(agent_id, message)``.
- ``rcts``: one asyncio loop in a thread per worker; the handler calls
  ``asyncio.run_coroutine_threadsafe(agent.chat(message), loop).result()``.
- ``async_to_sync``: the handler calls ``asgiref.sync.async_to_sync(agent.chat)(message)``.
- ``agybridge+uvloop``, ``rcts+uvloop``: the same, with the runtime's (or the loop thread's)
  loop on uvloop.

Gunicorn forks its workers, and a runtime (or a loop thread) made in the master would not
survive the fork, so every backend is built in the worker: ``gunicorn_conf.post_worker_init``
builds it before the first request, and :func:`ask` builds it lazily if that hook did not run.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from agent import (
    AGENT_ID,
    EchoAgent,
    base_mode,
    configured_delay,
    configured_mode,
    message_of,
    reply_to,
    runtime_config,
    save_metrics,
    uses_uvloop,
)

MODE = configured_mode("none")
DELAY = configured_delay()
MODES = ("none", "agybridge", "rcts", "async_to_sync", "agybridge+uvloop", "rcts+uvloop")

_lock = threading.Lock()
_backend: tuple[int, Callable[[str], str], Callable[[], None]] | None = None


def _build(mode: str, delay: float) -> tuple[Callable[[str], str], Callable[[], None]]:
    """(ask, close) for *mode*, built in the calling (worker) process."""
    if mode not in MODES:
        raise ValueError(f"unknown WSGI mode {mode!r}; expected one of {MODES}")
    uvloop = uses_uvloop(mode)
    mode = base_mode(mode)
    if mode == "none":

        def ask_plain(message: str) -> str:
            if delay > 0:
                time.sleep(delay)
            return reply_to(message)

        return ask_plain, lambda: None
    if mode == "agybridge":
        from agybridge import PythonRuntime

        runtime = PythonRuntime(runtime_config(use_uvloop=uvloop)).start()
        runtime.register_agent(AGENT_ID, lambda: EchoAgent(delay))
        chat = runtime.chat

        def ask_bridge(message: str) -> str:
            return chat(AGENT_ID, message)

        def close_bridge() -> None:
            save_metrics(runtime)
            runtime.shutdown()

        return ask_bridge, close_bridge
    if mode == "rcts":
        if uvloop:
            import uvloop as uvloop_module

            loop: asyncio.AbstractEventLoop = uvloop_module.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="service-loop", daemon=True)
        thread.start()
        agent = EchoAgent(delay)

        def ask_rcts(message: str) -> str:
            return asyncio.run_coroutine_threadsafe(agent.chat(message), loop).result()

        def close_rcts() -> None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)

        return ask_rcts, close_rcts
    if mode == "async_to_sync":
        from asgiref.sync import async_to_sync

        return async_to_sync(EchoAgent(delay).chat), lambda: None
    raise ValueError(f"unknown WSGI mode {mode!r}; expected one of {MODES}")


def start_backend() -> Callable[[str], str]:
    """Build this process's backend once (again after a fork)."""
    global _backend
    with _lock:
        if _backend is None or _backend[0] != os.getpid():
            ask_fn, close = _build(MODE, DELAY)
            _backend = (os.getpid(), ask_fn, close)
        return _backend[1]


def stop_backend() -> None:
    global _backend
    with _lock:
        if _backend is not None and _backend[0] == os.getpid():
            _backend[2]()
        _backend = None


def ask(message: str) -> str:
    backend = _backend
    if backend is not None and backend[0] == os.getpid():
        return backend[1](message)
    return start_backend()(message)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = ask(message_of(environ.get("QUERY_STRING", ""))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
