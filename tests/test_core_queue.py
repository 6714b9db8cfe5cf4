"""CommandQueue: nothing lost or duplicated, order per producer, coalesced wake-ups, close."""

from __future__ import annotations

import select
import threading
from types import ModuleType

import pytest
from conftest import _load as load_core

from agybridge.commands import Run
from agybridge.errors import QueueClosedError

PRODUCERS = 8
ITEMS_PER_PRODUCER = 10_000


def test_push_drain_in_order(core: ModuleType) -> None:
    queue = core.CommandQueue(lambda: None)
    for i in range(5):
        queue.push(i)
    assert len(queue) == 5
    assert queue.drain() == [0, 1, 2, 3, 4]
    assert queue.drain() == []
    assert len(queue) == 0


def test_burst_costs_one_wakeup(core: ModuleType) -> None:
    wakes: list[int] = []
    queue = core.CommandQueue(lambda: wakes.append(1))
    for i in range(1000):
        queue.push(i)
    assert queue.wakeups == 1 and len(wakes) == 1
    # The consumer is busy until a drain comes back empty: pushes meanwhile do not wake it.
    assert len(queue.drain()) == 1000
    queue.push("during processing")
    assert queue.wakeups == 1
    assert queue.drain() == ["during processing"]
    assert queue.drain() == []  # now idle
    queue.push("next burst")
    queue.push("next burst 2")
    assert queue.wakeups == 2 and len(wakes) == 2


def test_wake_failure_keeps_item_and_rearms(core: ModuleType) -> None:
    failing = [True]

    def wake() -> None:
        if failing[0]:
            raise RuntimeError("loop is closed")

    queue = core.CommandQueue(wake)
    with pytest.raises(RuntimeError, match="loop is closed"):
        queue.push("a")
    failing[0] = False
    queue.push("b")  # the failed wake disarmed the queue, so this push wakes again
    assert queue.wakeups == 2
    assert queue.drain() == ["a", "b"]


def test_close_hands_back_queued_items_and_refuses_pushes(core: ModuleType) -> None:
    queue = core.CommandQueue(lambda: None)
    queue.push("x")
    queue.push("y")
    assert not queue.closed
    assert queue.close() == ["x", "y"]
    assert queue.closed
    with pytest.raises(QueueClosedError, match="closed"):
        queue.push("z")
    assert queue.drain() == []
    assert queue.close() == []


def test_constructor_requires_callable(core: ModuleType) -> None:
    with pytest.raises(TypeError, match="callable"):
        core.CommandQueue(42)


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_a_queue_without_a_wake_callable_wakes_through_its_own_descriptor(core: ModuleType) -> None:
    queue = core.CommandQueue()
    fd = queue.fileno()
    assert fd >= 0 and not _readable(fd)
    queue.push("a")
    queue.push("b")  # coalesced: the consumer is armed already
    assert _readable(fd)
    assert queue.wakeups == 1
    queue.ack()
    assert not _readable(fd)  # one read consumes the wake-up
    assert queue.drain() == ["a", "b"]
    assert queue.drain() == []  # empty: the consumer is idle again
    queue.push("c")
    assert _readable(fd) and queue.wakeups == 2
    queue.ack()
    assert queue.drain() == ["c"]


def test_a_push_after_the_empty_drain_writes_the_descriptor_again(core: ModuleType) -> None:
    """The consumer acks before draining: a push landing after its empty drain is never stranded."""
    queue = core.CommandQueue()
    queue.push(1)
    queue.ack()
    assert queue.drain() == [1]
    queue.push(2)  # armed still: no new wake-up, but the next drain takes it
    assert queue.drain() == [2]
    assert queue.drain() == []  # disarms
    queue.push(3)
    assert _readable(queue.fileno())


def test_a_callable_queue_has_no_descriptor(core: ModuleType) -> None:
    queue = core.CommandQueue(lambda: None)
    assert queue.fileno() == -1
    queue.ack()  # a no-op


def test_submit_claims_admits_and_counts(core: ModuleType) -> None:
    queue = core.CommandQueue()
    first = Run(_noop, oneshot=core.Oneshot())
    assert queue.submit(first, 1) == -1
    assert first.was_sent and queue.in_flight == 1 and queue.submitted == 1
    assert queue.submit(first, -1) == -2  # sent before
    second = Run(_noop, oneshot=core.Oneshot())
    assert queue.submit(second, 1) == 1  # the bound refuses it, unclaimed
    assert not second.was_sent
    queue.finished_one()
    assert queue.in_flight == 0
    done = core.Oneshot()
    done.set_result(None)
    assert queue.submit(Run(_noop, oneshot=done), -1) == -3
    queue.close()
    with pytest.raises(QueueClosedError):
        queue.submit(Run(_noop, oneshot=core.Oneshot()))
    assert queue.drain() == []


