"""``agent()``: a handle to call any async method of a registered agent.

A handle is a name, not a reference: each call looks the agent up on the runtime loop
(so a replaced agent is reached, and an unregistered one fails with
``UnknownAgentError``) and runs the method there as one ``CallAgent`` command, with the
usual round-trip timeout, cancellation, Ctrl-C and shutdown behaviour. The handle has a
blocking face and an ``.aio`` face for asyncio and trio callers, as synchronicity's
objects do; a method reached by name carries its own ``.aio`` too, as a wrapped function
does (``await handle.summarize.aio(text)`` is ``await handle.aio.summarize(text)``).

Typing: ``handle.call(MyAgent.summarize, text)`` is checked against the method's
signature (the handle is generic over the agent type given to ``runtime.agent(id,
MyAgent)``); ``handle.summarize(text)`` reaches the same method by name, unchecked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from agybridge import _validate
from agybridge._caller.send import Sender
from agybridge.commands import CallAgent, Chat

__all__ = ["AgentHandle", "AgentMethod", "AioAgentHandle"]

A = TypeVar("A")
P = ParamSpec("P")
T = TypeVar("T")


def _method_name(method: object) -> str:
    name = method if isinstance(method, str) else getattr(method, "__name__", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"call() needs a method of the agent or its name, not {type(method).__name__} {method!r}")
    if name.startswith("_"):
        raise AttributeError(f"{name!r} is private: agent handles call public methods only")
    return name


class _HandleBase(Generic[A]):
    __slots__ = ("_agent_id", "_agent_type", "_sender", "_timeout")

    def __init__(self, sender: Sender, agent_id: str, agent_type: type[A] | None, timeout: float | None) -> None:
        self._sender = sender
        self._agent_id = _validate.agent_id(agent_id)
        if agent_type is not None and not isinstance(agent_type, type):
            raise TypeError(f"agent_type must be a class, not {type(agent_type).__name__} {agent_type!r}")
        self._agent_type = agent_type
        self._timeout = None if timeout is None else _validate.call_timeout("timeout", timeout)

    @property
    def agent_id(self) -> str:
        """The id of the agent this handle calls."""
        return self._agent_id

    def _command(self, method: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallAgent:
        return CallAgent(
            self._agent_id,
            _method_name(method),
            args,
            kwargs,
            agent_type=self._agent_type,
            oneshot=self._sender.oneshot(),
        )

    def __repr__(self) -> str:
        kind = f" {self._agent_type.__qualname__}" if self._agent_type is not None else ""
        return f"<{type(self).__name__} {self._agent_id!r}{kind}>"


class AgentHandle(_HandleBase[A]):
    """A handle on one registered agent; the blocking face.

    Made by :meth:`PythonRuntime.agent`. ``handle.method(*args)`` calls ``await
    agent.method(*args)`` on the runtime loop as one :class:`CallAgent` command and blocks until
    it finishes; :meth:`call` is the same, type-checked against the method's signature when the
    handle was made with the agent's class. The handle is a name, not a reference: each call looks
    the agent up, so a replaced agent is reached and an unregistered one raises
    :class:`UnknownAgentError`. Calls follow :meth:`PythonRuntime.run`'s thread rules and errors;
    calls in flight fail with :class:`CommandCancelledError` when the agent is unregistered or
    replaced. ``handle.method`` is an :class:`AgentMethod`, whose ``.aio`` awaits the same call
    (``await handle.summarize.aio(text)``), as a wrapped function's does. Methods named like the
    handle's own (``chat``, ``call``, ``aio``, ``agent_id``) are reached with
    ``handle.call("name", ...)``, awaited with ``handle.aio.chat`` and ``handle.aio.call``.
    """

    __slots__ = ()

    @property
    def aio(self) -> AioAgentHandle[A]:
        """The same handle for asyncio and trio callers: ``await handle.aio.chat(...)``."""
        return AioAgentHandle(self._sender, self._agent_id, self._agent_type, self._timeout)

    def chat(self, message: str) -> str:
        """One chat turn, exactly as :meth:`PythonRuntime.chat`: hooks, the chat timeout and the
        inter-agent spacing apply, and the handle's timeout bounds the round trip.

        :returns: the agent's reply.
        :raises UnknownAgentError: no agent is registered under the handle's id.
        :raises ChatTimeoutError: the chat turn outlasted ``config.chat_timeout``.
        """
        reply: str = self._sender.send(Chat(self._agent_id, message, oneshot=self._sender.oneshot()), self._timeout)
        return reply

    @overload
    def call(self, method: Callable[Concatenate[A, P], Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T: ...

    @overload
    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def call(self, method: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``await agent.<method>(*args, **kwargs)`` on the runtime loop and block until it returns.

        :param method: the agent class's function (``MyAgent.summarize``: checked by a type checker)
            or its name; either way the method is looked up on the registered agent.
        :returns: what the method returned.
        :raises Exception: what the method raised.
        :raises UnknownAgentError: no agent is registered under the handle's id.
        :raises AttributeError: the agent has no such method.
        :raises TypeError: the handle was typed with a class the registered agent is not an instance
            of.
        :raises OperationTimeoutError: the call outlasted the handle's timeout (the method is
            cancelled).
        """
        return self._sender.send(self._command(method, args, kwargs), self._timeout)

    def __getattr__(self, name: str) -> AgentMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        return AgentMethod(self, name)


class AgentMethod:
    """One method of an agent, reached by name on an :class:`AgentHandle`: ``handle.summarize``.

    Calling it blocks, as :meth:`AgentHandle.call` with the method's name; :meth:`aio` awaits the
    same call, as a wrapped function's ``.aio`` does, so ``await handle.summarize.aio(text)`` and
    ``await handle.aio.summarize(text)`` are one call. Unchecked by a type checker (the method
    is found by name); use ``handle.call(MyAgent.summarize, ...)`` for a checked call.
    """

    __slots__ = ("_handle", "_name")

    def __init__(self, handle: AgentHandle[Any], name: str) -> None:
        self._handle = handle
        self._name = name

    def __repr__(self) -> str:
        return f"<AgentMethod {self._name!r} of {self._handle!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``handle.call(name, *args, **kwargs)``: run the method on the runtime loop and block."""
        return self._handle.call(self._name, *args, **kwargs)

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        """``await handle.aio.call(name, *args, **kwargs)``: the same call, awaited from asyncio or trio."""
        return await self._handle.aio.call(self._name, *args, **kwargs)


class AioAgentHandle(_HandleBase[A]):
    """The awaitable face of an :class:`AgentHandle`: ``await handle.aio.summarize(text)``.

    Await its calls from any asyncio loop or from trio; cancelling the await cancels the method on
    the runtime loop. Otherwise as :class:`AgentHandle`.
    """

    __slots__ = ()

    async def chat(self, message: str) -> str:
        """:meth:`AgentHandle.chat`, awaited (as :meth:`PythonRuntime.achat`)."""
        reply: str = await self._sender.asend(
            Chat(self._agent_id, message, oneshot=self._sender.oneshot()), self._timeout
        )
        return reply

    @overload
    async def call(
        self, method: Callable[Concatenate[A, P], Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T: ...

    @overload
    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    async def call(self, method: Any, /, *args: Any, **kwargs: Any) -> Any:
        """:meth:`AgentHandle.call`, awaited; cancelling the await cancels the method on the runtime loop."""
        return await self._sender.asend(self._command(method, args, kwargs), self._timeout)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def method(*args: Any, **kwargs: Any) -> Any:
            return await self.call(name, *args, **kwargs)

        return method
