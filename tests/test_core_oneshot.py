"""Oneshot: exactly-once completion, waits, callbacks, exceptions, interrupts."""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from conftest import _load as load_core
from conftest import ctrl_c_soon

from agybridge.errors import CommandCancelledError, WaitTimeoutError

THREADS = 8


def test_first_completion_wins_across_threads(core: ModuleType) -> None:
    for _round in range(50):
        shot = core.Oneshot()
        barrier = threading.Barrier(THREADS)
        wins: list[int] = []
        lock = threading.Lock()

        def complete(index: int) -> None:
            barrier.wait(timeout=10)
            kind = index % 3
            if kind == 0:
                won = shot.set_result(index)
            elif kind == 1:
                won = shot.set_exception(ValueError(index))
            else:
                won = shot.cancel()
            if won:
                with lock:
                    wins.append(index)

        threads = [threading.Thread(target=complete, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert len(wins) == 1, wins
        winner = wins[0]
        assert shot.done()
        if winner % 3 == 0:
            assert shot.result(timeout=0) == winner
        elif winner % 3 == 1:
            with pytest.raises(ValueError) as info:
                shot.result(timeout=0)
            assert info.value.args == (winner,)
        else:
            assert shot.cancelled()
            with pytest.raises(CommandCancelledError):
                shot.result(timeout=0)


def test_later_completions_return_false_and_keep_the_first(core: ModuleType) -> None:
    shot = core.Oneshot()
    assert shot.set_result("first") is True
    assert shot.set_result("second") is False
    assert shot.set_exception(RuntimeError("late")) is False
    assert shot.cancel() is False
    assert shot.result() == "first"
    assert shot.exception() is None
    assert not shot.cancelled()


def test_result_waits_for_another_thread(core: ModuleType) -> None:
    shot = core.Oneshot()
    started = threading.Event()

    def producer() -> None:
        started.wait(timeout=10)
        shot.set_result(42)

    thread = threading.Thread(target=producer)
    thread.start()
    started.set()
    assert shot.result(timeout=10) == 42
    thread.join(timeout=10)


def test_many_waiters_all_wake(core: ModuleType) -> None:
    shot = core.Oneshot()
    results: list[object] = []
    lock = threading.Lock()
    ready = threading.Barrier(THREADS + 1)

    def waiter() -> None:
        ready.wait(timeout=10)
        value = shot.result(timeout=10)
        with lock:
            results.append(value)

    threads = [threading.Thread(target=waiter) for _ in range(THREADS)]
    for t in threads:
        t.start()
    ready.wait(timeout=10)
    shot.set_result("go")
    for t in threads:
        t.join(timeout=10)
    assert results == ["go"] * THREADS


def test_wait_timeout(core: ModuleType) -> None:
    shot = core.Oneshot()
    assert shot.wait(timeout=0) is False
    assert shot.wait(timeout=0.01) is False
    with pytest.raises(WaitTimeoutError) as info:
        shot.result(timeout=0.01)
    assert isinstance(info.value, TimeoutError)
    with pytest.raises(TimeoutError):
        shot.exception(timeout=0)
    shot.set_result(None)
    assert shot.wait(timeout=0) is True
    assert shot.wait() is True


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan")])
def test_bad_timeouts_are_rejected(core: ModuleType, bad: float) -> None:
    shot = core.Oneshot()
    with pytest.raises(ValueError, match="timeout"):
        shot.wait(bad)
    with pytest.raises(ValueError, match="timeout"):
        shot.result(bad)


def test_wait_releases_the_gil(core: ModuleType) -> None:
    """While one thread waits, others keep running Python code and can complete it."""
    shot = core.Oneshot()
    waiting = threading.Event()
    outcome: list[object] = []

    def waiter() -> None:
        waiting.set()
        outcome.append(shot.result(timeout=10))

    thread = threading.Thread(target=waiter)
    thread.start()
    assert waiting.wait(timeout=10)
    total = sum(range(100_000))  # runs while the waiter is blocked
    shot.set_result(total)
    thread.join(timeout=10)
    assert outcome == [total]


def test_callbacks_before_and_after_completion_run_once(core: ModuleType) -> None:
    shot = core.Oneshot()
    calls: list[tuple[str, object, int]] = []
    shot.add_done_callback(lambda s: calls.append(("before-1", s, threading.get_ident())))
    shot.add_done_callback(lambda s: calls.append(("before-2", s, threading.get_ident())))
    assert calls == []

    completer_ident: list[int] = []

    def complete() -> None:
        completer_ident.append(threading.get_ident())
        shot.set_result(1)
        shot.set_result(2)  # a losing completion must not run callbacks again
        shot.cancel()

    thread = threading.Thread(target=complete)
    thread.start()
    thread.join(timeout=10)
    assert [c[0] for c in calls] == ["before-1", "before-2"]
    assert all(c[1] is shot for c in calls)
    assert all(c[2] == completer_ident[0] for c in calls), "callbacks run on the completing thread"

    shot.add_done_callback(lambda s: calls.append(("after", s, threading.get_ident())))
    assert [c[0] for c in calls] == ["before-1", "before-2", "after"]
    assert calls[-1][2] == threading.get_ident(), "late callbacks run at once on the adding thread"


def test_callbacks_race_with_completion_each_called_once(core: ModuleType) -> None:
    for _round in range(30):
        shot = core.Oneshot()
        counts = [0] * 200
        lock = threading.Lock()
        barrier = threading.Barrier(3)

        def adder(offset: int) -> None:
            barrier.wait(timeout=10)
            for i in range(offset, offset + 100):

                def bump(_s: object, i: int = i) -> None:
                    with lock:
                        counts[i] += 1

                shot.add_done_callback(bump)

        def completer() -> None:
            barrier.wait(timeout=10)
            shot.set_result(None)

        threads = [threading.Thread(target=adder, args=(0,)), threading.Thread(target=adder, args=(100,))]
        threads.append(threading.Thread(target=completer))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert counts == [1] * 200


def test_callback_exception_is_logged_and_others_still_run(core: ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    shot = core.Oneshot()
    ran: list[str] = []

    def bad(_s: object) -> None:
        raise RuntimeError("callback boom")

    shot.add_done_callback(bad)
    shot.add_done_callback(lambda _s: ran.append("good"))
    with caplog.at_level("ERROR", logger="agybridge"):
        assert shot.set_result(1) is True
    assert ran == ["good"]
    assert shot.result() == 1
    assert any("callback boom" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    assert any(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in caplog.records)


def test_add_done_callback_rejects_non_callables(core: ModuleType) -> None:
    with pytest.raises(TypeError, match="callable"):
        core.Oneshot().add_done_callback(42)


def _raise_deep() -> None:
    raise LookupError("deep failure")


def test_exception_carried_intact(core: ModuleType) -> None:
    shot = core.Oneshot()

    def producer() -> None:
        try:
            _raise_deep()
        except LookupError as exc:
            shot.set_exception(exc)

    thread = threading.Thread(target=producer)
    thread.start()
    thread.join(timeout=10)
    with pytest.raises(LookupError, match="deep failure") as info:
        shot.result(timeout=10)
    assert type(info.value) is LookupError
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "_raise_deep" in frames and "producer" in frames
    assert shot.exception() is info.value


def test_set_exception_accepts_a_class_and_rejects_non_exceptions(core: ModuleType) -> None:
    shot = core.Oneshot()
    with pytest.raises(TypeError, match="exception"):
        shot.set_exception("not an exception")  # type: ignore[arg-type]
    assert not shot.done()
    assert shot.set_exception(KeyError) is True
    assert isinstance(shot.exception(), KeyError)


def test_cancel(core: ModuleType) -> None:
    shot = core.Oneshot()
    assert shot.cancel() is True
    assert shot.cancelled() and shot.done()
    with pytest.raises(CommandCancelledError):
        shot.result()
    with pytest.raises(CommandCancelledError):
        shot.exception()


def test_repr_names_the_state(core: ModuleType) -> None:
    shot = core.Oneshot()
    assert "pending" in repr(shot)
    shot.cancel()
    assert "cancelled" in repr(shot)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signal delivery")
@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs the main thread")
def test_ctrl_c_interrupts_a_blocked_wait(core: ModuleType) -> None:
    shot = core.Oneshot()
    with ctrl_c_soon(), pytest.raises(KeyboardInterrupt):
        shot.result(timeout=30)
    assert not shot.done()


def test_wait_with_spin(core: ModuleType) -> None:
    shot = core.Oneshot()
    assert shot.wait(timeout=0.01, spin=0.005) is False
    ready = threading.Barrier(2)
    thread = threading.Thread(target=lambda: (ready.wait(10), shot.set_result("spun")))
    thread.start()
    ready.wait(10)
    assert shot.wait(timeout=10, spin=0.001) is True
    assert shot.result() == "spun"
    thread.join(timeout=10)


def test_set_max_spinners(core: ModuleType) -> None:
    with pytest.raises(ValueError):
        core.set_max_spinners(-1)
    core.set_max_spinners(0)  # spinning disabled: waits still work
    try:
        shot = core.Oneshot()
        threading.Timer(0.01, shot.set_result, args=(1,)).start()
        assert shot.wait(timeout=10, spin=0.5) is True
    finally:
        core.set_max_spinners(max(0, (os.cpu_count() or 1) - 1))  # the import-time default


def _cpu_spent_waiting(shot: Any, seconds: float) -> float:
    began = time.thread_time()
    shot.wait(timeout=seconds, spin=seconds)
    return time.thread_time() - began


def _eventually(check: Callable[[], bool], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
    return False


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: the spinner cap is 0, nobody spins")
def test_compiled_core_spins_only_for_a_lone_waiter() -> None:
    core = load_core("cython")  # the twin never spins
    idle = core.Oneshot()  # never completed: every wait runs its spin out
    # A lone waiter burns CPU while it spins (retried: a busy machine can deschedule it).
    assert _eventually(lambda: _cpu_spent_waiting(idle, 0.1) > 0.02), "a lone waiter never spun"
    other = core.Oneshot()
    parked = threading.Thread(target=other.wait, args=(30,))
    parked.start()
    try:
        # Once the other thread is inside its wait, this one parks at once instead of spinning.
        assert _eventually(lambda: _cpu_spent_waiting(idle, 0.1) < 0.005), "spun beside another waiter"
    finally:
        other.set_result(None)
        parked.join(timeout=10)
    assert not parked.is_alive()


def test_each_core_declares_its_implementation() -> None:
    import agybridge
    from agybridge import _select

    assert load_core("python").IMPLEMENTATION == "python"
    assert load_core("cython").IMPLEMENTATION == "cython"
    assert _select.IMPLEMENTATION == _select.core.IMPLEMENTATION == agybridge.IMPLEMENTATION


def test_repeated_raises_keep_the_original_traceback(core: ModuleType) -> None:
    shot = core.Oneshot()
    try:
        _raise_deep()
    except LookupError as exc:
        shot.set_exception(exc)
    via_result: set[int] = set()
    via_exception: set[int] = set()
    for _ in range(100):
        with pytest.raises(LookupError) as info:
            shot.result()
        frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
        assert "_raise_deep" in frames
        via_result.add(len(frames))
        with pytest.raises(LookupError) as info:
            raise shot.exception()  # type: ignore[misc]
        via_exception.add(len(traceback.extract_tb(info.value.__traceback__)))
    assert len(via_result) == 1 and len(via_exception) == 1, (via_result, via_exception)
    tb = shot.exception().__traceback__  # type: ignore[union-attr]
    assert "_raise_deep" in [frame.name for frame in traceback.extract_tb(tb)]
