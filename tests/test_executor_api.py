"""The concurrent.futures.Executor API, checked against the stdlib's semantics.

Every test runs once per start method (zygote, spawn, fork). Tests that only
compute use a module-wide ``shared_executor``; tests that block, cancel or shut
down the pool get a fresh ``executor`` and a file-based ``gate`` that holds
tasks until the test releases them.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import os
import threading
import time
from collections import Counter
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    CancelledError,
    as_completed,
    wait,
)
from concurrent.futures.process import BrokenProcessPool

import numpy
import pytest

from conftest import IS_STDLIB, create_executor
from support import tasks
from support.limits import RESULT_TIMEOUT


def submit_blockers(executor, gate, count):
    """Submit ``count`` tasks that hold a worker each until the gate opens."""
    started = [gate.started_path() for _ in range(count)]
    futures = [
        executor.submit(tasks.block_until_released, gate.path, index, path)
        for index, path in enumerate(started)
    ]
    return futures, started


# --- class and constructor -------------------------------------------------------------


@pytest.mark.gilfree_only
def test_executor_is_a_concurrent_futures_executor():
    import gilfree

    assert issubclass(gilfree.ProcessPoolExecutor, concurrent.futures.Executor)
    assert gilfree.Executor is gilfree.ProcessPoolExecutor


@pytest.mark.parametrize("max_workers", [0, -1])
def test_non_positive_max_workers_is_rejected(max_workers):
    with pytest.raises(ValueError, match="max_workers"):
        create_executor(max_workers=max_workers)


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_more_workers_than_gilfree_handles_is_refused_naming_the_limit():
    from gilfree import Pool, ProcessPoolExecutor, _core

    with pytest.raises(ValueError, match=rf"^max_workers must be at most {_core.MAX_WORKERS} "):
        ProcessPoolExecutor(max_workers=10**6)
    with pytest.raises(
        ValueError, match=rf"^Number of processes must be at most {_core.MAX_WORKERS} "
    ):
        Pool(10**6)


@pytest.mark.local_only("max_tasks_per_child: a cluster recycles its workers its own way")
def test_zero_max_tasks_per_child_is_rejected():
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        create_executor(max_workers=1, max_tasks_per_child=0)


@pytest.mark.local_only("initializer: a cluster prepares its workers its own way")
def test_non_callable_initializer_is_rejected():
    with pytest.raises(TypeError, match="initializer"):
        create_executor(max_workers=1, initializer=42)


@pytest.mark.gilfree_only
@pytest.mark.local_only("initializer: a cluster prepares its workers its own way")
def test_initargs_that_are_not_a_tuple_are_rejected_naming_them():
    """The stdlib's workers die of it later (its executor breaks, its pool starts workers for
    ever); the error said only "'int' object is not iterable"."""
    with pytest.raises(
        TypeError, match=r"^initargs must be a tuple .* got 5; .*initargs=\(value,\)"
    ):
        create_executor(max_workers=1, initializer=print, initargs=5)


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_unknown_start_method_is_rejected_naming_the_valid_ones():
    with pytest.raises(ValueError) as info:
        create_executor(max_workers=1, start_method="teleport")
    message = str(info.value)
    for name in ("zygote", "spawn", "fork"):
        assert name in message


# --- submit ----------------------------------------------------------------------------


def test_submit_returns_a_future_with_the_result(shared_executor):
    future = shared_executor.submit(tasks.square, 7)
    assert isinstance(future, concurrent.futures.Future)
    assert future.result(timeout=RESULT_TIMEOUT) == 49
    assert future.done()
    assert future.exception() is None


def test_submit_passes_positional_and_keyword_arguments(shared_executor):
    future = shared_executor.submit(tasks.echo, 1, "two", three=3)
    assert future.result(timeout=RESULT_TIMEOUT) == ((1, "two"), {"three": 3})


def test_submit_accepts_keyword_arguments_named_fn_and_self(shared_executor):
    future = shared_executor.submit(tasks.echo_kwargs, fn=1, self=2)
    assert future.result(timeout=RESULT_TIMEOUT) == {"fn": 1, "self": 2}


def test_many_submits_all_complete_with_their_own_results(shared_executor):
    futures = [shared_executor.submit(tasks.add, i, 1000) for i in range(200)]
    assert [f.result(timeout=RESULT_TIMEOUT) for f in futures] == [i + 1000 for i in range(200)]


# --- map -----------------------------------------------------------------------------


def test_map_over_one_iterable(shared_executor):
    assert list(shared_executor.map(tasks.square, range(20))) == [x * x for x in range(20)]


class IterableWhoseLenRaises:
    """Iterable, with a ``__len__`` that raises something other than TypeError."""

    def __iter__(self):
        return iter(range(5))

    def __len__(self):
        raise RuntimeError("len() must not be asked")


def test_map_only_iterates_its_input_as_the_builtin_map_does(shared_executor):
    """``list(iterable)`` asked its ``__len__`` first, and passed on its error."""
    results = shared_executor.map(tasks.square, IterableWhoseLenRaises())
    assert list(results) == [0, 1, 4, 9, 16]


def test_map_over_several_iterables_stops_at_the_shortest(shared_executor):
    results = list(shared_executor.map(tasks.add, [1, 2, 3], [10, 20]))
    assert results == [11, 22]


def test_map_with_an_infinite_iterable_stops_at_the_finite_one(shared_executor):
    results = list(shared_executor.map(tasks.add, range(5), itertools.repeat(100)))
    assert results == [100, 101, 102, 103, 104]


@pytest.mark.parametrize("chunksize", [1, 7, 1000])
def test_map_with_explicit_chunksize_keeps_order(shared_executor, chunksize):
    results = list(shared_executor.map(tasks.square, range(50), chunksize=chunksize))
    assert results == [x * x for x in range(50)]


@pytest.mark.parametrize("chunksize", [2.0, 0.5, 0, -1])
def test_a_chunksize_that_is_not_a_positive_integer_is_refused_and_the_executor_goes_on(
    shared_executor, chunksize
):
    # The stdlib refuses 2.0 through islice, at the call; it was once queued here, and broke
    # the executor for good when its chunks were cut.
    with pytest.raises(ValueError):
        shared_executor.map(tasks.square, range(5), chunksize=chunksize)
    assert shared_executor.submit(tasks.square, 3).result(timeout=RESULT_TIMEOUT) == 9
    assert list(shared_executor.map(tasks.square, range(3), chunksize=numpy.int64(2))) == [0, 1, 4]


@pytest.mark.gilfree_only
def test_map_with_chunksize_none_is_adaptive_and_keeps_order(shared_executor):
    results = list(shared_executor.map(tasks.square, range(500), chunksize=None))
    assert results == [x * x for x in range(500)]


def test_map_of_ten_thousand_items_keeps_order(shared_executor):
    results = list(shared_executor.map(tasks.square, range(10_000)))
    assert results == [x * x for x in range(10_000)]


def test_map_of_an_empty_iterable_yields_nothing(shared_executor):
    assert list(shared_executor.map(tasks.square, [])) == []


def test_map_yields_earlier_results_then_raises(shared_executor):
    results = shared_executor.map(tasks.raise_if_equal, range(6), itertools.repeat(3))
    assert [next(results), next(results), next(results)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad value 3"):
        next(results)


def test_map_timeout_raises_timeout_error_from_next(executor, gate):
    results = executor.map(tasks.block_until_released, [gate.path] * 3, timeout=0.2)
    with pytest.raises(concurrent.futures.TimeoutError) as info:
        next(results)
    assert isinstance(info.value, TimeoutError)


def test_closing_a_maps_iterator_cancels_what_has_not_started(make_executor, gate, tmp_path):
    # The stdlib's map is a generator: close() cancels the calls not started.
    executor = make_executor(max_workers=1)
    opened = tmp_path / "open-gate"
    opened.touch()  # the first task does not wait
    gates = [str(opened)] + [gate.path] * 5
    started = [gate.started_path() for _ in gates]
    results = executor.map(tasks.block_until_released, gates, range(6), started, chunksize=1)
    assert next(results) == 0
    gate.wait_started(started[1:2])
    results.close()
    gate.release()
    executor.shutdown(wait=True)
    ran = sum(os.path.exists(path) for path in started)
    assert 2 <= ran <= 4  # the one returned, the one running, a few queued (the stdlib: two)
    assert list(results) == []


@pytest.mark.local_only("a Manager's proxies reach a cluster's workers only by its address")
def test_a_managers_proxy_made_for_the_call_alone_reaches_the_worker(shared_executor):
    # The proxy is referred to by nothing but the call: it must live until the worker has
    # unpickled it (and taken its own reference), as the stdlib's work item keeps it.
    with multiprocessing.Manager() as manager:
        future = shared_executor.submit(tasks.set_key, manager.dict(), "x", 1)
        assert future.result(timeout=RESULT_TIMEOUT) == 1
        proxies = (manager.dict() for _ in range(4))  # read lazily: each chunk's items kept
        sizes = shared_executor.map(tasks.set_key, proxies, "abcd", range(4), chunksize=1)
        assert list(sizes) == [1, 1, 1, 1]


# --- wait and as_completed --------------------------------------------------------------


def test_wait_all_completed_returns_every_future_done(shared_executor):
    futures = [shared_executor.submit(tasks.square, i) for i in range(10)]
    done, not_done = wait(futures, timeout=RESULT_TIMEOUT, return_when=ALL_COMPLETED)
    assert done == set(futures)
    assert not not_done
    assert sorted(f.result() for f in done) == sorted(i * i for i in range(10))


def test_wait_first_completed_returns_before_a_blocked_task(executor, gate):
    blocked = executor.submit(tasks.block_until_released, gate.path, "late")
    quick = executor.submit(tasks.square, 3)
    done, not_done = wait([blocked, quick], timeout=RESULT_TIMEOUT, return_when=FIRST_COMPLETED)
    assert quick in done
    assert blocked in not_done
    gate.release()
    assert blocked.result(timeout=RESULT_TIMEOUT) == "late"


def test_wait_first_exception_returns_on_the_failure(executor, gate):
    blocked = executor.submit(tasks.block_until_released, gate.path, "late")
    failing = executor.submit(tasks.raise_value_error, "boom")
    done, not_done = wait([blocked, failing], timeout=RESULT_TIMEOUT, return_when=FIRST_EXCEPTION)
    assert failing in done
    assert blocked in not_done
    assert isinstance(failing.exception(), ValueError)


def test_wait_first_exception_without_failure_waits_for_all(shared_executor):
    futures = [shared_executor.submit(tasks.square, i) for i in range(5)]
    done, not_done = wait(futures, timeout=RESULT_TIMEOUT, return_when=FIRST_EXCEPTION)
    assert done == set(futures)
    assert not not_done


def test_as_completed_yields_every_future_once(shared_executor):
    futures = [shared_executor.submit(tasks.square, i) for i in range(20)]
    seen = list(as_completed(futures, timeout=RESULT_TIMEOUT))
    assert len(seen) == len(futures)
    assert set(seen) == set(futures)


def test_as_completed_without_timeout(shared_executor):
    futures = [shared_executor.submit(tasks.add, i, i) for i in range(10)]
    results = sorted(f.result() for f in as_completed(futures))
    assert results == [2 * i for i in range(10)]


def test_as_completed_timeout_raises_after_yielding_finished_ones(executor, gate):
    blocked = executor.submit(tasks.block_until_released, gate.path)
    quick = executor.submit(tasks.square, 4)
    assert quick.result(timeout=RESULT_TIMEOUT) == 16
    iterator = as_completed([blocked, quick], timeout=0.2)
    assert next(iterator) is quick
    with pytest.raises(concurrent.futures.TimeoutError):
        next(iterator)


# --- callbacks -------------------------------------------------------------------------


def test_done_callback_is_called_once_with_the_future(executor, gate):
    calls = []
    called = threading.Event()

    def callback(future):
        calls.append(future)
        called.set()

    future = executor.submit(tasks.block_until_released, gate.path, "value")
    future.add_done_callback(callback)
    gate.release()
    assert future.result(timeout=RESULT_TIMEOUT) == "value"
    assert called.wait(RESULT_TIMEOUT)
    assert calls == [future]


def test_done_callback_added_after_completion_runs_immediately(shared_executor):
    future = shared_executor.submit(tasks.square, 5)
    assert future.result(timeout=RESULT_TIMEOUT) == 25
    calls = []
    future.add_done_callback(calls.append)
    assert calls == [future]


def test_done_callback_sees_exceptions(shared_executor):
    seen = []
    called = threading.Event()

    def callback(future):
        seen.append(future.exception())
        called.set()

    future = shared_executor.submit(tasks.raise_value_error, "cb")
    future.add_done_callback(callback)
    assert called.wait(RESULT_TIMEOUT)
    assert len(seen) == 1
    assert isinstance(seen[0], ValueError)


# --- cancel ------------------------------------------------------------------------------


def test_pending_future_can_be_cancelled(executor, gate):
    blockers, started = submit_blockers(executor, gate, 2)
    gate.wait_started(started)
    queued = [executor.submit(tasks.square, i) for i in range(8)]
    last = queued[-1]
    assert last.cancel()
    assert last.cancelled()
    assert last.done()
    gate.release()
    assert [f.result(timeout=RESULT_TIMEOUT) for f in blockers] == [0, 1]
    with pytest.raises(CancelledError):
        last.result(timeout=RESULT_TIMEOUT)
    for index, future in enumerate(queued[:-1]):
        if not future.cancelled():
            assert future.result(timeout=RESULT_TIMEOUT) == index * index


def test_finished_future_cannot_be_cancelled(shared_executor):
    future = shared_executor.submit(tasks.square, 2)
    assert future.result(timeout=RESULT_TIMEOUT) == 4
    assert not future.cancel()
    assert not future.cancelled()


def test_running_future_cannot_be_cancelled(executor, gate):
    blockers, started = submit_blockers(executor, gate, 1)
    gate.wait_started(started)
    assert not blockers[0].cancel()
    assert blockers[0].running()
    gate.release()
    assert blockers[0].result(timeout=RESULT_TIMEOUT) == 0


# --- shutdown ------------------------------------------------------------------------------


def test_shutdown_cancel_futures_cancels_pending_and_finishes_running(executor, gate):
    blockers, started = submit_blockers(executor, gate, 2)
    gate.wait_started(started)
    queued = [executor.submit(tasks.square, i) for i in range(8)]

    def release_once_cancelled():
        # Open the gate only after shutdown has cancelled the pending work, so the
        # pending futures cannot start before shutdown gets to them.
        deadline = time.monotonic() + 10
        while not queued[-1].cancelled() and time.monotonic() < deadline:
            time.sleep(0.005)
        gate.release()

    releaser = threading.Thread(target=release_once_cancelled)
    releaser.start()
    try:
        executor.shutdown(wait=True, cancel_futures=True)
    finally:
        releaser.join()
    assert [f.result(timeout=0) for f in blockers] == [0, 1]
    assert queued[-1].cancelled()
    for index, future in enumerate(queued):
        assert future.done()
        if not future.cancelled():
            assert future.result(timeout=0) == index * index


def test_shutdown_without_wait_returns_and_in_flight_tasks_finish(executor, gate):
    blockers, started = submit_blockers(executor, gate, 2)
    gate.wait_started(started)
    executor.shutdown(wait=False)
    # Had shutdown(wait=False) waited, the gate would still be closed and the
    # tasks would have returned "gate-timeout".
    gate.release()
    assert [f.result(timeout=RESULT_TIMEOUT) for f in blockers] == [0, 1]


def test_shutdown_wait_true_completes_all_submitted_work(executor):
    futures = [executor.submit(tasks.square, i) for i in range(20)]
    executor.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result(timeout=0) for f in futures] == [i * i for i in range(20)]


def test_submit_after_shutdown_raises_runtime_error(executor):
    executor.shutdown()
    with pytest.raises(RuntimeError):
        executor.submit(tasks.square, 1)


def test_map_after_shutdown_raises_runtime_error(executor):
    executor.shutdown()
    with pytest.raises(RuntimeError):
        list(executor.map(tasks.square, [1, 2]))


def test_shutdown_twice_is_harmless(executor):
    assert executor.submit(tasks.square, 3).result(timeout=RESULT_TIMEOUT) == 9
    executor.shutdown()
    executor.shutdown()
    executor.shutdown(wait=False)


def test_shutdown_of_an_unused_executor(make_executor, start_method):
    executor = make_executor(max_workers=2, start_method=start_method)
    executor.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        executor.submit(tasks.square, 1)


def test_context_manager_shuts_down_on_exit(start_method):
    with create_executor(max_workers=2, start_method=start_method) as executor:
        future = executor.submit(tasks.square, 6)
    assert future.done()
    assert future.result(timeout=0) == 36
    with pytest.raises(RuntimeError):
        executor.submit(tasks.square, 1)


def test_context_manager_returns_the_executor(start_method):
    executor = create_executor(max_workers=1, start_method=start_method)
    with executor as entered:
        assert entered is executor


# --- initializer, max_tasks_per_child ------------------------------------------------------


@pytest.mark.process_only
@pytest.mark.parametrize("context", [None, "forkserver"])
def test_initargs_from_the_default_context_reach_the_workers_as_the_stdlibs_do(
    make_executor, context
):
    # A lock of the default (fork) context reaches only a forked worker: the default start
    # method forks then, as the stdlib's does; one made for forkserver keeps the zygote.
    made_by = multiprocessing.get_context(context)
    lock, counter = made_by.Lock(), made_by.Value("i", 0)
    executor = make_executor(
        max_workers=2, initializer=tasks.keep_lock_and_counter, initargs=(lock, counter)
    )
    assert list(executor.map(tasks.count_under_lock, range(10))) == list(range(10))
    assert counter.value == 10
    if not IS_STDLIB:
        assert executor.start_method == ("fork" if context is None else "zygote")


@pytest.mark.process_only
def test_initializer_runs_once_per_worker_with_initargs(make_executor, start_method):
    executor = make_executor(
        max_workers=2,
        start_method=start_method,
        initializer=tasks.record_init,
        initargs=("configured",),
    )
    states = [
        f.result(timeout=RESULT_TIMEOUT)
        for f in [executor.submit(tasks.get_init_state) for _ in range(20)]
    ]
    assert {value for _, value, _ in states} == {"configured"}
    assert {calls for _, _, calls in states} == {1}
    assert len({pid for pid, _, _ in states}) <= 2


@pytest.mark.process_only
def test_failing_initializer_breaks_the_pool(make_executor, start_method):
    executor = make_executor(
        max_workers=2, start_method=start_method, initializer=tasks.failing_initializer
    )
    future = executor.submit(tasks.square, 2)
    with pytest.raises(BrokenProcessPool):
        future.result(timeout=RESULT_TIMEOUT)


def skip_fork_with_max_tasks_per_child(start_method):
    if start_method == "fork":
        pytest.skip("the stdlib rejects max_tasks_per_child with fork; not required of gilfree")


@pytest.mark.process_only
def test_max_tasks_per_child_replaces_workers(make_executor, start_method):
    skip_fork_with_max_tasks_per_child(start_method)
    executor = make_executor(max_workers=2, start_method=start_method, max_tasks_per_child=2)
    pids = Counter(executor.submit(tasks.get_pid).result(timeout=RESULT_TIMEOUT) for _ in range(10))
    assert len(pids) > 2
    assert max(pids.values()) <= 2
    assert os.getpid() not in pids


@pytest.mark.skipif(IS_STDLIB, reason="CPython gh-115634: the stdlib deadlocks on this")
@pytest.mark.process_only
def test_max_tasks_per_child_with_all_tasks_submitted_at_once(make_executor, start_method):
    skip_fork_with_max_tasks_per_child(start_method)
    executor = make_executor(max_workers=2, start_method=start_method, max_tasks_per_child=2)
    futures = [executor.submit(tasks.get_pid) for _ in range(10)]
    pids = Counter(f.result(timeout=RESULT_TIMEOUT) for f in futures)
    assert len(pids) > 2
    assert max(pids.values()) <= 2


# --- mp_context, start_method, preload -----------------------------------------------------


@pytest.mark.process_only
def test_mp_context_object_is_accepted(make_executor):
    executor = make_executor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    assert executor.submit(tasks.square, 9).result(timeout=RESULT_TIMEOUT) == 81


@pytest.mark.gilfree_only
@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.process_only
def test_mp_context_start_method_name_is_accepted(make_executor, method):
    executor = make_executor(max_workers=1, mp_context=method)
    assert executor.submit(tasks.square, 8).result(timeout=RESULT_TIMEOUT) == 64


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_mp_context_and_start_method_may_both_be_given_only_if_they_agree(make_executor):
    with pytest.raises(ValueError, match="'spawn' and start_method asks for 'fork'"):
        make_executor(max_workers=1, mp_context="spawn", start_method="fork")
    executor = make_executor(max_workers=1, mp_context="forkserver", start_method="zygote")
    assert executor.submit(tasks.square, 7).result(timeout=RESULT_TIMEOUT) == 49


@pytest.mark.gilfree_only
def test_the_default_worker_count_is_the_cpus_this_process_may_use(monkeypatch):
    # As the stdlib's from Python 3.13: os.process_cpu_count() (the affinity mask).
    import gilfree

    monkeypatch.setattr(os, "process_cpu_count", lambda: 1, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    executor = gilfree.ProcessPoolExecutor()
    try:
        assert executor._max_workers == 1
    finally:
        executor.shutdown()


def test_default_start_method_works(make_executor):
    executor = make_executor(max_workers=2)
    assert list(executor.map(tasks.square, range(4))) == [0, 1, 4, 9]


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_preload_is_accepted_and_tasks_work(make_executor, start_method):
    executor = make_executor(max_workers=2, start_method=start_method, preload=["json"])
    assert executor.submit(tasks.add, 2, 3).result(timeout=RESULT_TIMEOUT) == 5


@pytest.mark.process_only
def test_workers_are_other_processes(shared_executor):
    pids = {
        f.result(timeout=RESULT_TIMEOUT)
        for f in [shared_executor.submit(tasks.get_pid) for _ in range(10)]
    }
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


def test_large_bytes_round_trip(shared_executor):
    size = 8 * 1024 * 1024
    data = shared_executor.submit(tasks.make_bytes, size).result(timeout=RESULT_TIMEOUT)
    assert len(data) == size and data[:1] == b"\xab" and data[-1:] == b"\xab"
    assert shared_executor.submit(tasks.byte_len, data).result(timeout=RESULT_TIMEOUT) == size