async def _noop() -> None:
    return None


def test_many_producers_nothing_lost_or_duplicated(core: ModuleType) -> None:
    signal = threading.Semaphore(0)
    queue = core.CommandQueue(signal.release)
    received: list[tuple[int, int]] = []
    producers_done = threading.Event()
    start = threading.Barrier(PRODUCERS)

    def producer(pid: int) -> None:
        start.wait(timeout=10)
        for seq in range(ITEMS_PER_PRODUCER):
            queue.push((pid, seq))

    def consumer() -> None:
        total = PRODUCERS * ITEMS_PER_PRODUCER
        while len(received) < total:
            if not signal.acquire(timeout=10):
                raise AssertionError("consumer was never woken: a wake-up was lost")
            while True:
                batch = queue.drain()
                if not batch:
                    break
                received.extend(batch)

    consumer_thread = threading.Thread(target=consumer)
    consumer_thread.start()
    threads = [threading.Thread(target=producer, args=(p,)) for p in range(PRODUCERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    producers_done.set()
    consumer_thread.join(timeout=60)
    assert not consumer_thread.is_alive()

    assert len(received) == PRODUCERS * ITEMS_PER_PRODUCER
    assert len(set(received)) == len(received), "duplicated items"
    last = [-1] * PRODUCERS
    for pid, seq in received:
        assert seq == last[pid] + 1, f"producer {pid} out of order"
        last[pid] = seq
    assert queue.wakeups <= PRODUCERS * ITEMS_PER_PRODUCER
    assert queue.wakeups >= 1


def test_close_races_with_pushes_nothing_lost(core: ModuleType) -> None:
    """Every push either lands in close()'s hand-back / a drain, or raises QueueClosedError."""
    for _round in range(20):
        queue = core.CommandQueue(lambda: None)
        accepted: list[list[int]] = [[] for _ in range(4)]
        barrier = threading.Barrier(5)

        def producer(pid: int) -> None:
            barrier.wait(timeout=10)
            for i in range(2000):
                try:
                    queue.push((pid, i))
                except QueueClosedError:
                    return
                accepted[pid].append(i)

        threads = [threading.Thread(target=producer, args=(p,)) for p in range(4)]
        for t in threads:
            t.start()
        barrier.wait(timeout=10)
        drained = queue.drain()
        drained += queue.close()
        for t in threads:
            t.join(timeout=10)
        assert sorted(drained) == sorted((p, i) for p in range(4) for i in accepted[p])


def test_drain_with_spin_keeps_the_idle_contract(core: ModuleType) -> None:
    wakes: list[int] = []
    queue = core.CommandQueue(lambda: wakes.append(1))
    queue.push("first")
    assert queue.drain() == ["first"]
    pushed = threading.Event()

    def late_producer() -> None:
        pushed.wait(10)
        queue.push("during spin")

    producer = threading.Thread(target=late_producer)
    producer.start()
    pushed.set()
    batch = queue.drain(spin=0.5)
    producer.join(timeout=10)
    if batch:
        # Caught while spinning: the consumer was still busy, so the push cost no wake-up.
        assert batch == ["during spin"] and len(wakes) == 1
        assert core.__name__.endswith("_core"), "the pure twin does not spin"
    else:
        # Not caught: the queue went idle, so the push woke the consumer and is pending.
        assert len(wakes) == 2 and queue.drain() == ["during spin"]
    assert queue.drain(spin=0.001) == []
    queue.push("after idle")
    assert len(wakes) == (2 if batch else 3), "an empty drain(spin) must leave the consumer idle"


def test_compiled_drain_spin_catches_a_push_without_wakeup() -> None:
    core = load_core("cython")  # only the compiled core spins; the twin ignores spin
    for _attempt in range(20):
        wakes: list[int] = []
        queue = core.CommandQueue(lambda: wakes.append(1))
        queue.push(0)
        queue.drain()
        ready = threading.Barrier(2)
        thread = threading.Thread(target=lambda: (ready.wait(10), queue.push("x")))
        thread.start()
        ready.wait(10)
        batch = queue.drain(spin=0.5)  # the push lands well within half a second
        thread.join(timeout=10)
        if batch == ["x"] and len(wakes) == 1:
            return
    raise AssertionError("the spinning drain never caught a push")
