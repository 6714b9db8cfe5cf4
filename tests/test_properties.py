"""Property-based tests: the core types against simple models, on both implementations.

Hypothesis generates sequences of operations (completions, callbacks, waits; pushes,
drains, closes; inserts, removes, look-ups) and checks every step against a model that is
obviously right.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from conftest import IMPLEMENTATIONS, _load
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agybridge.errors import (
    AgentAlreadyRegisteredError,
    CommandCancelledError,
    QueueClosedError,
    UnknownAgentError,
)

SETTINGS = settings(max_examples=60, stateful_step_count=40, deadline=None)


def oneshot_machine(core: ModuleType) -> type[RuleBasedStateMachine]:
    class OneshotModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.shot = core.Oneshot()
            self.outcome: tuple[str, Any] | None = None
            self.calls: list[int] = []
            self.registered = 0

        @rule(value=st.integers())
        def set_result(self, value: int) -> None:
            won = self.shot.set_result(value)
            assert won == (self.outcome is None)
            if won:
                self.outcome = ("result", value)

        @rule(message=st.text(max_size=5))
        def set_exception(self, message: str) -> None:
            won = self.shot.set_exception(KeyError(message))
            assert won == (self.outcome is None)
            if won:
                self.outcome = ("exception", message)

        @rule()
        def cancel(self) -> None:
            won = self.shot.cancel()
            assert won == (self.outcome is None)
            if won:
                self.outcome = ("cancelled", None)

        @rule()
        def add_callback(self) -> None:
            index = self.registered
            self.registered += 1
            self.shot.add_done_callback(lambda _s: self.calls.append(index))

        @rule()
        def wait_zero(self) -> None:
            assert self.shot.wait(0) == (self.outcome is not None)

        @invariant()
        def consistent(self) -> None:
            assert self.shot.done() == (self.outcome is not None)
            assert self.shot.cancelled() == (self.outcome is not None and self.outcome[0] == "cancelled")
            if self.outcome is None:
                assert self.calls == []
                return
            # Every callback ran exactly once, in registration order.
            assert self.calls == list(range(self.registered))
            kind, value = self.outcome
            if kind == "result":
                assert self.shot.result(0) == value
            elif kind == "exception":
                with pytest.raises(KeyError) as info:
                    self.shot.result(0)
                assert info.value.args == (value,)
            else:
                with pytest.raises(CommandCancelledError):
                    self.shot.result(0)

    return OneshotModel


def queue_machine(core: ModuleType) -> type[RuleBasedStateMachine]:
    class QueueModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.wakes = 0
            self.queue = core.CommandQueue(self._wake)
            self.model: list[int] = []
            self.armed = False
            self.closed = False
            self.counter = 0

        def _wake(self) -> None:
            self.wakes += 1

        @rule()
        def push(self) -> None:
            self.counter += 1
            if self.closed:
                with pytest.raises(QueueClosedError):
                    self.queue.push(self.counter)
                return
            self.queue.push(self.counter)
            self.model.append(self.counter)
            self.armed = True

        @rule()
        def drain(self) -> None:
            got = self.queue.drain()
            assert got == self.model
            if not self.model:
                self.armed = False
            self.model = []

        @rule()
        def close(self) -> None:
            assert self.queue.close() == self.model
            self.model = []
            self.closed = True
            self.armed = False

        @invariant()
        def consistent(self) -> None:
            assert len(self.queue) == len(self.model)
            assert self.queue.closed == self.closed
            assert self.queue.wakeups == self.wakes
            # A wake-up is owed whenever items wait and the consumer was idle: never stranded.
            if self.model:
                assert self.wakes >= 1

    return QueueModel


def registry_machine(core: ModuleType) -> type[RuleBasedStateMachine]:
    ids = st.sampled_from(["a", "b", "c", "d"])

    class RegistryModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.registry = core.AgentRegistry()
            self.model: dict[str, int] = {}

        @rule(agent_id=ids, value=st.integers(), replace=st.booleans())
        def insert(self, agent_id: str, value: int, replace: bool) -> None:
            if agent_id in self.model and not replace:
                with pytest.raises(AgentAlreadyRegisteredError):
                    self.registry.insert(agent_id, value, replace=replace)
                return
            self.registry.insert(agent_id, value, replace=replace)
            self.model[agent_id] = value

        @rule(agent_id=ids)
        def remove(self, agent_id: str) -> None:
            if agent_id not in self.model:
                with pytest.raises(UnknownAgentError):
                    self.registry.remove(agent_id)
                return
            assert self.registry.remove(agent_id) == self.model.pop(agent_id)

        @rule(agent_id=ids)
        def get(self, agent_id: str) -> None:
            if agent_id in self.model:
                assert self.registry.get(agent_id) == self.model[agent_id]
            else:
                with pytest.raises(UnknownAgentError):
                    self.registry.get(agent_id)
            assert self.registry.find(agent_id, -1) == self.model.get(agent_id, -1)

        @precondition(lambda self: bool(self.model))
        @rule()
        def clear(self) -> None:
            self.registry.clear()
            self.model.clear()

        @invariant()
        def consistent(self) -> None:
            assert len(self.registry) == len(self.model)
            assert sorted(self.registry.ids()) == sorted(self.model)
            for agent_id in "abcd":
                assert (agent_id in self.registry) == (agent_id in self.model)

    return RegistryModel


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("machine", [oneshot_machine, queue_machine, registry_machine])
@pytest.mark.timeout(120)
def test_model(implementation: str, machine: Any) -> None:
    core = _load(implementation)
    test_case = machine(core).TestCase
    test_case.settings = SETTINGS
    test_case().runTest()
