"""The one validator per kind of value a caller hands to agybridge.

Durations and agent ids reach the library through the config, the runtime's methods and
the callback API. Each kind is checked here, once, so the same bad value gets the same
typed error naming the parameter wherever it enters.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import types

from agybridge.errors import ConfigError

__all__ = [
    "NO_LIMIT",
    "agent_id",
    "buffer_size",
    "call_timeout",
    "coroutine_function",
    "count",
    "seconds",
    "timeout_or_default",
]

#: What ``timeout=math.inf`` becomes: no limit, as in trio and anyio (a wait this long is
#: still a finite number every lock and clock can take: about 31 years).
NO_LIMIT = 1e9


def seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Return *value* as a finite number of seconds > 0 (>= 0 with *allow_zero*).

    Raises :class:`ConfigError` (a ``ValueError``) naming *name* for a non-number, a bool,
    NaN, an infinity, a number too large for a float, or a value out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds, not {type(value).__name__} {value!r}")
    try:
        result = float(value)
    except OverflowError:
        size = f"an integer of {value.bit_length()} bits" if isinstance(value, int) else repr(value)
        raise ConfigError(f"{name} must be a finite number of seconds, not {size}") from None
    if math.isnan(result) or math.isinf(result):
        raise ConfigError(f"{name} must be a finite number of seconds, not {value!r}")
    if result < 0 or (result == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {bound} seconds, not {value!r}")
    return result


def call_timeout(name: str, value: object) -> float:
    """A per-call bound given by the caller: seconds > 0, or ``math.inf`` for no limit."""
    if isinstance(value, float) and value == math.inf:
        return NO_LIMIT
    return seconds(name, value)


def timeout_or_default(value: float | None, default: float, name: str = "timeout") -> float:
    """A per-call bound: *default* when None, else seconds > 0 (``math.inf``: no limit)."""
    return default if value is None else call_timeout(name, value)


def agent_id(value: object, name: str = "agent_id") -> str:
    """Return *value* if it is a non-empty str; else a ``TypeError``/``ValueError`` naming *name*.

    Checked before any map look-up, so an unhashable id is reported as a wrong type
    instead of surfacing as ``TypeError: unhashable type`` from deep inside a dict. A str
    subclass is turned into a plain str: its own ``__hash__``/``__eq__`` would otherwise
    run inside the registry's lock (and could re-enter it, or raise anything there).
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__} {value!r}")
    if type(value) is not str:
        value = str.__str__(value)
    if not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def count(name: str, value: object, error: type[Exception] = ConfigError) -> int:
    """Return *value* if it is an int >= 1 (not a bool); else *error* naming *name*."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise error(f"{name} must be an int >= 1, not {value!r}")
    return value


def buffer_size(value: object) -> int:
    """A stream's buffer, in items: an int from 1 to ``sys.maxsize``.

    ``TypeError`` for a non-int; :class:`ConfigError` (a ``ValueError``) below 1 or above
    ``sys.maxsize``, the most a channel can count, so the error comes when the option is
    given, not as an ``OverflowError`` at the first read.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"buffer must be an int number of items, not {type(value).__name__} {value!r}")
    if value < 1:
        raise ConfigError(f"buffer must be >= 1 item, not {value!r}")
    if value > sys.maxsize:
        raise ConfigError(f"buffer must be at most sys.maxsize ({sys.maxsize}) items, not {value!r}")
    return value


def _is_sync_function(fn: object) -> bool:
    """True only when *fn* is certainly a plain (not ``async def``) Python function or method.

    Anything else (a coroutine function, an object with an ``async def __call__``, a compiled
    callable whose kind cannot be seen) is given the benefit of the doubt.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    if not isinstance(fn, types.FunctionType):
        call = getattr(type(fn), "__call__", None)  # noqa: B004 - the class's own __call__
        if isinstance(fn, type) or not isinstance(call, types.FunctionType):
            return False
        fn = call
    return not (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn))


#: ``async def`` code: a coroutine or an async generator function (``inspect.CO_*``).
_ASYNC_CODE = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def coroutine_function(what: str, fn: object) -> None:
    """Refuse, before anything runs, a callable that is certainly not a coroutine function.

    ``run(sync_fn)`` would otherwise call *sync_fn* on the runtime loop (blocking it, and
    running its side effects) and only then fail on its non-awaitable result. Every send of
    a :class:`~agybridge.Run` passes here, so the common case (a plain ``async def``
    function) is settled by one look at its code flags.
    """
    if type(fn) is types.FunctionType and fn.__code__.co_flags & _ASYNC_CODE:
        return
    if not callable(fn):
        raise TypeError(f"{what} needs a coroutine function, not {type(fn).__name__} {fn!r}")
    if _is_sync_function(fn):
        name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        raise TypeError(
            f"{what} needs a coroutine function (async def), but {name} is a plain function, whose result "
            "is not awaitable (and calling it would run it on the runtime loop); make it 'async def'"
        )
