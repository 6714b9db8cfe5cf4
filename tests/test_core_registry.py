"""AgentRegistry: look-ups, typed errors, concurrent readers and writers."""

from __future__ import annotations

import pickle
import threading
from types import ModuleType

import pytest

from agybridge.errors import AgentAlreadyRegisteredError, UnknownAgentError


def test_insert_get_remove(core: ModuleType) -> None:
    registry = core.AgentRegistry()
    state = object()
    registry.insert("alpha", state)
    assert registry.get("alpha") is state
    assert registry.find("alpha") is state
    assert "alpha" in registry and "beta" not in registry
    assert len(registry) == 1
    assert registry.ids() == ["alpha"]
    assert registry.remove("alpha") is state
    assert len(registry) == 0 and registry.find("alpha", "dflt") == "dflt"


def test_unknown_agent_error_names_the_id(core: ModuleType) -> None:
    registry = core.AgentRegistry()
    with pytest.raises(UnknownAgentError) as info:
        registry.get("ghost-7")
    assert isinstance(info.value, KeyError)
    assert info.value.agent_id == "ghost-7"
    assert "'ghost-7'" in str(info.value)
    with pytest.raises(UnknownAgentError, match="ghost-8"):
        registry.remove("ghost-8")
    clone = pickle.loads(pickle.dumps(info.value))
    assert type(clone) is UnknownAgentError and clone.agent_id == "ghost-7"


def test_duplicate_insert_is_refused_unless_replace(core: ModuleType) -> None:
    registry = core.AgentRegistry()
    registry.insert("a", 1)
    with pytest.raises(AgentAlreadyRegisteredError, match="'a'"):
        registry.insert("a", 2)
    assert registry.get("a") == 1
    registry.insert("a", 3, replace=True)
    assert registry.get("a") == 3


@pytest.mark.parametrize(("bad", "error"), [(None, TypeError), (7, TypeError), ("", ValueError)])
def test_bad_ids_are_rejected(core: ModuleType, bad: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="agent_id must be"):
        core.AgentRegistry().insert(bad, 1)


def test_clear(core: ModuleType) -> None:
    registry = core.AgentRegistry()
    for i in range(3):
        registry.insert(f"a{i}", i)
    registry.clear()
    assert len(registry) == 0


def test_concurrent_inserts_exactly_one_wins(core: ModuleType) -> None:
    registry = core.AgentRegistry()
    barrier = threading.Barrier(8)
    winners: list[int] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        barrier.wait(timeout=10)
        try:
            registry.insert("contested", index)
        except AgentAlreadyRegisteredError:
            return
        with lock:
            winners.append(index)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(winners) == 1
    assert registry.get("contested") == winners[0]


def test_readers_see_consistent_state_while_writers_churn(core: ModuleType) -> None:
    registry = core.AgentRegistry()
    for i in range(100):
        registry.insert(f"stable-{i}", i)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        n = 0
        while not stop.is_set():
            registry.insert(f"churn-{n % 50}", n, replace=True)
            registry.find(f"churn-{(n + 25) % 50}")
            try:
                registry.remove(f"churn-{(n + 10) % 50}")
            except UnknownAgentError:
                pass
            n += 1

    def reader() -> None:
        try:
            for _ in range(20_000):
                i = _ % 100
                assert registry.get(f"stable-{i}") == i
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    writers = [threading.Thread(target=writer) for _ in range(2)]
    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in writers + readers:
        t.start()
    for t in readers:
        t.join(timeout=30)
    stop.set()
    for t in writers:
        t.join(timeout=30)
    assert errors == []
