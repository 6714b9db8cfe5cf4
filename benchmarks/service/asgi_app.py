"""The ASGI service (plain ASGI, no framework), in the modes chosen by ``AGY_SERVICE_MODE``.

- ``direct``: the handler awaits ``agent.chat(message)`` on the server's own loop (the ceiling).
- ``achat``: the handler awaits ``runtime.achat(agent_id, message)``; the agent runs on the
  agybridge runtime thread.
- ``direct+uvloop``, ``achat+uvloop``: the same with uvicorn on uvloop (run.py passes
  ``--loop uvloop``) and the runtime's loop on uvloop too; startup fails if the server's loop
  is not the one the mode names.

The runtime is started in the lifespan startup and shut down in the lifespan shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from agent import (
    AGENT_ID,
    EchoAgent,
    base_mode,
    configured_delay,
    configured_mode,
    message_of,
    runtime_config,
    save_metrics,
    uses_uvloop,
)

MODE = configured_mode("direct")
DELAY = configured_delay()
MODES = ("direct", "achat", "direct+uvloop", "achat+uvloop")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_ask: Callable[[str], Awaitable[str]] | None = None
_close: Callable[[], Awaitable[None]] | None = None


async def _startup() -> None:
    global _ask, _close
    if MODE not in MODES:
        raise ValueError(f"unknown ASGI mode {MODE!r}; expected one of {MODES}")
    uvloop = uses_uvloop(MODE)
    server_loop = type(asyncio.get_running_loop()).__module__
    if server_loop.startswith("uvloop") != uvloop:
        raise RuntimeError(f"mode {MODE!r} needs {'a uvloop' if uvloop else 'a stock asyncio'} loop, not {server_loop}")
    if base_mode(MODE) == "direct":
        _ask = EchoAgent(DELAY).chat
    else:
        from agybridge import PythonRuntime

        runtime = PythonRuntime(runtime_config(use_uvloop=uvloop)).start()
        await runtime.aregister_agent(AGENT_ID, lambda: EchoAgent(DELAY))
        achat = runtime.achat

        async def ask_bridge(message: str) -> str:
            return await achat(AGENT_ID, message)

        async def close_bridge() -> None:
            save_metrics(runtime)
            await runtime.ashutdown()

        _ask, _close = ask_bridge, close_bridge


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            try:
                await _startup()
            except Exception as exc:  # noqa: BLE001 - the lifespan protocol reports any startup failure
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            if _close is not None:
                await _close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    assert scope["type"] == "http" and _ask is not None, "lifespan startup must run first"
    body = (await _ask(message_of(scope.get("query_string", b"").decode("latin-1")))).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
