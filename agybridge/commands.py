"""The commands a caller sends to the runtime thread (the ``PyCommand`` variants).

A command is immutable data plus the :class:`~agybridge.Oneshot` its caller waits on, and
the caller's ``contextvars`` context, captured when the command is made so that the task
on the runtime loop sees the caller's context variables. Commands do not know how they are
executed: the runtime maps each type to its handler.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from agybridge import _validate
from agybridge._agent_state import AgentBridgeState
from agybridge._select import Channel, Oneshot

__all__ = [
    "CallAgent",
    "Chat",
    "ChatStream",
    "PyCommand",
    "RegisterAgent",
    "Run",
    "Shutdown",
    "Stream",
    "UnregisterAgent",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})

#: sniffio's "which async library runs this task" variable, found once sniffio is imported.
_sniffio_var: contextvars.ContextVar[Any] | None = None


def caller_context() -> contextvars.Context:
    """A copy of the caller's context for a command, minus sniffio's library variable.

    Everything else crosses, but sniffio's variable names the *caller's* library (``anyio.run``
    under trio sets it to ``"trio"``): code on the runtime loop (anyio, httpx, every SDK that asks
    sniffio) must see ``"asyncio"``, so the variable is reset, as anyio's own thread bridge does.
    Costs one dict look-up until sniffio is imported.
    """
    global _sniffio_var
    ctx = contextvars.copy_context()
    var = _sniffio_var
    if var is None:
        sniffio = sys.modules.get("sniffio")
        var = getattr(sniffio, "current_async_library_cvar", None) if sniffio is not None else None
        if var is None:
            return ctx
        _sniffio_var = var
    if ctx.get(var) is not None:
        ctx.run(var.set, None)
    return ctx


def callable_name(fn: object) -> str:
    """A readable name for *fn* in messages: its qualified name, or its class's for an object."""
    name = getattr(fn, "__qualname__", None) or getattr(type(fn), "__qualname__", None)
    return str(name) if name else repr(fn)


class PyCommand:
    """Base class of every command: a oneshot to complete and the caller's context.

    Commands are immutable (setting an attribute raises ``AttributeError``) and single-use: a
    second send, from any thread and to any runtime, raises :class:`~agybridge.CommandReusedError`.
    Build them on any thread; the context captured at construction is the one the command's task
    and every callback it causes run in, so build a command on the thread (or in the task) whose
    context variables it should carry.

    :param oneshot: the :class:`~agybridge.Oneshot` the outcome goes to (default: a new one of
        the selected core; the runtime's helpers pass one of the runtime's own core).

    Attributes (read-only): ``oneshot``; ``context``, the :class:`contextvars.Context` copied
    when the command was made (sniffio's library variable reset, so code on the runtime loop
    sees asyncio); ``agent_id``, the agent the command is about (None for
    :class:`Run` and :class:`Stream`).
    """

    __slots__ = ("_unsent", "context", "oneshot")

    oneshot: Oneshot
    context: contextvars.Context
    # One token, popped when the command is first sent: ``list.pop`` is atomic, so of any
    # number of racing senders exactly one gets it (see :meth:`claim`).
    _unsent: list[None]
    #: The agent the command is about, if any (used in error messages and metrics).
    agent_id: str | None = None

    def __init__(self, *, oneshot: Oneshot | None = None) -> None:
        _init_command(self, oneshot)

    def claim(self) -> bool:
        """Mark the command sent; True for the first caller only, from any number of racing threads.

        The runtime calls it on every send; a False makes the send raise
        :class:`~agybridge.CommandReusedError`.
        """
        try:
            self._unsent.pop()
        except IndexError:
            return False
        return True

    @property
    def was_sent(self) -> bool:
        """True once the command was claimed by a send (a command is single-use)."""
        return not self._unsent

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def describe(self) -> str:
        """A short human-readable name for messages, such as ``Chat(agent='a1')``; never calls a user
        ``__repr__``.
        """
        return f"{type(self).__name__}()"

    def __repr__(self) -> str:
        return f"<{self.describe()} {self.oneshot!r}>"


