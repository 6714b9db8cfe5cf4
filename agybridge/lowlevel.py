"""The building blocks under :class:`~agybridge.PythonRuntime`, for code that drives them itself.

As ``trio.lowlevel`` does for trio: the compiled core's primitives (a single-assignment
:class:`~agybridge.Oneshot`, the multi-producer :class:`~agybridge.CommandQueue`, the bounded
stream :class:`~agybridge.Channel`, the :class:`~agybridge.AgentRegistry`) and the command
classes a caller may build and hand to :meth:`~agybridge.PythonRuntime.send_command`.
:data:`~agybridge.IMPLEMENTATION` names the core in use (``"cython"`` or ``"python"``). Every
name here is also importable from :mod:`agybridge`, and documented there.
"""

from agybridge._select import IMPLEMENTATION, AgentRegistry, Channel, CommandQueue, Oneshot
from agybridge.commands import (
    CallAgent,
    Chat,
    ChatStream,
    PyCommand,
    RegisterAgent,
    Run,
    Shutdown,
    Stream,
    UnregisterAgent,
)

__all__ = [
    "IMPLEMENTATION",
    "AgentRegistry",
    "CallAgent",
    "Channel",
    "Chat",
    "ChatStream",
    "CommandQueue",
    "Oneshot",
    "PyCommand",
    "RegisterAgent",
    "Run",
    "Shutdown",
    "Stream",
    "UnregisterAgent",
]
