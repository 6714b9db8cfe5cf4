"""submit(): a concurrent.futures.Future chained to the command's oneshot."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import traceback
from types import ModuleType

import pytest
from conftest import asyncio_host, ctrl_c_once, make_config, remote_probe, settled

from agybridge import CommandFuture, DeadlockError, OperationTimeoutError, PythonRuntime, RuntimeShutdownError


async def square(x: int) -> int:
    await asyncio.sleep(0)
    return x * x


async def fail_deep() -> None:
    await asyncio.sleep(0)
    raise LookupError("remote failure")


def test_futures_work_with_wait_and_as_completed(runtime: PythonRuntime) -> None:
    futures = [runtime.submit(square, i) for i in range(50)]
    assert all(isinstance(f, cf.Future) and isinstance(f, CommandFuture) for f in futures)
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=20)) == [i * i for i in range(50)]
    done, not_done = cf.wait(futures, timeout=20)
    assert len(done) == 50 and not not_done
    failing = runtime.submit(fail_deep)
    done, _ = cf.wait([failing], timeout=20, return_when=cf.FIRST_EXCEPTION)
    assert failing in done
    with pytest.raises(LookupError, match="remote failure") as info:
        failing.result()
    assert "fail_deep" in "".join(traceback.format_tb(info.value.__traceback__))
    seen: list[int] = []
    called = threading.Event()
    runtime.submit(square, 9).add_done_callback(lambda f: (seen.append(f.result()), called.set()))
    assert called.wait(10) and seen == [81]
    metrics = settled(runtime)
    assert metrics.completed == 51 and metrics.failed == 1


def test_future_under_asyncio_wrap_future_and_its_cancellation(runtime: PythonRuntime) -> None:
    long_running, started, cancelled = remote_probe()

    async def host() -> tuple[int, bool]:
        value = await asyncio.wrap_future(runtime.submit(square, 7))
        future = runtime.submit(long_running)
        wrapped = asyncio.wrap_future(future)
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        wrapped.cancel()  # asyncio cancels the concurrent future: our cancel() runs
        try:
            await wrapped
        except asyncio.CancelledError:
            pass
        await asyncio.get_running_loop().run_in_executor(None, cancelled.wait, 10)
        return value, future.cancelled()

    assert asyncio_host(host) == (49, True)
    assert cancelled.is_set()


def test_cancel_cancels_the_task_on_the_runtime_loop(runtime: PythonRuntime) -> None:
    long_running, started, cancelled = remote_probe()
    future = runtime.submit(long_running)
    assert started.wait(10)
    assert future.running() is False  # stays PENDING: a concurrent future is cancellable only then
    assert future.cancel() is True
    assert future.cancel() is True  # idempotent
    assert future.cancelled() and future.done()
    assert cancelled.wait(10), "cancel() did not cancel the remote task"
    done, _ = cf.wait([future], timeout=10)  # wait()/as_completed() are told
    assert future in done
    with pytest.raises(cf.CancelledError):
        future.result()
    runtime.run(square, 0)
    assert settled(runtime).cancelled == 1


def test_cancel_before_the_task_starts_means_it_never_runs(runtime: PythonRuntime) -> None:
    gate = threading.Event()
    loop_blocked = threading.Event()
    ran = threading.Event()

    async def block_loop() -> None:
        loop_blocked.set()
        gate.wait(10)  # holds the loop: later commands stay queued

    async def should_not_run() -> None:
        ran.set()

    blocker = runtime.submit(block_loop)
    assert loop_blocked.wait(10)
    future = runtime.submit(should_not_run)
    assert future.cancel() is True
    gate.set()
    blocker.result(10)
    runtime.run(square, 0)
    assert not ran.is_set()
    assert settled(runtime).cancelled == 1


def test_cancel_that_loses_to_the_result_leaves_the_result(runtime: PythonRuntime) -> None:
    """Cancel at random moments around completion: each command has exactly one outcome.

    Which side wins the random cases depends on the machine's speed, so two kinds of case
    make sure both sides are hit whatever it is: a cancel sent only after the result is in
    must lose, and a cancel sent while the body is held must win.
    """
    executed: list[int] = []
    held = threading.Event()

    async def record(i: int) -> int:
        executed.append(i)
        if i % 7 == 5:
            while not held.is_set():  # held until the test has tried its cancel
                await asyncio.sleep(0.001)
        for _ in range(i % 3):
            await asyncio.sleep(0)  # some finish at once, some after a loop turn or two
        return i

    outcomes = {"cancelled": 0, "result": 0}
    for i in range(400):
        held.clear()
        future = runtime.submit(record, i)
        if i % 7 == 6:
            assert future.result(10) == i  # the result is in: the cancel below must lose
        else:
            for _ in range((i % 7) * 300):
                pass  # cancel before the task starts, while it runs, or after the result
        won = future.cancel()
        held.set()
        if i % 7 == 5:
            assert won, "a cancel sent while the body is held must win"
        if i % 7 == 6:
            assert not won, "a cancel sent after the result must lose"
        if won:
            assert future.cancelled()
            with pytest.raises(cf.CancelledError):
                future.result(10)
            outcomes["cancelled"] += 1
        else:
            assert future.result(10) == i and not future.cancelled()  # the result stays
            assert i in executed
            outcomes["result"] += 1
    metrics = settled(runtime)
    assert metrics.submitted == metrics.finished == 400
    assert metrics.completed == outcomes["result"]
    assert metrics.cancelled == outcomes["cancelled"]
    assert len(executed) == len(set(executed))  # nothing ran twice
    assert metrics.in_flight == 0


def test_submit_is_bounded_by_the_operation_timeout(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(operation_timeout=0.2), core=core).start()
    try:
        long_running, _started, cancelled = remote_probe()
        future = rt.submit(long_running)
        with pytest.raises(OperationTimeoutError, match=r"long_running.*0\.2 s"):
            future.result(10)
        assert cancelled.wait(10)
        custom = rt.wrap(long_running, timeout=0.3).submit(5.0)
        with pytest.raises(OperationTimeoutError, match=r"0\.3 s"):
            custom.result(10)
        assert settled(rt).timed_out == 2
    finally:
        rt.shutdown(timeout=10)


def test_ctrl_c_while_waiting_on_a_future_cancels_the_command(runtime: PythonRuntime) -> None:
    long_running, started, cancelled = remote_probe()
    ctrl_c_once(started)
    futures = []
    with pytest.raises(KeyboardInterrupt):
        # The signal may land in submit() itself, after the push: that cancels the command too.
        futures.append(runtime.submit(long_running))
        futures[0].result(30)
    assert cancelled.wait(10), "Ctrl-C did not cancel the submitted command"
    assert all(future.cancelled() for future in futures)


def test_a_plain_result_timeout_does_not_cancel(runtime: PythonRuntime) -> None:
    long_running, _started, cancelled = remote_probe()
    future = runtime.submit(long_running, 0.5)
    with pytest.raises(cf.TimeoutError):
        future.result(0.05)
    assert future.result(10) == "finished" and not cancelled.is_set()


def test_waiting_on_the_runtime_loop_is_a_deadlock_error(runtime: PythonRuntime) -> None:
    long_running, _started, _cancelled = remote_probe()

    async def on_loop() -> str:
        future = runtime.submit(long_running, 0.1)
        try:
            future.result()
        except DeadlockError as exc:
            return str(exc)
        finally:
            future.cancel()
        return "no error"

    assert "runtime's own thread" in runtime.run(on_loop)

    async def awaited_on_loop() -> int:
        return await asyncio.wrap_future(runtime.submit(square, 3))  # the way to wait there

    assert runtime.run(awaited_on_loop) == 9


def test_shutdown_fails_submitted_futures_and_refuses_new_ones(core: ModuleType) -> None:
    rt = PythonRuntime(make_config(shutdown_grace=0.1), core=core).start()
    long_running, started, cancelled = remote_probe()
    future = rt.submit(long_running)
    assert started.wait(10)
    rt.shutdown(timeout=10)
    with pytest.raises(RuntimeShutdownError):
        future.result(10)
    assert cancelled.is_set()
    with pytest.raises(RuntimeShutdownError):
        rt.submit(square, 1)
    assert rt.metrics().shut_down == 1
