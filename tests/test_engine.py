"""gilfree's own machinery seen from the public API: function caching, chunking, crashes, and
messages bigger than a ring."""

from __future__ import annotations

import signal
import time

import pytest

from conftest import create_executor
from support import tasks
from support.limits import RESULT_TIMEOUT

pytestmark = pytest.mark.gilfree_only


@pytest.mark.process_only
def test_a_function_reaches_each_worker_once(start_method):
    probe = tasks.CountedCallable()
    with create_executor(max_workers=1, start_method=start_method) as executor:
        counts = [executor.submit(probe).result(timeout=RESULT_TIMEOUT) for _ in range(20)]
        counts += list(executor.map(probe, range(50)))
    assert set(counts) == {1}


@pytest.mark.process_only
def test_a_killed_worker_fails_only_its_task_and_says_how_it_died(start_method):
    from gilfree import WorkerCrashedError

    with create_executor(max_workers=2, start_method=start_method) as executor:
        doomed = executor.submit(tasks.kill_self, signal.SIGKILL)
        with pytest.raises(WorkerCrashedError) as caught:
            doomed.result(timeout=RESULT_TIMEOUT)
        message = str(caught.value)
        assert "SIGKILL" in message
        assert "tasks.kill_self" in message
        assert "pid" in message
        assert [
            executor.submit(tasks.square, n).result(timeout=RESULT_TIMEOUT) for n in range(4)
        ] == [0, 1, 4, 9]


@pytest.mark.parametrize("size", [0, 1, 4 << 20, 9 << 20])
def test_arguments_and_results_larger_than_a_ring_arrive_whole(shared_executor, size):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert shared_executor.submit(tasks.byte_len, data).result(timeout=RESULT_TIMEOUT) == size
    echoed = shared_executor.submit(tasks.make_bytes, size).result(timeout=RESULT_TIMEOUT)
    assert echoed == b"\xab" * size


def test_map_over_a_range_and_a_generator_give_the_same_results(shared_executor):
    numbers = range(-3000, 3000)
    from_range = list(shared_executor.map(tasks.square, numbers))
    from_generator = list(shared_executor.map(tasks.square, (n for n in numbers)))
    assert from_range == from_generator == [n * n for n in numbers]


@pytest.mark.process_only
def test_a_worker_that_cannot_start_breaks_the_pool_instead_of_hanging(monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    from gilfree._workers import launch as _launch

    def refuse(*_args):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(_launch.Launcher, "start", refuse)
    with create_executor(max_workers=2, start_method="spawn") as executor:
        future = executor.submit(tasks.square, 3)
        with pytest.raises(BrokenProcessPool, match="could not start a worker"):
            future.result(timeout=RESULT_TIMEOUT)
        with pytest.raises(BrokenProcessPool):
            executor.submit(tasks.square, 3)


def test_map_with_rising_costs_returns_results_in_input_order(shared_executor):
    # fib's cost rises along the input, so gilfree hands the last items out last-first.
    numbers = list(range(26))
    assert list(shared_executor.map(tasks.fib, numbers)) == [tasks.fib(n) for n in numbers]


def test_a_fault_while_cutting_a_map_fails_that_map_and_the_executor_goes_on(monkeypatch):
    # The collector thread cuts the later chunks while nobody reads: an exception escaping
    # there used to end that thread and leave the map waiting forever.
    from gilfree._engine.chunking import ChunkSizer

    calls = 0
    real_next_size = ChunkSizer.next_size

    def failing_after_two(self, remaining):
        nonlocal calls
        calls += 1
        if calls > 2:
            raise ArithmeticError("sizer fault")
        return real_next_size(self, remaining)

    monkeypatch.setattr(ChunkSizer, "next_size", failing_after_two)
    with create_executor(max_workers=2) as executor:
        results = executor.map(tasks.square, range(100), timeout=RESULT_TIMEOUT, chunksize=10)
        deadline = time.monotonic() + RESULT_TIMEOUT
        while calls <= 2 and time.monotonic() < deadline:  # the collector thread cuts, not us
            time.sleep(0.01)
        with pytest.raises(ArithmeticError, match="sizer fault"):
            list(results)
        monkeypatch.setattr(ChunkSizer, "next_size", real_next_size)
        assert list(executor.map(tasks.square, range(30))) == [n * n for n in range(30)]
        assert executor.submit(tasks.square, 7).result(timeout=RESULT_TIMEOUT) == 49


def test_a_fault_while_collecting_breaks_the_pool_instead_of_leaving_callers_waiting(
    monkeypatch, capfd
):
    from concurrent.futures import BrokenExecutor

    from gilfree._engine.units import Call

    real_finish = Call.finish

    def faulty_finish(self, kind, value):
        if value == 49:
            raise ArithmeticError("collector fault")
        real_finish(self, kind, value)

    monkeypatch.setattr(Call, "finish", faulty_finish)
    with create_executor(max_workers=2) as executor:
        others = [executor.submit(tasks.slow_square, n, 0.05) for n in (2, 3)]
        doomed = executor.submit(tasks.slow_square, 7, 0.05)
        # Nobody waits yet: the collector thread handles the replies.
        deadline = time.monotonic() + RESULT_TIMEOUT
        while not doomed.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(ArithmeticError, match="collector fault"):
            doomed.result(timeout=RESULT_TIMEOUT)
        for future in others:  # finished, or failed by the break: never left waiting
            assert future.exception(timeout=RESULT_TIMEOUT) is None or isinstance(
                future.exception(), BrokenExecutor
            )
        with pytest.raises(BrokenExecutor) as broken:
            executor.submit(tasks.square, 1).result(timeout=RESULT_TIMEOUT)
        assert isinstance(broken.value.__cause__, ArithmeticError)
    assert "ArithmeticError: collector fault" in capfd.readouterr().err
