"""The one validator per kind of value a caller hands to agybridge.

Durations and agent ids reach the library through the config, the runtime's methods and
the callback API. Each kind is checked here, once, so the same bad value gets the same
typed error naming the parameter wherever it enters.
"""

from __future__ import annotations

import math

from agybridge.errors import ConfigError

__all__ = ["NO_LIMIT", "agent_id", "buffer_size", "call_timeout", "count", "seconds", "timeout_or_default"]

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
    """A stream's buffer, in items: an int >= 1 (``TypeError`` for a non-int, ``ValueError`` below 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"buffer must be an int number of items, not {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"buffer must be >= 1 item, not {value!r}")
    return value
