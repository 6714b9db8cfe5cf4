"""``agent()``: a handle to call any async method of a registered agent.

A handle is a name, not a reference: each call looks the agent up on the runtime loop
(so a replaced agent is reached, and an unregistered one fails with
``UnknownAgentError``) and runs the method there as one ``CallAgent`` command, with the
usual round-trip timeout, cancellation, Ctrl-C and shutdown behaviour. The handle has a
blocking face and an ``.aio`` face for asyncio and trio callers, as synchronicity's
objects do.

Typing: ``handle.call(MyAgent.summarize, text)`` is checked against the method's
signature (the handle is generic over the agent type given to ``runtime.agent(id,
MyAgent)``); ``handle.summarize(text)`` reaches the same method by name, unchecked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from agybridge import _validate
from agybridge.commands import CallAgent, Chat

if TYPE_CHECKING:
    from agybridge.runtime import PythonRuntime

__all__ = ["AgentHandle", "AioAgentHandle"]

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
    __slots__ = ("_agent_id", "_agent_type", "_runtime", "_timeout")

    def __init__(
        self, runtime: PythonRuntime, agent_id: str, agent_type: type[A] | None, timeout: float | None
    ) -> None:
        self._runtime = runtime
        self._agent_id = _validate.agent_id(agent_id)
        if agent_type is not None and not isinstance(agent_type, type):
            raise TypeError(f"agent_type must be a class, not {type(agent_type).__name__} {agent_type!r}")
        self._agent_type = agent_type
        self._timeout = None if timeout is None else _validate.seconds("timeout", timeout)

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
            oneshot=self._runtime.core.Oneshot(),
        )

    def __repr__(self) -> str:
        kind = f" {self._agent_type.__qualname__}" if self._agent_type is not None else ""
        return f"<{type(self).__name__} {self._agent_id!r}{kind}>"


class AgentHandle(_HandleBase[A]):
    """The blocking face: every method call blocks until the agent's coroutine finishes."""

    __slots__ = ()

    @property
    def aio(self) -> AioAgentHandle[A]:
        """The same handle for asyncio and trio callers: ``await handle.aio.chat(...)``."""
        return AioAgentHandle(self._runtime, self._agent_id, self._agent_type, self._timeout)

    def chat(self, message: str) -> str:
        """One chat turn, exactly as :meth:`PythonRuntime.chat` (hooks, chat timeout, spacing)."""
        reply: str = self._runtime.send_command(
            Chat(self._agent_id, message, oneshot=self._runtime.core.Oneshot()), self._timeout
        )
        return reply

    @overload
    def call(self, method: Callable[Concatenate[A, P], Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T: ...

    @overload
    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def call(self, method: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``await agent.<method>(*args, **kwargs)`` on the runtime loop (blocking).

        *method* is the agent class's function (``MyAgent.summarize``: checked by a type
        checker) or its name; either way the method is looked up on the registered agent.
        """
        return self._runtime.send_command(self._command(method, args, kwargs), self._timeout)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.call(name, *args, **kwargs)


class AioAgentHandle(_HandleBase[A]):
    """The awaitable face: ``await handle.aio.summarize(text)`` from asyncio or trio."""

    __slots__ = ()

    async def chat(self, message: str) -> str:
        """One chat turn, exactly as :meth:`PythonRuntime.achat`."""
        reply: str = await self._runtime.asend_command(
            Chat(self._agent_id, message, oneshot=self._runtime.core.Oneshot()), self._timeout
        )
        return reply

    @overload
    async def call(
        self, method: Callable[Concatenate[A, P], Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T: ...

    @overload
    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    async def call(self, method: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Await ``agent.<method>(*args, **kwargs)`` on the runtime loop."""
        return await self._runtime.asend_command(self._command(method, args, kwargs), self._timeout)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def method(*args: Any, **kwargs: Any) -> Any:
            return await self.call(name, *args, **kwargs)

        return method
