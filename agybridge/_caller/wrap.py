"""``wrap()``: an async function as a typed blocking callable, with an ``.aio`` face.

The wrapper keeps *fn*'s exact parameters (``ParamSpec``) and return type, so a type
checker flags a wrong argument at the call site; its options (the timeout) are given to
``wrap()`` once and never share the call's namespace, so *fn* may have a parameter named
``timeout`` of its own. Each call is one ``Run`` command, exactly what ``run()`` sends:
same queue, same dispatcher, same guarantees, same cost.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from agybridge import _validate
from agybridge._caller.futures import CommandFuture, Deadline
from agybridge._caller.send import Sender
from agybridge.commands import Run

if TYPE_CHECKING:
    from typing_extensions import Self


__all__ = ["AioWrapped", "Wrapped"]

P = ParamSpec("P")
P2 = ParamSpec("P2")
T = TypeVar("T")
S = TypeVar("S")


class Wrapped(Generic[P, T]):
    """``fn`` made blocking: ``wrapped(*args)`` runs ``await fn(*args)`` on the runtime loop.

    Made by :meth:`PythonRuntime.wrap`, never directly. ``wrapped.aio(*args)`` is the same call
    for asyncio and trio callers, and ``wrapped.submit(*args)`` returns a
    :class:`concurrent.futures.Future` instead of blocking. Used as a decorator on a method, the
    wrapper binds like the function it wraps: ``obj.method(...)`` blocks, ``obj.method.aio(...)``
    is awaitable. It keeps *fn*'s ``__name__``, ``__doc__`` and ``__wrapped__``. The wrapper holds
    no state of its own and may be shared by any number of threads.
    """

    def __init__(self, sender: Sender, fn: Callable[P, Awaitable[T]], timeout: float | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"wrap() needs a coroutine function, not {type(fn).__name__} {fn!r}")
        self._sender = sender
        self._fn = fn
        self._timeout = None if timeout is None else _validate.call_timeout("timeout", timeout)
        # Looked up once: a call then costs what run() costs, one Run and one send_command.
        self._oneshot = sender.oneshot
        self._send = sender.send
        functools.update_wrapper(self, fn)  # __name__, __doc__, __wrapped__ for introspection

    def __repr__(self) -> str:
        return f"<agybridge wrapper of {getattr(self._fn, '__qualname__', self._fn)!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await fn(*args, **kwargs)`` on the runtime loop and block until its result.

        Exactly :meth:`PythonRuntime.run` (one :class:`Run` command), with the wrapper's timeout:
        the same thread rules (any thread but the runtime's own; Ctrl-C cancels the call) and the
        same errors, among them *fn*'s own exception, :class:`OperationTimeoutError`,
        :class:`RuntimeShutdownError`, :class:`RuntimeBusyError` and :class:`DeadlockError`.
        """
        result: T = self._send(Run(self._fn, args, kwargs, oneshot=self._oneshot()), self._timeout)
        return result

    @property
    def aio(self) -> AioWrapped[P, T]:
        """The same call, awaitable from asyncio (any loop) or trio: ``await wrapped.aio(*args)``."""
        return AioWrapped(self._sender, self._fn, self._timeout)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> CommandFuture[T]:
        """Start the call and return its future at once; see :meth:`PythonRuntime.submit`.

        The wrapper's timeout (or ``config.operation_timeout``) bounds the command on the runtime
        loop. Never blocks, so it may be called from any thread or loop.

        :returns: a :class:`CommandFuture` of *fn*'s result.
        :raises RuntimeShutdownError: the runtime is shut down.
        :raises RuntimeBusyError: ``config.max_in_flight`` commands are already in flight.
        """
        sender = self._sender
        limit = sender.operation_timeout if self._timeout is None else self._timeout
        cmd = Run(Deadline(self._fn, limit), args, kwargs, oneshot=sender.oneshot())
        future: CommandFuture[T] = sender.submit_future(cmd)
        return future

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Self: ...

    @overload
    def __get__(self: Wrapped[Concatenate[S, P2], T], obj: S, owner: type[Any] | None = None) -> Wrapped[P2, T]: ...

    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        if obj is None:
            return self
        bound: Callable[..., Awaitable[T]] = self._fn.__get__(obj, owner)
        return Wrapped(self._sender, bound, self._timeout)


class AioWrapped(Generic[P, T]):
    """The ``.aio`` face of a :class:`Wrapped`: ``await wrapped.aio(*args)``.

    Stateless and shareable; its calls may be awaited from any asyncio loop, in any thread, or
    from trio.
    """

    __slots__ = ("_fn", "_sender", "_timeout")

    def __init__(self, sender: Sender, fn: Callable[P, Awaitable[T]], timeout: float | None) -> None:
        self._sender = sender
        self._fn = fn
        self._timeout = timeout

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        """:meth:`Wrapped.__call__`, awaited (as :meth:`PythonRuntime.arun`); cancelling the await cancels the call."""
        sender = self._sender
        cmd = Run(self._fn, args, kwargs, oneshot=sender.oneshot())
        result: T = await sender.asend(cmd, self._timeout)
        return result
