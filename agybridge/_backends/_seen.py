"""One process-wide, one-way switch: may a blocking caller need more than a plain wait?

Only a host loop (an asyncio loop or trio run that runs async tools) or a thread-sensitive
tool can make a blocking call deadlock or need its caller's thread. Until one exists, the
blocking fast path checks this flag and nothing else.
"""

from __future__ import annotations

#: Flipped to True, for good, by the first host loop or thread-sensitive tool.
caller_checks = False


def enable() -> None:
    """A host loop or thread-sensitive tool exists: blocking callers look at their thread."""
    global caller_checks
    caller_checks = True
