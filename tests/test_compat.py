"""Details of concurrent.futures' behaviour that code written for it relies on."""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import threading
import weakref
from concurrent.futures.process import BrokenProcessPool

import pytest

from conftest import IS_STDLIB, create_executor
from support import tasks
from support.limits import RESULT_TIMEOUT


def test_a_multiprocessing_queue_can_be_an_initializer_argument(start_method):
    queue = multiprocessing.get_context("spawn").Queue()
    executor = create_executor(
        max_workers=1,
        start_method=start_method,
        initializer=tasks.put_in_queue,
        initargs=(queue, "ready"),
    )
    with executor:
        assert executor.submit(tasks.square, 4).result(timeout=RESULT_TIMEOUT) == 16
        assert queue.get(timeout=RESULT_TIMEOUT) == "ready"
    queue.close()
    queue.join_thread()


def test_a_submitted_bound_method_does_not_keep_its_object_alive(shared_executor):
    holder = tasks.Holder()
    alive = weakref.ref(holder)
    assert shared_executor.submit(holder.method).result(timeout=RESULT_TIMEOUT) == 42
    del holder
    gc.collect()
    assert alive() is None


@pytest.mark.process_only
def test_arguments_that_fail_to_unpickle_give_broken_process_pool(executor):
    future = executor.submit(tasks.square, tasks.BreaksWhenUnpickled())
    with pytest.raises(BrokenProcessPool):
        future.result(timeout=RESULT_TIMEOUT)


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_the_pool_keeps_working_after_arguments_fail_to_unpickle(executor):
    with pytest.raises(BrokenProcessPool):
        executor.submit(tasks.square, tasks.BreaksWhenUnpickled()).result(timeout=RESULT_TIMEOUT)
    assert executor.submit(tasks.square, 5).result(timeout=RESULT_TIMEOUT) == 25


@pytest.mark.process_only
def test_max_tasks_per_child_is_refused_with_fork():
    with pytest.raises(ValueError, match="max_tasks_per_child is incompatible"):
        create_executor(
            max_workers=1, mp_context=multiprocessing.get_context("fork"), max_tasks_per_child=1
        )


@pytest.mark.process_only
def test_processes_lists_the_live_workers(executor):
    pid = executor.submit(tasks.get_pid).result(timeout=RESULT_TIMEOUT)
    processes = executor._processes
    assert pid in processes
    assert processes[pid].is_alive()


@pytest.mark.process_only
def test_processes_lists_the_workers_a_submit_started_as_soon_as_it_returns(
    make_executor, start_method, gate
):
    # CPython's test_processes_terminate, with tasks that can be sent: the workers the submits
    # started are there with their pids before any task ran (with fork, all of them: gilfree
    # forks every worker at the first submit, as the stdlib does).
    executor = make_executor(max_workers=4, start_method=start_method)
    paths = [gate.started_path() for _ in range(2)]
    futures = [executor.submit(tasks.write_pid_and_block, path, gate.path) for path in paths]
    processes = executor._processes
    assert len(processes) == (4 if start_method == "fork" else 2)
    assert all(process.is_alive() for process in processes.values())
    gate.release()
    assert {future.result(timeout=RESULT_TIMEOUT) for future in futures} <= set(processes)


@pytest.mark.process_only
def test_a_submit_that_cannot_be_sent_still_starts_a_worker(make_executor, start_method):
    # As the stdlib (CPython's test_saturation): each submit starts a worker while none is
    # idle, whether or not its task can be pickled; its future fails with pickle's error
    # (gilfree's SerializationError is a PicklingError naming where the lock sits).
    executor = make_executor(max_workers=3, start_method=start_method)
    futures = [executor.submit(tasks.square, threading.Lock()) for _ in range(5)]
    for future in futures:
        with pytest.raises((TypeError, pickle.PicklingError), match="lock"):
            future.result(timeout=RESULT_TIMEOUT)
    assert len(executor._processes) == 3
    assert executor.submit(tasks.square, 4).result(timeout=RESULT_TIMEOUT) == 16


@pytest.mark.gilfree_only
def test_many_distinct_functions_through_one_worker_stay_correct(start_method):
    # More distinct functions than a worker caches: the parent makes it forget the oldest.
    functions = [(lambda value, offset=offset: value + offset) for offset in range(300)]
    with create_executor(max_workers=1, start_method=start_method) as executor:
        for _ in range(2):
            results = [executor.submit(fn, 1000).result(timeout=RESULT_TIMEOUT) for fn in functions]
            assert results == [1000 + offset for offset in range(300)]


@pytest.mark.skipif(IS_STDLIB, reason="the stdlib's repr differs")
def test_broken_flag_is_false_while_the_pool_works(executor):
    assert executor._broken is False