def _slot_setters(cls: type, *names: str) -> tuple[Callable[[Any, Any], None], ...]:
    """The ``__set__`` of *cls*'s own slots *names*, bypassing its refusing ``__setattr__``.

    A command is built on every send: a slot's setter, taken once, is about a third cheaper
    than ``object.__setattr__`` (which looks the slot up again on every call).
    """
    return tuple(vars(cls)[name].__set__ for name in names)


_set_oneshot, _set_context, _set_unsent = _slot_setters(PyCommand, "oneshot", "context", "_unsent")


def _init_command(cmd: PyCommand, oneshot: Oneshot | None) -> None:
    """What every command's ``__init__`` does first (the fields of :class:`PyCommand`)."""
    _set_oneshot(cmd, Oneshot() if oneshot is None else oneshot)
    _set_context(cmd, caller_context())
    _set_unsent(cmd, [None])


class Chat(PyCommand):
    """Send *message* to the agent registered as *agent_id*; the result is its reply.

    What :meth:`~agybridge.PythonRuntime.chat` sends: one chat turn with its hooks, bounded by the
    chat timeout and spaced by the inter-agent delay.

    :param agent_id: the agent's id (attribute ``agent_id``).
    :param message: the message (attribute ``message``).
    :param oneshot: the :class:`~agybridge.Oneshot` the outcome goes to (default: a new one of
        the selected core; the runtime's helpers pass one of the runtime's own core).
    :raises TypeError: *agent_id* or *message* is not a str.
    :raises ValueError: *agent_id* is empty.
    """

    __slots__ = ("agent_id", "message")

    agent_id: str
    message: str

    def __init__(self, agent_id: str, message: str, *, oneshot: Oneshot | None = None) -> None:
        _init_command(self, oneshot)
        if not isinstance(message, str):
            raise TypeError(f"chat message must be a str, not {type(message).__name__}")
        _set_chat_agent(self, _validate.agent_id(agent_id))
        _set_chat_message(self, message)

    def describe(self) -> str:
        return f"Chat(agent={self.agent_id!r})"


_set_chat_agent, _set_chat_message = _slot_setters(Chat, "agent_id", "message")


class Run(PyCommand):
    """Run ``await fn(*args, **kwargs)`` on the runtime loop; the result is what it returned.

    What :meth:`~agybridge.PythonRuntime.run`, :meth:`~agybridge.PythonRuntime.wrap` and
    :meth:`~agybridge.PythonRuntime.submit` send. *fn* must return an awaitable: a plain
    ``def`` function is refused here, before anything runs; any other callable whose result is
    not awaitable fails with :class:`TypeError` when the command runs.

    :param fn: the coroutine function (attribute ``fn``).
    :param args: its positional arguments (attribute ``args``, a tuple).
    :param kwargs: its keyword arguments (attribute ``kwargs``, a read-only mapping).
    :param oneshot: the :class:`~agybridge.Oneshot` the outcome goes to (default: a new one of
        the selected core; the runtime's helpers pass one of the runtime's own core).
    :raises TypeError: *fn* is not callable, or is a plain (not ``async def``) function.
    """

    __slots__ = ("args", "fn", "kwargs")

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        oneshot: Oneshot | None = None,
    ) -> None:
        _init_command(self, oneshot)
        _validate.coroutine_function("run()", fn)  # refused before anything runs
        _set_run_fn(self, fn)
        _set_run_args(self, args if type(args) is tuple else tuple(args))
        _set_run_kwargs(self, MappingProxyType(dict(kwargs)) if kwargs else _EMPTY)

    def describe(self) -> str:
        return f"Run({callable_name(self.fn)})"


_set_run_fn, _set_run_args, _set_run_kwargs = _slot_setters(Run, "fn", "args", "kwargs")


