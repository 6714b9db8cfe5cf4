"""The commands every contender runs: trivial, so the bridge itself is what gets measured."""

from __future__ import annotations

import asyncio

__all__ = ["noop", "yield_once"]


async def noop() -> int:
    return 1


async def yield_once() -> int:
    """Suspends once: the command cannot finish inline, it has to be scheduled."""
    await asyncio.sleep(0)
    return 1
