"""``BRIDGE_STATE``: one process-level name, one registry per runtime behind it.

Agent SDKs call back with nothing but an agent id, so the bridge must find the agent's
state from the id alone. Keyed process-wide, two runtimes in one process would have to
agree on agent names, and one could replace, run with or delete the other's state. So each
runtime owns its own :class:`~agybridge.AgentRegistry`, and ``BRIDGE_STATE`` resolves to the
registry of the runtime it is used from. Every callback of a runtime runs on that runtime's
own thread (agent code, async tools on its loop) or in one of its worker threads as that
runtime's (sync tools, hooks, policies: see ``run_as_owner``), where :func:`current_owner`
names the runtime, so the look-up costs one thread-local read.

Off every runtime thread (host threads, host loops, tests, an agent table on a plain loop)
reads search the process's default registry and then every live runtime's registry; an id
found on more than one runtime raises :class:`~agybridge.AgentOwnershipError` naming them.
Writes there go to the default registry only: a runtime's registry is written by that
runtime alone.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from agybridge import _validate
from agybridge._fork import process_lock
from agybridge._origin import current_owner
from agybridge._select import AgentRegistry
from agybridge.errors import AgentOwnershipError, UnknownAgentError

__all__ = ["BRIDGE_STATE", "BridgeStateView", "claim_state", "owner_label", "release_state", "track_runtime"]

_MISSING: Any = object()
# Every runtime made in this process; a runtime reaches the view through its bridge_state.
_RUNTIMES: weakref.WeakSet[Any] = weakref.WeakSet()
# The process these sets describe. In a forked child they describe the parent's runtimes
# (whose registries are dead copies there), so the first use in a new process empties them,
# under that process's own lock: the parent's lock may be held forever by a vanished thread.
_PID = os.getpid()
# Which agent each registered state object belongs to: (id of its registry, agent id). One
# state shared by two agents would let one agent's unregister cancel the other's tool calls
# (from the wrong thread, if they live on two runtimes).
_STATE_OWNERS: weakref.WeakKeyDictionary[Any, tuple[int, str]] = weakref.WeakKeyDictionary()


def _lock() -> threading.Lock:
    """This process's lock over the sets above, after forgetting a parent's entries (by pid)."""
    global _PID
    lock = process_lock("registry")
    if os.getpid() != _PID:
        with lock:
            if os.getpid() != _PID:
                _RUNTIMES.clear()  # rebuilt runtimes add themselves again (agybridge._fork.adopt)
                _STATE_OWNERS.clear()  # the parent's registries own nothing here
                _PID = os.getpid()
    return lock


def track_runtime(runtime: Any) -> None:
    """Make *runtime*'s registry visible to look-ups made off every runtime thread."""
    with _lock():
        _RUNTIMES.add(runtime)


def owner_label(runtime: Any) -> str:
    """How errors name a runtime: its thread name and identity."""
    return f"PythonRuntime {runtime.config.thread_name!r} at {id(runtime):#x}"


def claim_state(state: Any, registry: AgentRegistry, agent_id: str) -> None:
    """Record that *state* belongs to *agent_id* of *registry*; refuse a state owned elsewhere."""
    with _lock():
        owner = _STATE_OWNERS.get(state)
        if owner is not None and owner != (id(registry), agent_id):
            where = "on this runtime" if owner[0] == id(registry) else "on another runtime"
            raise AgentOwnershipError(
                agent_id,
                [owner[1]],
                f"the AgentBridgeState given for agent {agent_id!r} is already registered for agent "
                f"{owner[1]!r} {where}; every agent needs its own AgentBridgeState",
            )
        _STATE_OWNERS[state] = (id(registry), agent_id)


def release_state(state: Any) -> None:
    """*state* no longer belongs to any agent (it was unregistered or replaced)."""
    with _lock():
        _STATE_OWNERS.pop(state, None)


def _runtimes() -> list[Any]:
    with _lock():
        return list(_RUNTIMES)


class BridgeStateView:
    """The registry of the calling runtime; the process default (plus a search) elsewhere.

    It offers the :class:`~agybridge.AgentRegistry` methods. :meth:`current` returns the
    registry itself, for code that wants to hold on to it.
    """

    __slots__ = ("_default",)

    def __init__(self, default: AgentRegistry) -> None:
        self._default = default

    def __repr__(self) -> str:
        return f"<BRIDGE_STATE resolving to {self.current()!r}>"

    @property
    def default(self) -> AgentRegistry:
        """The registry used off every runtime thread (and by agent tables with no runtime)."""
        return self._default

    def current(self) -> AgentRegistry:
        """The calling runtime's registry on its thread; the default registry elsewhere."""
        owner = current_owner()
        if owner is not None:
            registry: AgentRegistry = owner.bridge_state
            return registry
        return self._default

    def _search(self, agent_id: str) -> Any:
        found = self._default.find(agent_id, _MISSING)
        if found is not _MISSING:
            return found
        owners: list[Any] = []
        for runtime in _runtimes():
            state = runtime.bridge_state.find(agent_id, _MISSING)
            if state is not _MISSING:
                owners.append((runtime, state))
        if len(owners) > 1:
            raise AgentOwnershipError(agent_id, [owner_label(runtime) for runtime, _ in owners])
        return owners[0][1] if owners else _MISSING

    # -- reads ------------------------------------------------------------------------------

    def get(self, agent_id: str) -> Any:
        """The state of *agent_id*; :class:`UnknownAgentError` (a ``KeyError``) if absent."""
        agent_id = _validate.agent_id(agent_id)
        owner = current_owner()
        if owner is not None:
            return owner.bridge_state.get(agent_id)
        state = self._search(agent_id)
        if state is _MISSING:
            raise UnknownAgentError(agent_id)
        return state

    def find(self, agent_id: str, default: Any = None) -> Any:
        """The state of *agent_id*, or *default* when it is not registered."""
        agent_id = _validate.agent_id(agent_id)
        owner = current_owner()
        if owner is not None:
            return owner.bridge_state.find(agent_id, default)
        state = self._search(agent_id)
        return default if state is _MISSING else state

    def ids(self) -> list[str]:
        """The registered ids: the calling runtime's, or (elsewhere) every registry's."""
        if current_owner() is not None:
            return self.current().ids()
        ids = self._default.ids()
        for runtime in _runtimes():
            ids.extend(runtime.bridge_state.ids())
        return ids

    def __contains__(self, agent_id: object) -> bool:
        if not isinstance(agent_id, str):
            return False
        return self.find(agent_id, _MISSING) is not _MISSING

    def __len__(self) -> int:
        return len(self.ids())

    # -- writes: the current registry only --------------------------------------------------

    def insert(self, agent_id: str, state: Any, *, replace: bool = False) -> None:
        """Register *state* under *agent_id* in the current registry."""
        self.current().insert(_validate.agent_id(agent_id), state, replace=replace)

    def remove(self, agent_id: str) -> Any:
        """Unregister *agent_id* from the current registry and return its state."""
        return self.current().remove(_validate.agent_id(agent_id))

    def clear(self) -> None:
        """Empty the current registry (a runtime's own agents are left to that runtime)."""
        self.current().clear()


#: Agent id -> :class:`~agybridge.AgentBridgeState`, resolved per runtime: on a runtime's
#: thread it is that runtime's own registry (``runtime.bridge_state``); see above.
BRIDGE_STATE = BridgeStateView(AgentRegistry())
