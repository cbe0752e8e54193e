"""``backend="thread"``: the front end over threads of this process.

The rest of the suite runs against this backend too (``GILFREE_TEST_IMPL=thread``); this module
covers what is its own: where tasks run, what is shared instead of copied, the options it
refuses, and how ``"auto"`` chooses.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
from concurrent.futures.thread import BrokenThreadPool

import numpy as np
import pandas as pd
import pytest

import gilfree
from support import tasks
from support.limits import RESULT_TIMEOUT

pytestmark = [pytest.mark.timeout(30), pytest.mark.gilfree_only]


def current_thread_name(_=None):
    return threading.current_thread().name


def append_to(target, value):
    target.append(value)
    return len(target)


def identity(value):
    return value


def raise_this(error):
    raise error


def worker_threads():
    return [thread for thread in threading.enumerate() if thread.name.startswith("gilfree-thread")]


@pytest.fixture
def thread_executor():
    executor = gilfree.ProcessPoolExecutor(2, backend="thread")
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


def test_tasks_run_on_threads_of_this_process(thread_executor):
    assert thread_executor.backend == "thread"
    assert thread_executor.start_method == "thread"
    assert thread_executor.submit(os.getpid).result(RESULT_TIMEOUT) == os.getpid()
    names = set(thread_executor.map(current_thread_name, range(50)))
    assert names and all(name.startswith("gilfree-thread-") for name in names)
    assert thread_executor._processes == {}  # no process of its own


def test_arguments_and_results_are_shared_not_copied(thread_executor):
    target: list[int] = []
    assert thread_executor.submit(append_to, target, 7).result(RESULT_TIMEOUT) == 1
    assert target == [7]  # the caller's list, mutated by the task
    array = np.arange(12.0).reshape(3, 4)[:, ::2]  # non-contiguous: still the same object
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert thread_executor.submit(identity, array).result(RESULT_TIMEOUT) is array
    assert list(thread_executor.map(identity, [frame, frame])) == [frame, frame]
    assert thread_executor.submit(identity, frame).result(RESULT_TIMEOUT) is frame


def test_a_task_raises_the_very_exception_object(thread_executor):
    error = tasks.CustomError("boom")
    future = thread_executor.submit(raise_this, error)
    assert future.exception(RESULT_TIMEOUT) is error
    assert error.__traceback__ is not None  # raised here, in this process
    with pytest.raises(tasks.CustomError):
        list(thread_executor.map(raise_this, [error]))


def test_lambdas_closures_and_unpicklable_values_need_no_pickling(thread_executor):
    lock = threading.Lock()  # cannot be pickled; a thread takes it as it is
    assert thread_executor.submit(lambda held: held is lock, lock).result(RESULT_TIMEOUT)
    offset = 5
    assert list(thread_executor.map(lambda x: x + offset, range(3))) == [5, 6, 7]


def test_the_initializer_runs_on_each_thread():
    seen: list[str] = []
    with gilfree.ProcessPoolExecutor(
        2, backend="thread", initializer=lambda: seen.append(current_thread_name())
    ) as executor:
        assert list(executor.map(tasks.square, range(100))) == [x * x for x in range(100)]
    assert seen and all(name.startswith("gilfree-thread-") for name in seen)


def test_a_failing_initializer_breaks_the_pool_as_the_stdlib_says():
    executor = gilfree.ProcessPoolExecutor(
        1, backend="thread", initializer=tasks.failing_initializer
    )
    try:
        future = executor.submit(tasks.square, 3)
        with pytest.raises(BrokenThreadPool, match="thread initializer failed"):
            future.result(RESULT_TIMEOUT)
        with pytest.raises(BrokenThreadPool):
            executor.submit(tasks.square, 3)
    finally:
        executor.shutdown(wait=True)


def test_shutdown_ends_every_thread():
    before = set(worker_threads())
    executor = gilfree.ProcessPoolExecutor(2, backend="thread")
    assert sum(executor.map(tasks.square, range(1000))) == sum(x * x for x in range(1000))
    executor.shutdown(wait=True)
    assert set(worker_threads()) <= before


def test_stats_count_the_tasks(thread_executor):
    list(thread_executor.map(tasks.square, range(300)))
    stats = thread_executor.stats()
    assert sum(worker.tasks_done for worker in stats) == 300
    assert all(worker.crashes == 0 and worker.pid in (0, os.getpid()) for worker in stats)


def test_pool_on_threads():
    with gilfree.Pool(2, backend="thread") as pool:
        assert pool.map(tasks.square, range(10)) == [x * x for x in range(10)]
        assert sorted(pool.imap_unordered(tasks.square, range(10))) == [x * x for x in range(10)]
        assert pool.apply(os.getpid) == os.getpid()
        assert all(isinstance(worker, threading.Thread) for worker in pool._pool)


def test_terminate_abandons_a_running_task(tmp_path):
    gate = tmp_path / "gate"
    pool = gilfree.Pool(1, backend="thread")
    result = pool.apply_async(tasks.block_until_released, (str(gate), 1))
    pool.terminate()
    with pytest.raises(concurrent.futures.CancelledError):
        result.get(RESULT_TIMEOUT)
    gate.touch()  # the abandoned thread finishes its task; nothing reads the result


@pytest.mark.parametrize(
    "option",
    [
        {"mp_context": "spawn"},
        {"start_method": "spawn"},
        {"preload": ["json"]},
        {"max_tasks_per_child": 3},
        {"max_memory_per_child": 1 << 30},
        {"task_timeout": 1.0},
    ],
    ids=lambda option: next(iter(option)),
)
def test_process_only_options_are_refused_by_name(option):
    name = next(iter(option))
    with pytest.raises(ValueError, match=rf"^{name}: process-only option.*backend='process'"):
        gilfree.ProcessPoolExecutor(2, backend="thread", **option)


def test_pool_refuses_process_only_options():
    with pytest.raises(ValueError, match="^maxtasksperchild: process-only"):
        gilfree.Pool(2, maxtasksperchild=1, backend="thread")
    with pytest.raises(ValueError, match="^context: process-only"):
        gilfree.Pool(2, context="spawn", backend="thread")


def test_a_per_call_timeout_is_refused(thread_executor):
    with pytest.raises(ValueError, match="^timeout: process-only"):
        thread_executor.submit_with(tasks.square, (3,), timeout=1.0)
    future = thread_executor.submit_with(tasks.square, (3,), retries=2)
    assert future.result(RESULT_TIMEOUT) == 9


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of 'process', 'thread', 'auto'"):
        gilfree.ProcessPoolExecutor(2, backend="threads")


@pytest.mark.parametrize(("gil_enabled", "expected"), [(True, "process"), (False, "thread")])
def test_auto_takes_threads_only_while_the_gil_is_off(monkeypatch, gil_enabled, expected):
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: gil_enabled, raising=False)
    executor = gilfree.ProcessPoolExecutor(1, backend="auto")
    try:
        assert executor.backend == expected
        assert executor.submit(tasks.square, 4).result(RESULT_TIMEOUT) == 16
    finally:
        executor.shutdown(wait=True)


def test_auto_is_processes_without_a_free_threaded_build(monkeypatch):
    monkeypatch.delattr(sys, "_is_gil_enabled", raising=False)
    executor = gilfree.ProcessPoolExecutor(1, backend="auto")
    try:
        assert executor.backend == "process"
    finally:
        executor.shutdown(wait=True)


def test_units_failed_while_queued_never_reach_a_thread_half_gone():
    """A unit is the engine's again once sent: terminating a pool whose threads still have
    chunks queued fails them (CancelledError) while the threads drop what they took at send.
    Any exception in a worker thread fails this test (pytest reports unhandled ones)."""
    for _ in range(20):
        pool = gilfree.Pool(2, backend="thread")
        results = [pool.map_async(tasks.slow_square, range(40), chunksize=1) for _ in range(5)]
        pool.terminate()
        for result in results:
            with pytest.raises(concurrent.futures.CancelledError):
                result.get(RESULT_TIMEOUT)


def test_many_submitting_threads_get_every_result():
    """Four caller threads submit and map at once (each may be the pumper, or wait on one)."""
    executor = gilfree.ProcessPoolExecutor(2, backend="thread")
    failures: list[BaseException] = []

    def caller(offset: int) -> None:
        try:
            for round_ in range(50):
                base = offset * 1000 + round_
                futures = [executor.submit(tasks.square, base + i) for i in range(5)]
                assert [f.result(RESULT_TIMEOUT) for f in futures] == [
                    (base + i) ** 2 for i in range(5)
                ]
                assert list(executor.map(tasks.add, range(7), range(7))) == [
                    2 * i for i in range(7)
                ]
        except BaseException as error:
            failures.append(error)

    callers = [threading.Thread(target=caller, args=(offset,)) for offset in range(4)]
    try:
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join(RESULT_TIMEOUT)
        assert not failures, failures
        assert not any(thread.is_alive() for thread in callers)
    finally:
        executor.shutdown(wait=True)
