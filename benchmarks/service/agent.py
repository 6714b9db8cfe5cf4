"""The agent every service mode asks: it answers at once, or after awaiting a stand-in for model I/O."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

#: Environment variables the orchestrator (run.py) sets for each server it starts.
MODE_ENV = "AGY_SERVICE_MODE"
DELAY_ENV = "AGY_SERVICE_DELAY"
RUNTIME_OPTIONS_ENV = "AGY_SERVICE_RUNTIME_OPTIONS"  # JSON object of RuntimeConfig fields
METRICS_ENV = "AGY_SERVICE_METRICS_FILE"  # where a bridged server leaves its runtime's counters
AGENT_ID = "echo"


def configured_mode(default: str) -> str:
    return os.environ.get(MODE_ENV, default)


def configured_delay() -> float:
    return float(os.environ.get(DELAY_ENV, "0"))


def uses_uvloop(mode: str) -> bool:
    """A mode named ``...+uvloop`` runs its loops on uvloop (the uvloop rows); the others on stock asyncio."""
    return mode.endswith("+uvloop")


def base_mode(mode: str) -> str:
    """The mode without its loop kind: ``achat+uvloop`` -> ``achat``."""
    return mode.partition("+")[0]


def runtime_config(use_uvloop: bool = False) -> Any:
    """The agybridge RuntimeConfig every bridged mode uses; run.py's --runtime-option sets fields.

    inter_agent_delay=0: the default spacing of chat starts (50 ms), a rate limit for model
    APIs, would throttle a service. ``use_uvloop`` is always set: its default is True, so a
    stock row would otherwise run on uvloop wherever uvloop is installed.
    """
    from agybridge import RuntimeConfig

    options: dict[str, Any] = {"inter_agent_delay": 0.0, "max_in_flight": 100_000, "use_uvloop": use_uvloop}
    options.update(json.loads(os.environ.get(RUNTIME_OPTIONS_ENV, "{}")))
    return RuntimeConfig(**options)


def save_metrics(runtime: Any) -> None:
    """Leave the runtime's counters (commands, queue wake-ups) and its loop's kind for run.py.

    run.py checks the loop kind against the mode, so a uvloop row cannot quietly run on stock
    asyncio (nor a stock row on uvloop).
    """
    path = os.environ.get(METRICS_ENV)
    if path:
        metrics = runtime.metrics()
        loop_kind = "uvloop" if type(runtime.loop).__module__.startswith("uvloop") else "asyncio"
        with open(path, "w") as out:
            json.dump({"submitted": metrics.submitted, "wakeups": metrics.wakeups, "loop": loop_kind}, out)


def reply_to(message: str) -> str:
    """The reply body; run.py checks it once per server so a mode cannot answer wrongly and fast."""
    return f"reply to {message}"


class EchoAgent:
    """An agent whose model call is ``asyncio.sleep(delay)``: with delay 0 it answers at once."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def chat(self, message: str) -> str:
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        return reply_to(message)


def message_of(query_string: str) -> str:
    """The ``m=`` parameter of a query string; cheap on purpose, every mode pays the same."""
    for part in query_string.split("&"):
        key, _, value = part.partition("=")
        if key == "m":
            return value
    return "hello"