class Stream(PyCommand):
    """Stream the items of ``fn(*args, **kwargs)`` (an async iterable) into *channel*.

    What :meth:`~agybridge.PythonRuntime.stream` and :meth:`~agybridge.PythonRuntime.astream`
    send. The command's result is None once the producer has finished; the items travel through
    the :class:`~agybridge.Channel`, which the runtime ends with the command's outcome.

    :param fn: an async generator function, or a callable returning an async iterable or a
        coroutine of one (attribute ``fn``).
    :param args: its positional arguments (attribute ``args``).
    :param kwargs: its keyword arguments (attribute ``kwargs``, a read-only mapping).
    :param channel: the channel the items go to (attribute ``channel``).
    :param oneshot: the :class:`~agybridge.Oneshot` the outcome goes to (default: a new one of
        the selected core; the runtime's helpers pass one of the runtime's own core).
    :raises TypeError: *fn* is not callable.
    """

    __slots__ = ("args", "channel", "fn", "kwargs")

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    channel: Channel

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any] | None,
        channel: Channel,
        *,
        oneshot: Oneshot | None = None,
    ) -> None:
        super().__init__(oneshot=oneshot)
        if not callable(fn):
            raise TypeError(f"stream() needs an async generator function, not {type(fn).__name__} {fn!r}")
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "args", tuple(args))
        object.__setattr__(self, "kwargs", MappingProxyType(dict(kwargs)) if kwargs else _EMPTY)
        object.__setattr__(self, "channel", channel)

    def describe(self) -> str:
        return f"Stream({callable_name(self.fn)})"


class ChatStream(PyCommand):
    """Stream agent *agent_id*'s reply to *message* into *channel*, chunk by chunk.

    What :meth:`~agybridge.PythonRuntime.chat_stream` and
    :meth:`~agybridge.PythonRuntime.achat_stream` send: a chat turn like :class:`Chat`, whose reply
    arrives as str chunks through the channel.

    :param agent_id: the agent's id (attribute ``agent_id``).
    :param message: the message (attribute ``message``).
    :param channel: the channel the chunks go to (attribute ``channel``).
    :param oneshot: the :class:`~agybridge.Oneshot` the outcome goes to (default: a new one of
        the selected core; the runtime's helpers pass one of the runtime's own core).
    :raises TypeError: *agent_id* or *message* is not a str.
    :raises ValueError: *agent_id* is empty.
    """

    __slots__ = ("agent_id", "channel", "message")

    agent_id: str
    message: str
    channel: Channel

    def __init__(self, agent_id: str, message: str, channel: Channel, *, oneshot: Oneshot | None = None) -> None:
        super().__init__(oneshot=oneshot)
        if not isinstance(message, str):
            raise TypeError(f"chat message must be a str, not {type(message).__name__}")
        object.__setattr__(self, "agent_id", _validate.agent_id(agent_id))
        object.__setattr__(self, "message", message)
        object.__setattr__(self, "channel", channel)

    def describe(self) -> str:
        return f"ChatStream(agent={self.agent_id!r})"


class CallAgent(PyCommand):
    """Await ``agent.<method>(*args, **kwargs)`` on the agent registered as *agent_id*.

    What an :class:`~agybridge.AgentHandle` sends. The method is looked up by name on the runtime
    loop when the command runs (:class:`UnknownAgentError`, or ``AttributeError`` if it has no
    such method). With *agent_type*, the registered agent must be an instance of it
    (:class:`TypeError` otherwise): a handle typed for one class must not silently call a
    same-named method of another.

    :param agent_id: the agent's id (attribute ``agent_id``).
    :param method: the method's name (attribute ``method``).
    :param args: its positional arguments (attribute ``args``).
    :param kwargs: its keyword arguments (attribute ``kwargs``, a read-only mapping).
    :param agent_type: the class the agent must be an instance of, or None (attribute
        ``agent_type``).
    :param oneshot: the :class:`~agybridge.Oneshot` the outcome goes to (default: a new one of
        the selected core; the runtime's helpers pass one of the runtime's own core).
    :raises TypeError: *agent_id* is not a str, or *method* is not a non-empty str.
    :raises ValueError: *agent_id* is empty.
    """

    __slots__ = ("agent_id", "agent_type", "args", "kwargs", "method")

    agent_id: str
    method: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    agent_type: type[Any] | None

    def __init__(
        self,
        agent_id: str,
        method: str,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        agent_type: type[Any] | None = None,
        oneshot: Oneshot | None = None,
    ) -> None:
        super().__init__(oneshot=oneshot)
        if not isinstance(method, str) or not method:
            raise TypeError(f"method must be a non-empty str, not {type(method).__name__} {method!r}")
        object.__setattr__(self, "agent_id", _validate.agent_id(agent_id))
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "args", tuple(args))
        object.__setattr__(self, "kwargs", MappingProxyType(dict(kwargs)) if kwargs else _EMPTY)
        object.__setattr__(self, "agent_type", agent_type)

    def describe(self) -> str:
        return f"CallAgent(agent={self.agent_id!r}, method={self.method!r})"


