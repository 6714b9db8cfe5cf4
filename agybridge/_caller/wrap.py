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


def _carry_metadata(wrapper: object, fn: object) -> None:
    """What ``functools.wraps`` carries (``__name__``, ``__qualname__``, ``__doc__``,
    ``__module__``, ``__wrapped__``, fn's ``__dict__``), plus ``__self__`` of a bound method."""
    functools.update_wrapper(wrapper, fn)  # type: ignore[arg-type]
    owner = getattr(fn, "__self__", None)
    if owner is not None:
        wrapper.__self__ = owner  # type: ignore[attr-defined]


class Wrapped(Generic[P, T]):
    """``fn`` made blocking: ``wrapped(*args)`` runs ``await fn(*args)`` on the runtime loop.

    Made by :meth:`PythonRuntime.wrap`, never directly. ``wrapped.aio(*args)`` is the same call
    for asyncio and trio callers, and ``wrapped.submit(*args)`` returns a
    :class:`concurrent.futures.Future` instead of blocking. Used as a decorator on a method, the
    wrapper binds like the function it wraps: ``obj.method(...)`` blocks, ``obj.method.aio(...)``
    is awaitable. Both faces carry *fn*'s metadata as ``functools.wraps`` does (``__name__``,
    ``__qualname__``, ``__doc__``, ``__module__``, ``__wrapped__``, and ``__self__`` for a bound
    method). A plain ``def`` function is refused (:class:`TypeError`) when wrapped. The wrapper
    holds no state of its own and may be shared by any number of threads.
    """

    def __init__(self, sender: Sender, fn: Callable[P, Awaitable[T]], timeout: float | None = None) -> None:
        _validate.coroutine_function("wrap()", fn)
        # The metadata first, our own attributes after: update_wrapper copies fn's __dict__,
        # which must never override the wrapper's timeout (or anything else of ours).
        _carry_metadata(self, fn)
        self._sender = sender
        self._fn = fn
        self._timeout = None if timeout is None else _validate.call_timeout("timeout", timeout)
        self._aio: AioWrapped[P, T] | None = None
        # Looked up once: a call then costs what run() costs, one Run and one send_command.
        self._oneshot = sender.oneshot
        self._send = sender.send

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
        aio = self._aio
        if aio is None:
            aio = self._aio = AioWrapped(self._sender, self._fn, self._timeout)
        return aio

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
    from trio. It carries *fn*'s metadata as the blocking face does.
    """

    def __init__(self, sender: Sender, fn: Callable[P, Awaitable[T]], timeout: float | None) -> None:
        _carry_metadata(self, fn)
        self._sender = sender
        self._fn = fn
        self._timeout = timeout

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        """:meth:`Wrapped.__call__`, awaited (as :meth:`PythonRuntime.arun`); cancelling the await cancels the call."""
        sender = self._sender
        cmd = Run(self._fn, args, kwargs, oneshot=sender.oneshot())
        result: T = await sender.asend(cmd, self._timeout)
        return result
