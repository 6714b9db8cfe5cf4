"""Runtime configuration: defaults, environment overrides and validation.

Every value is validated when it is read, and a bad one raises :class:`ConfigError` naming
the field or environment variable and the value: a typo in a timeout must never be
silently replaced by a default, because the runtime would then behave differently from
what the operator believes they configured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from agybridge._validate import count, seconds
from agybridge.errors import ConfigError

__all__ = [
    "CHAT_TIMEOUT_ENV",
    "DEFAULT_CHAT_TIMEOUT_SECS",
    "DEFAULT_INTER_AGENT_DELAY",
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_SHUTDOWN_GRACE_SECS",
    "DEFAULT_THREAD_NAME",
    "OPERATION_TIMEOUT_ENV",
    "OPERATION_TIMEOUT_MARGIN_SECS",
    "RuntimeConfig",
    "default_chat_timeout",
    "default_operation_timeout",
]

#: One ``agent.chat()`` round trip: generous for a normal model turn (tool calls included),
#: short enough that a stalled provider connection is noticed within two minutes.
DEFAULT_CHAT_TIMEOUT_SECS: float = 120.0

#: Minimum spacing, in seconds, between the *starts* of successive chat commands, across
#: all agents. A host that fires N chats at once would otherwise send N requests to the
#: model provider in the same millisecond and trip its burst rate limits; 50 ms spreads
#: them out (at most 20 chat starts per second) while adding nothing noticeable to a
#: single chat. Other command kinds are never delayed by it. The gap is measured between the
#: moments agents are actually called, and the wait counts toward the chat timeout. Set 0 to
#: disable.
DEFAULT_INTER_AGENT_DELAY: float = 0.05

#: Extra time the operation timeout allows beyond the chat timeout: queueing, the
#: inter-agent spacing and the hooks around a chat all happen inside one round trip.
OPERATION_TIMEOUT_MARGIN_SECS: float = 30.0

#: How long ``shutdown()`` lets in-flight commands finish before cancelling them.
DEFAULT_SHUTDOWN_GRACE_SECS: float = 5.0

#: Back-pressure bound: beyond this many commands in flight, sends raise ``RuntimeBusyError``.
DEFAULT_MAX_IN_FLIGHT: int = 100_000

#: Name of the one runtime thread (shows in ``threading.enumerate()``, py-spy, gdb).
DEFAULT_THREAD_NAME: str = "agy-bridge-python-runtime"

CHAT_TIMEOUT_ENV = "AGI_CHAT_TIMEOUT_SECS"
OPERATION_TIMEOUT_ENV = "AGI_OPERATION_TIMEOUT_SECS"


def _seconds_from_env(variable: str, environ: Mapping[str, str] | None) -> float | None:
    """Read a positive number of seconds from *variable*; None when it is unset or empty."""
    env = os.environ if environ is None else environ
    raw = env.get(variable)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"environment variable {variable}={raw!r} is not a number of seconds") from None
    try:
        return seconds(variable, value)
    except ConfigError:
        raise ConfigError(f"environment variable {variable}={raw!r} must be a finite number of seconds > 0") from None


def default_chat_timeout(environ: Mapping[str, str] | None = None) -> float:
    """The chat timeout: ``AGI_CHAT_TIMEOUT_SECS`` if set, else ``DEFAULT_CHAT_TIMEOUT_SECS``.

    A malformed, zero, negative, NaN or infinite value raises :class:`ConfigError`.
    """
    from_env = _seconds_from_env(CHAT_TIMEOUT_ENV, environ)
    return DEFAULT_CHAT_TIMEOUT_SECS if from_env is None else from_env


def default_operation_timeout(chat_timeout: float | None = None, environ: Mapping[str, str] | None = None) -> float:
    """Safety-net bound on one ``send_command`` round trip.

    ``AGI_OPERATION_TIMEOUT_SECS`` if set (validated like the chat timeout); otherwise
    derived as ``chat_timeout + OPERATION_TIMEOUT_MARGIN_SECS`` (150 s with the defaults),
    so a chat always hits its own, more precise, chat timeout first and the round-trip
    bound only fires when something outside the chat stalls.
    """
    from_env = _seconds_from_env(OPERATION_TIMEOUT_ENV, environ)
    if from_env is not None:
        return from_env
    base = default_chat_timeout(environ) if chat_timeout is None else chat_timeout
    return base + OPERATION_TIMEOUT_MARGIN_SECS


@dataclass(frozen=True)
class RuntimeConfig:
    """Configuration of one :class:`~agybridge.PythonRuntime`; every field is validated.

    Frozen and hashable, so one config may be shared by several runtimes and read from any
    thread. Each field is documented below; :doc:`configuration` has them at a glance with the
    environment variables.

    ``operation_timeout=None`` means "derive it": ``AGI_OPERATION_TIMEOUT_SECS`` if set, else the
    chat timeout plus :data:`OPERATION_TIMEOUT_MARGIN_SECS`. After construction it is always a
    float.

    :raises ConfigError: a field (or an environment variable a default is read from) has a bad
        value: a duration that is not a positive finite number of seconds (zero is allowed for
        ``inter_agent_delay``, ``shutdown_grace`` and the spins), a spin above 0.01 s, an empty
        ``thread_name``, a non-bool ``use_uvloop``, a count below 1, or an ``after_fork`` other than
        ``"restart"`` and ``"error"``. The message names the
        field and the value.
    """

    #: Bound on one ``agent.chat()`` call, in seconds.
    chat_timeout: float = field(default_factory=default_chat_timeout)
    #: Bound on one command round trip (submit to result), in seconds; None derives it.
    operation_timeout: float | None = None
    #: Minimum spacing between chat starts, across all agents (0 disables).
    inter_agent_delay: float = DEFAULT_INTER_AGENT_DELAY
    #: Default grace period of ``shutdown()`` for in-flight commands.
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE_SECS
    #: Name of the runtime thread.
    thread_name: str = DEFAULT_THREAD_NAME
    #: Run the loop on uvloop when it is installed (ignored when it is not).
    use_uvloop: bool = True
    #: Back-pressure, a hard bound: a send beyond this many commands in flight (queued,
    #: drained or running) raises ``RuntimeBusyError`` and schedules nothing.
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    #: Worker threads for synchronous tools, hooks and policies. They are daemon threads: a
    #: tool still running at exit never holds up the process (it is abandoned).
    worker_threads: int = 16
    #: Items a stream's producer may run ahead of its consumer, at least 1; a stream's
    #: ``buffer`` option overrides it (see :meth:`PythonRuntime.stream`).
    stream_buffer: int = 64
    #: Seconds a blocking caller polls for its result (GIL released) before parking on a
    #: lock. Parking and being woken costs an OS wake-up, tens of microseconds on an idle
    #: core; a short poll turns fast round trips into a fraction of that. At most
    #: cores - 1 threads spin at once, so callers never starve the runtime thread, and
    #: only a caller whose command is alone in flight, with no other thread waiting, spins:
    #: behind other work the answer is not microseconds away. 0 disables.
    caller_spin: float = 50e-6
    #: Seconds the idle runtime loop polls the command queue before sleeping in its
    #: selector, so a caller's next command is picked up without a wake-up. Only when no
    #: other callback is ready. Off by default: with callers spinning too, two spinners
    #: and the GIL hand-offs between them thrash a 2-core machine (the site's performance
    #: page, docs/performance.md, has the figures). Worth trying where the runtime thread has a core to itself
    #: and callers send back to back. 0 disables.
    loop_spin: float = 0.0
    #: What a runtime made before a ``fork()`` does in the child. ``"restart"``: on its first use
    #: there it starts afresh (a new thread and loop, metrics at zero) and registers the parent's
    #: agents again from their factories and states; nothing of the parent's in-flight work or
    #: held contexts comes along. ``"error"``: a runtime that was started before the fork raises
    #: ``ForkedRuntimeError`` in the child. A runtime never started before the fork works in the
    #: child either way, as if made there.
    after_fork: str = "restart"

    def __post_init__(self) -> None:
        chat = seconds("chat_timeout", self.chat_timeout)
        object.__setattr__(self, "chat_timeout", chat)
        if self.operation_timeout is None:
            operation = default_operation_timeout(chat)
        else:
            operation = seconds("operation_timeout", self.operation_timeout)
        object.__setattr__(self, "operation_timeout", operation)
        object.__setattr__(
            self, "inter_agent_delay", seconds("inter_agent_delay", self.inter_agent_delay, allow_zero=True)
        )
        object.__setattr__(self, "shutdown_grace", seconds("shutdown_grace", self.shutdown_grace, allow_zero=True))
        for name in ("caller_spin", "loop_spin"):
            spin = seconds(name, getattr(self, name), allow_zero=True)
            if spin > 0.01:
                raise ConfigError(f"{name} must be at most 0.01 s (it burns a core while it lasts), not {spin!r}")
            object.__setattr__(self, name, spin)
        if not isinstance(self.thread_name, str) or not self.thread_name.strip():
            raise ConfigError(f"thread_name must be a non-empty string, not {self.thread_name!r}")
        if not isinstance(self.use_uvloop, bool):
            raise ConfigError(f"use_uvloop must be a bool, not {self.use_uvloop!r}")
        for name in ("max_in_flight", "worker_threads", "stream_buffer"):
            count(name, getattr(self, name))
        if self.after_fork not in ("restart", "error"):
            raise ConfigError(f"after_fork must be 'restart' or 'error', not {self.after_fork!r}")

    @property
    def round_trip_timeout(self) -> float:
        """An alias of :attr:`operation_timeout`, kept so code written for 0.1 and 0.2 keeps working.

        ``operation_timeout`` is the one name of this bound; agybridge itself no longer reads the
        alias. It is typed ``float`` (``operation_timeout`` is never None after construction).
        """
        assert self.operation_timeout is not None
        return self.operation_timeout