class RegisterAgent(PyCommand):
    """Create an agent on the runtime loop with ``factory()`` and install its bridge state.

    What :meth:`~agybridge.PythonRuntime.register_agent` sends. *factory* is called on the runtime
    loop (it may be a coroutine function), so the agent and everything it creates belong to that
    loop.

    :param agent_id: the agent's id (attribute ``agent_id``).
    :param factory: a zero-argument callable returning the agent (attribute ``factory``).
    :param state: its :class:`~agybridge.AgentBridgeState`, or None (attribute ``state``).
    :param replace: replace an agent registered under the same id (attribute ``replace``).
    :param oneshot: the :class:`~agybridge.Oneshot` the outcome goes to (default: a new one of
        the selected core; the runtime's helpers pass one of the runtime's own core).
    :raises TypeError: *agent_id* is not a str, or *factory* is not callable.
    :raises ValueError: *agent_id* is empty.
    """

    __slots__ = ("agent_id", "factory", "replace", "state")

    agent_id: str
    factory: Callable[[], Any]
    state: AgentBridgeState | None
    replace: bool

    def __init__(
        self,
        agent_id: str,
        factory: Callable[[], Any],
        state: AgentBridgeState | None = None,
        *,
        replace: bool = False,
        oneshot: Oneshot | None = None,
    ) -> None:
        super().__init__(oneshot=oneshot)
        if not callable(factory):
            raise TypeError(f"agent factory must be callable, not {type(factory).__name__}")
        object.__setattr__(self, "agent_id", _validate.agent_id(agent_id))
        object.__setattr__(self, "factory", factory)
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "replace", bool(replace))

    def describe(self) -> str:
        return f"RegisterAgent(agent={self.agent_id!r})"


class UnregisterAgent(PyCommand):
    """Remove an agent: its in-flight chats and tool calls fail, then it is closed.

    What :meth:`~agybridge.PythonRuntime.unregister_agent` sends.

    :param agent_id: the agent's id (attribute ``agent_id``).
    :param oneshot: the :class:`~agybridge.Oneshot` the outcome goes to (default: a new one of
        the selected core; the runtime's helpers pass one of the runtime's own core).
    :raises TypeError: *agent_id* is not a str.
    :raises ValueError: *agent_id* is empty.
    """

    __slots__ = ("agent_id",)

    agent_id: str

    def __init__(self, agent_id: str, *, oneshot: Oneshot | None = None) -> None:
        super().__init__(oneshot=oneshot)
        object.__setattr__(self, "agent_id", _validate.agent_id(agent_id))

    def describe(self) -> str:
        return f"UnregisterAgent(agent={self.agent_id!r})"


class Shutdown(PyCommand):
    """Stop the runtime: in-flight work gets *grace* seconds, then is cancelled.

    :meth:`~agybridge.PythonRuntime.send_command` with it is :meth:`~agybridge.PythonRuntime.shutdown`
    with that grace. It is delivered to the loop directly, not through the command queue, because
    the queue is closed first (refusing new work and handing back what was queued is one atomic
    step).

    :param grace: seconds in-flight commands may still finish (attribute ``grace``).
    :param oneshot: the :class:`~agybridge.Oneshot` the outcome goes to (default: a new one of
        the selected core; the runtime's helpers pass one of the runtime's own core).
    """

    __slots__ = ("grace",)

    grace: float

    def __init__(self, grace: float, *, oneshot: Oneshot | None = None) -> None:
        super().__init__(oneshot=oneshot)
        object.__setattr__(self, "grace", grace)

    def describe(self) -> str:
        return f"Shutdown(grace={self.grace})"
