"""The ASGI service (plain ASGI, no framework), in two modes chosen by ``AGY_SERVICE_MODE``.

- ``direct``: the handler awaits ``agent.chat(message)`` on the server's own loop (the ceiling).
- ``achat``: the handler awaits ``runtime.achat(agent_id, message)``; the agent runs on the
  agybridge runtime thread.

The runtime is started in the lifespan startup and shut down in the lifespan shutdown.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agent import AGENT_ID, EchoAgent, configured_delay, configured_mode, message_of, runtime_config, save_metrics

MODE = configured_mode("direct")
DELAY = configured_delay()
MODES = ("direct", "achat")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_ask: Callable[[str], Awaitable[str]] | None = None
_close: Callable[[], Awaitable[None]] | None = None


async def _startup() -> None:
    global _ask, _close
    if MODE == "direct":
        _ask = EchoAgent(DELAY).chat
    elif MODE == "achat":
        from agybridge import PythonRuntime

        runtime = PythonRuntime(runtime_config()).start()
        await runtime.aregister_agent(AGENT_ID, lambda: EchoAgent(DELAY))
        achat = runtime.achat

        async def ask_bridge(message: str) -> str:
            return await achat(AGENT_ID, message)

        async def close_bridge() -> None:
            save_metrics(runtime)
            await runtime.ashutdown()

        _ask, _close = ask_bridge, close_bridge
    else:
        raise ValueError(f"unknown ASGI mode {MODE!r}; expected one of {MODES}")


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
