"""multiprocessing.Pool's API and semantics, checked against gilfree.Pool and the stdlib.

``make_pool`` builds the pool under test with ``multiprocessing.Pool``'s
signature: ``gilfree.Pool`` by default, the stdlib's pool (fork context unless
``context=`` is given) with ``GILFREE_TEST_IMPL=stdlib``. Tests that only
compute share the module-wide two-worker ``pool``; tests that block, close or
terminate a pool make their own with ``new_pool``, which terminates it at
teardown. Blocking tasks wait on the file ``gate`` (conftest), never on a
blind sleep.
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import multiprocessing.pool
import os
import re
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from conftest import IS_STDLIB, IS_THREAD
from support import tasks
from support.limits import RESULT_TIMEOUT, TERMINATE_DEADLINE
from support.processes import terminate_within_deadline, wait_until_gone

pytestmark = pytest.mark.timeout(30)

#: Generous upper bound for terminate() to return and for killed workers to go.
SQUARES = [x * x for x in range(100)]


def make_pool(*args, **kwargs):
    """The pool under test, called with ``multiprocessing.Pool``'s signature."""
    if IS_STDLIB:
        context = kwargs.pop("context", None) or multiprocessing.get_context("fork")
        return multiprocessing.pool.Pool(*args, context=context, **kwargs)
    import gilfree

    if IS_THREAD:
        assert "context" not in kwargs, "a start method: mark the test process_only"
        kwargs["backend"] = "thread"
    return gilfree.Pool(*args, **kwargs)


def default_worker_count():
    """How many workers ``processes=None`` means, as the stdlib computes it."""
    count_cpus = getattr(os, "process_cpu_count", os.cpu_count)  # 3.13+: the usable CPUs
    return count_cpus() or 1


def wait_for_some(paths, count, timeout=RESULT_TIMEOUT):
    """Wait until at least ``count`` of ``paths`` exist; return whether they did."""
    deadline = time.monotonic() + timeout
    while sum(os.path.exists(path) for path in paths) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def read_pid(path):
    assert tasks.wait_for_file(path, RESULT_TIMEOUT), f"task never started: {path}"
    return int(Path(path).read_text())


@pytest.fixture(scope="module")
def pool():
    """A two-worker pool shared by the tests that only compute."""
    the_pool = make_pool(2)
    yield the_pool
    terminate_within_deadline([the_pool])


@pytest.fixture
def new_pool():
    """Factory for fresh pools (``make_pool``'s arguments); all are terminated after the test."""
    created = []

    def factory(*args, **kwargs):
        the_pool = make_pool(*args, **kwargs)
        created.append(the_pool)
        return the_pool

    yield factory
    terminate_within_deadline(created)


# --- constructor ---------------------------------------------------------------------


@pytest.mark.process_only
def test_processes_none_starts_one_worker_per_cpu(new_pool, gate):
    count = default_worker_count()
    the_pool = new_pool()
    # count + 1 tasks that each hold a worker: the first `count` run at once on distinct
    # workers; the last one only runs after the gate opens, on a worker already used.
    started = [gate.started_path() for _ in range(count + 1)]
    results = [
        the_pool.apply_async(tasks.block_then_call, (gate.path, path, tasks.get_pid))
        for path in started
    ]
    assert wait_for_some(started, count), f"fewer than {count} tasks ran at once"
    gate.release()
    pids = [result.get(RESULT_TIMEOUT) for result in results]
    assert len(set(pids)) == count
    assert os.getpid() not in pids


@pytest.mark.parametrize("processes", [0, -1])
def test_non_positive_processes_is_rejected(processes):
    with pytest.raises(ValueError, match="^Number of processes must be at least 1$"):
        make_pool(processes)


@pytest.mark.parametrize("maxtasksperchild", [0, -1, 1.5])
def test_invalid_maxtasksperchild_is_rejected(maxtasksperchild):
    with pytest.raises(ValueError, match="^maxtasksperchild must be a positive int or None$"):
        make_pool(1, maxtasksperchild=maxtasksperchild)


def test_non_callable_initializer_is_rejected():
    with pytest.raises(TypeError, match="^initializer must be a callable$"):
        make_pool(1, initializer=42)


@pytest.mark.gilfree_only
def test_initargs_that_are_not_a_tuple_are_rejected_naming_them():
    with pytest.raises(TypeError, match="^initargs must be a tuple of the initializer's"):
        make_pool(1, initializer=print, initargs=5)


@pytest.mark.process_only
def test_initializer_runs_once_in_each_worker(new_pool, gate):
    the_pool = new_pool(2, tasks.record_init, ("configured",))  # positional, as the stdlib's
    started = [gate.started_path() for _ in range(2)]
    results = [
        the_pool.apply_async(tasks.block_then_call, (gate.path, path, tasks.get_init_state))
        for path in started
    ]
    gate.wait_started(started)  # both tasks run at once: one in each worker
    gate.release()
    states = [result.get(RESULT_TIMEOUT) for result in results]
    assert len({pid for pid, _, _ in states}) == 2
    assert [(value, calls) for _, value, calls in states] == [("configured", 1)] * 2


@pytest.mark.process_only
def test_maxtasksperchild_replaces_workers(new_pool):
    the_pool = new_pool(1, maxtasksperchild=1)
    pids = [the_pool.apply(tasks.get_pid) for _ in range(3)]
    assert len(set(pids)) == 3
    assert os.getpid() not in pids


@pytest.mark.process_only
def test_context_argument_is_honoured(new_pool, monkeypatch):
    # A spawned worker starts from a fresh interpreter: module state set in the
    # parent after startup does not reach it (a forked one would inherit it).
    monkeypatch.setattr(tasks, "_init_value", "set-in-parent")
    the_pool = new_pool(1, context=multiprocessing.get_context("spawn"))
    assert the_pool.map(tasks.square, range(5)) == SQUARES[:5]
    pid, value, _ = the_pool.apply(tasks.get_init_state)
    assert pid != os.getpid()
    assert value is None


# --- apply / apply_async -------------------------------------------------------------


def test_apply_returns_the_result(pool):
    assert pool.apply(tasks.square, (7,)) == 49


def test_apply_passes_args_and_kwds(pool):
    assert pool.apply(tasks.echo, (1, "two"), {"three": 3}) == ((1, "two"), {"three": 3})
    assert pool.apply(tasks.echo_kwargs, kwds={"a": [1]}) == {"a": [1]}


@pytest.mark.parametrize(
    ("args", "kwds", "message"),
    [
        (5, {}, "support.tasks.square() argument after * must be an iterable, not int"),
        ((1,), 5, "support.tasks.square() argument after ** must be a mapping, not int"),
    ],
)
def test_apply_async_with_arguments_a_call_refuses_fails_its_result(pool, args, kwds, message):
    """As in the stdlib, where the worker's call raises: the result fails and its
    error_callback runs (gilfree raised at once, naming its own executor's submit)."""
    errors = []
    result = pool.apply_async(tasks.square, args, kwds, error_callback=errors.append)
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        result.get(timeout=RESULT_TIMEOUT)
    assert [str(error) for error in errors] == [message]
    assert not result.successful()


def test_apply_async_ready_wait_successful_get(new_pool, gate):
    the_pool = new_pool(1)
    started = gate.started_path()
    result = the_pool.apply_async(tasks.block_until_released, (gate.path, "done", started))
    gate.wait_started([started])
    assert not result.ready()
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    assert result.wait(0.05) is None
    assert not result.ready()
    gate.release()
    result.wait(RESULT_TIMEOUT)
    assert result.ready()
    assert result.successful()
    assert result.get() == "done"
    assert result.get(0) == "done"


def test_get_timeout_on_blocked_task_raises_timeout_error(new_pool, gate):
    assert multiprocessing.TimeoutError is multiprocessing.context.TimeoutError
    the_pool = new_pool(1)
    result = the_pool.apply_async(tasks.block_until_released, (gate.path, "late"))
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.05)
    gate.release()
    assert result.get(RESULT_TIMEOUT) == "late"


def test_callback_runs_with_the_result_before_get_returns(pool):
    results, errors = [], []
    result = pool.apply_async(
        tasks.square, (6,), callback=results.append, error_callback=errors.append
    )
    assert result.get(RESULT_TIMEOUT) == 36
    assert results == [36]
    assert errors == []


def test_error_callback_receives_the_exception(pool):
    results, errors = [], []
    result = pool.apply_async(
        tasks.raise_custom_error,
        ("boom", 7),
        callback=results.append,
        error_callback=errors.append,
    )
    with pytest.raises(tasks.CustomError) as info:
        result.get(RESULT_TIMEOUT)
    assert len(errors) == 1
    assert errors[0] is info.value
    assert results == []
    assert result.ready()
    assert not result.successful()


@pytest.mark.parametrize(
    "function, args, error_type",
    [
        (tasks.raise_custom_error, ("boom", 7), tasks.CustomError),
        (tasks.raise_value_error, ("bad",), ValueError),
        (tasks.raise_key_error, ("missing",), KeyError),
    ],
    ids=["custom", "ValueError", "KeyError"],
)
@pytest.mark.process_only
def test_worker_exception_is_reraised_with_remote_traceback(pool, function, args, error_type):
    with pytest.raises(error_type) as info:
        pool.apply(function, args)
    error = info.value
    assert type(error) is error_type
    assert error.args == args
    assert type(error.__cause__).__name__ == "RemoteTraceback"
    assert function.__name__ in str(error.__cause__)
    # The pool is still usable.
    assert pool.apply(tasks.square, (3,)) == 9


# --- map / map_async / starmap ----------------------------------------------------------


@pytest.mark.parametrize("chunksize", [None, 1, 7, 1000])
def test_map_returns_results_in_order(pool, chunksize):
    assert pool.map(tasks.square, range(100), chunksize=chunksize) == SQUARES


def test_map_of_empty_input_is_an_empty_list(pool):
    assert pool.map(tasks.square, []) == []


def test_map_accepts_a_generator(pool):
    assert pool.map(tasks.square, (x for x in range(100))) == SQUARES


def test_map_raises_the_exception_of_a_failing_item(pool):
    with pytest.raises(ValueError, match="^bad value 13$"):
        pool.map(functools.partial(tasks.raise_if_equal, bad=13), range(50))
    assert pool.map(tasks.square, range(10)) == SQUARES[:10]


def test_map_async_callback_receives_the_whole_list(pool):
    results, errors = [], []
    result = pool.map_async(
        tasks.square, range(100), callback=results.append, error_callback=errors.append
    )
    assert result.get(RESULT_TIMEOUT) == SQUARES
    assert results == [SQUARES]
    assert errors == []
    assert result.successful()


def test_map_async_error_callback_receives_the_exception(pool):
    results, errors = [], []
    result = pool.map_async(
        functools.partial(tasks.raise_if_equal, bad=3),
        range(10),
        chunksize=2,
        callback=results.append,
        error_callback=errors.append,
    )
    with pytest.raises(ValueError, match="^bad value 3$") as info:
        result.get(RESULT_TIMEOUT)
    assert len(errors) == 1
    assert errors[0] is info.value
    assert results == []
    assert not result.successful()


def test_starmap_unpacks_argument_tuples(pool):
    assert pool.starmap(tasks.add, [(1, 2), (3, 4), ("a", "b")]) == [3, 7, "ab"]
    assert pool.starmap(tasks.add, []) == []


def test_starmap_async_with_callback(pool):
    results = []
    result = pool.starmap_async(
        tasks.add, zip(range(20), range(20)), chunksize=3, callback=results.append
    )
    expected = [2 * x for x in range(20)]
    assert result.get(RESULT_TIMEOUT) == expected
    assert results == [expected]


@pytest.mark.parametrize(
    "function, inputs",
    [
        (tasks.square, range(50)),
        (str, range(-5, 50)),
        (abs, range(-20, 20)),
        (len, ["", "a", "ab", (1, 2, 3), {"k": 1}]),
        (tasks.fib, range(20)),
    ],
    ids=["square", "str", "abs", "len", "fib"],
)
def test_results_match_the_builtin_map(pool, function, inputs):
    expected = list(map(function, inputs))
    assert pool.map(function, inputs) == expected
    assert list(pool.imap(function, inputs)) == expected
    assert sorted(pool.imap_unordered(function, inputs), key=repr) == sorted(expected, key=repr)
    assert pool.starmap(function, [(x,) for x in inputs]) == expected


def test_starmap_matches_builtin_map_over_two_iterables(pool):
    left, right = range(30), range(100, 130)
    assert pool.starmap(tasks.add, zip(left, right)) == list(map(tasks.add, left, right))


# --- imap / imap_unordered --------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 3, 1000])
def test_imap_yields_results_in_order(pool, chunksize):
    iterator = pool.imap(tasks.square, range(100), chunksize)
    assert iter(iterator) is iterator
    assert list(iterator) == SQUARES


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_rejects_a_zero_chunksize(pool, method):
    with pytest.raises(ValueError, match="^Chunksize must be 1\\+, not 0$"):
        getattr(pool, method)(tasks.square, range(10), chunksize=0)


@pytest.mark.process_only
def test_initargs_from_the_default_context_reach_the_workers_as_the_stdlibs_do(new_pool):
    lock, counter = multiprocessing.Lock(), multiprocessing.Value("i", 0)
    the_pool = new_pool(2, initializer=tasks.keep_lock_and_counter, initargs=(lock, counter))
    assert the_pool.map(tasks.count_under_lock, range(10)) == list(range(10))
    assert counter.value == 10


@pytest.mark.gilfree_only  # the stdlib's pool loses such a proxy (apply_async never ends)
def test_a_managers_proxy_made_for_the_task_alone_reaches_the_worker(pool):
    with multiprocessing.Manager() as manager:
        assert pool.apply_async(tasks.set_key, (manager.dict(), "x", 1)).get(RESULT_TIMEOUT) == 1
        proxies = (manager.dict() for _ in range(4))  # read lazily, chunk by chunk
        set_x = functools.partial(tasks.set_key, key="x", value=1)
        assert list(pool.imap(set_x, proxies, 1)) == [1] * 4


@pytest.mark.gilfree_only
@pytest.mark.parametrize("method", ["map", "map_async", "imap", "imap_unordered", "starmap"])
def test_a_chunksize_that_is_not_an_integer_is_refused_and_the_pool_goes_on(pool, method):
    # The stdlib's map_async never completes with chunksize=2.0 (its task thread dies); this
    # once broke the pool for good.
    with pytest.raises(ValueError, match="^chunksize must be an integer, got 2.0$"):
        getattr(pool, method)(tasks.add if method == "starmap" else tasks.square, [], chunksize=2.0)
    assert pool.apply(tasks.square, (3,)) == 9


def test_imap_next_timeout_then_stop_iteration(new_pool, gate):
    the_pool = new_pool(1)
    iterator = the_pool.imap(functools.partial(tasks.block_until_released, gate.path), ["only"])
    with pytest.raises(multiprocessing.TimeoutError):
        iterator.next(timeout=0.05)
    with pytest.raises(multiprocessing.TimeoutError):
        iterator.__next__(0.05)  # the stdlib's __next__ is next, timeout and all
    gate.release()
    assert iterator.next(timeout=RESULT_TIMEOUT) == "only"
    with pytest.raises(StopIteration):
        iterator.next(timeout=RESULT_TIMEOUT)
    with pytest.raises(StopIteration):
        next(iterator)


def test_imap_waits_for_the_first_item_in_order(new_pool, gate):
    the_pool = new_pool(2)
    iterator = the_pool.imap(functools.partial(tasks.block_on_zero, gate.path), range(10))
    with pytest.raises(multiprocessing.TimeoutError):
        iterator.next(timeout=0.1)  # item 0 is held, so nothing can come out yet
    gate.release()
    assert list(iterator) == list(range(10))


def test_imap_unordered_yields_finished_results_first(new_pool, gate):
    the_pool = new_pool(2)
    iterator = the_pool.imap_unordered(
        functools.partial(tasks.block_on_zero, gate.path), range(10), chunksize=1
    )
    # Item 0 holds one worker until the gate opens; the other worker runs the rest.
    first = iterator.next(timeout=RESULT_TIMEOUT)
    assert first != 0
    gate.release()
    assert sorted([first, *iterator]) == list(range(10))


def test_imap_unordered_yields_every_result(pool):
    assert sorted(pool.imap_unordered(tasks.square, range(100), chunksize=4)) == SQUARES
    assert list(pool.imap_unordered(tasks.square, [])) == []


def numbers_then_error(count):
    """An input iterable that fails after ``count`` items."""
    yield from range(count)
    raise ValueError("input iterable failed")


def test_imap_raises_the_input_iterables_exception_after_earlier_results(pool):
    iterator = pool.imap(tasks.square, numbers_then_error(3))
    assert [iterator.next(timeout=RESULT_TIMEOUT) for _ in range(3)] == [0, 1, 4]
    with pytest.raises(ValueError, match="^input iterable failed$"):
        iterator.next(timeout=RESULT_TIMEOUT)
    with pytest.raises(StopIteration):
        iterator.next(timeout=RESULT_TIMEOUT)
    assert pool.map(tasks.square, range(10)) == SQUARES[:10]


def test_imap_unordered_raises_the_input_iterables_exception_among_results(pool):
    iterator = pool.imap_unordered(tasks.square, numbers_then_error(3))
    results, errors = [], []
    for _ in range(4):  # three results and the exception, in any order
        try:
            results.append(iterator.next(timeout=RESULT_TIMEOUT))
        except ValueError as error:
            errors.append(error)
    assert sorted(results) == [0, 1, 4]
    assert [str(error) for error in errors] == ["input iterable failed"]
    with pytest.raises(StopIteration):
        iterator.next(timeout=RESULT_TIMEOUT)


def refilled_row(count):
    """A generator that refills one list and yields it again for each item (a reused buffer)."""
    row = [0]
    for number in range(count):
        row[0] = number
        yield row


@pytest.mark.process_only  # threads get the object itself, as ThreadPool's do
@pytest.mark.parametrize("chunksize", [None, 1])
def test_imap_sends_each_state_of_an_object_the_input_refills(pool, chunksize):
    """Each item is encoded before the next is read, as the stdlib's imap pickles it: every
    task saw the next item's contents (the one read ahead), or with adaptive chunks the last
    one's."""
    if chunksize is None and IS_STDLIB:
        pytest.skip("the stdlib's imap has no adaptive chunks")
    expected = [(([number],), {}) for number in range(40)]
    assert list(pool.imap(tasks.echo, refilled_row(40), chunksize)) == expected
    unordered = pool.imap_unordered(tasks.echo, refilled_row(40), chunksize)
    assert sorted(unordered) == expected


def test_an_imap_input_that_submits_to_the_same_pool_gets_every_result(pool):
    """The input generator runs while the pool hands out work; what it submits there waits its
    turn (it once cut the generator again from inside itself, or dropped another job)."""
    submitted = []

    def numbers():
        for number in range(40):
            submitted.append(pool.apply_async(tasks.square, (number,)))
            if number % 10 == 0:
                submitted.append(pool.map_async(tasks.square, [number, 1], chunksize=1))
            yield number

    assert list(pool.imap(tasks.square, numbers(), chunksize=1)) == SQUARES[:40]
    assert sorted(pool.imap_unordered(tasks.square, numbers(), chunksize=3)) == SQUARES[:40]
    expected = []
    for number in range(40):
        expected.append(number * number)
        if number % 10 == 0:
            expected.append([number * number, 1])
    assert [result.get(RESULT_TIMEOUT) for result in submitted] == expected * 2


def test_an_error_callback_that_submits_to_the_same_pool_runs_it(pool):
    """The error callback of a map whose item cannot be sent may submit more work: that work
    runs, and the pool goes on."""
    submitted = []

    def resubmit(_error):
        submitted.append(pool.apply_async(tasks.square, (7,)))
        submitted.append(pool.map_async(tasks.square, range(5)))

    failed = pool.map_async(
        tasks.square, [1, 2, threading.Lock()], chunksize=1, error_callback=resubmit
    )
    with pytest.raises(TypeError):
        failed.get(RESULT_TIMEOUT)
    assert [result.get(RESULT_TIMEOUT) for result in submitted] == [49, SQUARES[:5]]
    assert pool.map(tasks.square, range(10)) == SQUARES[:10]


def test_map_raises_the_input_iterables_exception(pool):
    with pytest.raises(ValueError, match="^input iterable failed$"):
        pool.map(tasks.square, numbers_then_error(3))


def test_imap_over_an_infinite_generator_then_terminate(new_pool):
    the_pool = new_pool(2)
    first = list(itertools.islice(the_pool.imap(tasks.square, itertools.count()), 1000))
    assert first == [x * x for x in range(1000)]
    started = time.monotonic()
    the_pool.terminate()
    assert time.monotonic() - started < TERMINATE_DEADLINE


@pytest.mark.gilfree_only
def test_imap_pulls_a_bounded_number_of_items_ahead(new_pool):
    pulled = [0]

    def counting():
        for number in itertools.count():
            pulled[0] = number + 1
            yield number

    the_pool = new_pool(2)
    iterator = the_pool.imap(tasks.square, counting())
    assert [iterator.next(timeout=RESULT_TIMEOUT) for _ in range(100)] == SQUARES
    assert pulled[0] < 50_000
    time.sleep(0.2)  # a runaway prefetcher would keep pulling meanwhile
    assert pulled[0] < 50_000
    the_pool.terminate()


@pytest.mark.gilfree_only
def test_imap_over_a_slow_input_hands_results_out_as_the_input_comes(new_pool):
    # An input that is slow to produce (a socket, a sensor: 1 ms an item) with cheap tasks:
    # sized from the tasks alone, chunks grew to thousands of items, each read while results
    # already received waited, so results lagged the input by thousands of items.
    produced = [0]

    def slow_input():
        for number in itertools.count():
            time.sleep(0.001)
            produced[0] = number + 1
            yield number

    the_pool = new_pool(2)
    results = the_pool.imap(tasks.square, slow_input())
    lags = []
    for index in range(400):
        assert results.next(timeout=RESULT_TIMEOUT) == index * index
        lags.append(produced[0] - index)
    the_pool.terminate()
    assert max(lags) < 1000, max(lags)


@pytest.mark.gilfree_only
@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_leaving_an_imap_loop_stops_its_work_and_join_runs_none_of_the_rest(new_pool, method):
    """``break`` drops the iterator, which stops its job: the rest of a long input is never
    read, neither while the pool is open nor when ``close()`` and ``join()`` wait for the
    outstanding work (the job must not keep its iterator alive)."""
    pulled = [0]

    def counting():
        for number in range(5000):
            pulled[0] = number + 1
            yield number

    the_pool = new_pool(2)
    for taken, _ in enumerate(getattr(the_pool, method)(tasks.square, counting(), 1), 1):
        if taken == 20:
            break
    time.sleep(0.2)  # a job that went on would read on meanwhile
    assert pulled[0] <= 100
    the_pool.close()
    the_pool.join()
    assert pulled[0] <= 100


# --- close / join / terminate / context manager --------------------------------------------


@pytest.mark.process_only
def test_close_then_join_waits_for_outstanding_work(new_pool, gate):
    the_pool = new_pool(2)
    started = [gate.started_path() for _ in range(2)]
    held = [
        the_pool.apply_async(tasks.block_then_call, (gate.path, path, tasks.get_pid))
        for path in started
    ]
    queued = the_pool.map_async(tasks.square, range(20), chunksize=1)
    gate.wait_started(started)
    the_pool.close()
    gate.release()
    the_pool.join()
    assert all(result.ready() for result in held)
    assert queued.ready()
    assert queued.get(0) == SQUARES[:20]
    pids = [result.get(0) for result in held]
    assert wait_until_gone(pids) == set()


def test_submitting_after_close_raises_value_error(new_pool):
    the_pool = new_pool(1)
    the_pool.close()
    with pytest.raises(ValueError, match="^Pool not running$"):
        the_pool.apply_async(tasks.square, (2,))
    with pytest.raises(ValueError, match="^Pool not running$"):
        the_pool.map(tasks.square, range(3))
    the_pool.join()


def test_join_before_close_raises_value_error(new_pool):
    the_pool = new_pool(1)
    with pytest.raises(ValueError, match="^Pool is still running$"):
        the_pool.join()
    assert the_pool.apply(tasks.square, (2,)) == 4


@pytest.mark.process_only
def test_terminate_stops_a_long_map_async_quickly(new_pool, gate, tmp_path):
    the_pool = new_pool(2)
    pid_paths = [str(tmp_path / f"pid-{index}") for index in range(50)]
    the_pool.starmap_async(
        tasks.write_pid_and_block, [(path, gate.path) for path in pid_paths], chunksize=1
    )
    assert wait_for_some(pid_paths, 2), "the two workers never started"
    pids = [read_pid(path) for path in pid_paths if os.path.exists(path)]
    assert len(set(pids)) == 2
    started = time.monotonic()
    the_pool.terminate()
    assert time.monotonic() - started < TERMINATE_DEADLINE
    assert wait_until_gone(pids, TERMINATE_DEADLINE) == set()


@pytest.mark.process_only
def test_with_block_terminates_the_pool(gate, tmp_path):
    pid_path = str(tmp_path / "pid")
    the_pool = make_pool(1)
    with the_pool as entered:
        assert entered is the_pool
        assert the_pool.apply(tasks.square, (3,)) == 9
        the_pool.apply_async(tasks.write_pid_and_block, (pid_path, gate.path))
        pid = read_pid(pid_path)
        started = time.monotonic()
    # __exit__ terminates: the held task's worker is killed, not waited for.
    assert time.monotonic() - started < TERMINATE_DEADLINE
    assert wait_until_gone([pid], TERMINATE_DEADLINE) == set()
    with pytest.raises(ValueError, match="^Pool not running$"):
        the_pool.apply(tasks.square, (3,))
    with pytest.raises(ValueError, match="^Pool not running$"):
        the_pool.map(tasks.square, range(3))
    the_pool.join()


# --- what only gilfree can do -----------------------------------------------------------------


@pytest.mark.gilfree_only
def test_lambdas_and_closures_are_accepted(pool):
    assert pool.map(lambda x: x + 1, range(10)) == list(range(1, 11))
    offset = 100

    def add_offset(x):
        return x + offset

    assert pool.map(add_offset, range(10)) == list(range(100, 110))
    assert pool.apply(lambda a, b=0: a * b, (6,), {"b": 7}) == 42
    assert list(pool.imap(add_offset, range(3))) == [100, 101, 102]


@pytest.mark.gilfree_only
@pytest.mark.parametrize(
    "function, argument",
    [(tasks.kill_self, signal.SIGKILL), (tasks.exit_abruptly, 3)],
    ids=["SIGKILL", "os._exit"],
)
@pytest.mark.process_only
def test_worker_crash_fails_the_task_and_the_pool_recovers(new_pool, function, argument):
    import gilfree

    assert issubclass(gilfree.WorkerCrashedError, BrokenProcessPool)
    the_pool = new_pool(2)
    result = the_pool.apply_async(function, (argument,))
    with pytest.raises(gilfree.WorkerCrashedError):
        result.get(RESULT_TIMEOUT)
    assert result.ready()
    assert not result.successful()
    assert the_pool.map(tasks.square, range(20)) == SQUARES[:20]
    assert the_pool.apply(tasks.square, (5,)) == 25


# --- results that cannot travel back ------------------------------------------------------------


@pytest.mark.process_only
def test_unpicklable_result_raises_maybe_encoding_error(new_pool):
    the_pool = new_pool(1)
    result = the_pool.apply_async(tasks.return_lock)
    with pytest.raises(
        multiprocessing.pool.MaybeEncodingError, match="^Error sending result"
    ) as raised:
        result.get(RESULT_TIMEOUT)
    # The value is the result's repr, as the stdlib gives it (it was the quoted word 'result').
    assert raised.value.value.startswith("<unlocked _thread.lock object at ")
    assert str(raised.value).startswith("Error sending result: '<unlocked _thread.lock object")
    assert not result.successful()
    with pytest.raises(multiprocessing.pool.MaybeEncodingError):
        the_pool.starmap(tasks.return_lock, [(), ()])
    assert the_pool.apply(tasks.square, (4,)) == 16
    assert the_pool.map(tasks.square, range(10)) == SQUARES[:10]


@pytest.mark.process_only
def test_a_pool_task_raising_an_unpicklable_exception_raises_maybe_encoding_error(new_pool):
    # As the stdlib's pool reports an exception it cannot send back.
    the_pool = new_pool(1)
    with pytest.raises(
        multiprocessing.pool.MaybeEncodingError, match="^Error sending result"
    ) as raised:
        the_pool.apply(tasks.raise_unpicklable_error)
    assert "cannot pickle '_thread.lock' object" in str(raised.value)
    if not IS_STDLIB:  # the stdlib's names an ExceptionWithTraceback object
        assert "UnpicklableError: " in str(raised.value)
    assert the_pool.apply(tasks.add, (1, 2)) == 3


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_a_map_result_that_cannot_travel_back_is_named_by_its_place_in_the_map(pool):
    with pytest.raises(multiprocessing.pool.MaybeEncodingError, match=r"result\[6\]\['lock'\]"):
        pool.starmap(tasks.lock_at, [(x, 6) for x in range(10)], chunksize=4)


# --- workers start with the pool; errors of arguments and inputs, as the stdlib raises them ----


def touch_pid_file(directory):
    """An initializer: leave a file named after this worker's pid in ``directory``."""
    Path(directory, str(os.getpid())).touch()


@pytest.mark.process_only
def test_every_worker_starts_with_the_pool_and_runs_its_initializer(new_pool, tmp_path):
    new_pool(3, touch_pid_file, (str(tmp_path),))  # no task is ever submitted
    deadline = time.monotonic() + RESULT_TIMEOUT
    while len(list(tmp_path.iterdir())) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(list(tmp_path.iterdir())) == 3


@pytest.mark.process_only
def test_a_worker_that_exits_is_replaced_without_waiting_for_work(new_pool):
    # As multiprocessing's pool: the worker that did its one task exits, and another starts
    # in its place while no work is waiting.
    the_pool = new_pool(2, maxtasksperchild=1)
    retired = the_pool.apply(tasks.get_pid)

    def replaced():
        live = {process.pid for process in the_pool._pool if process.is_alive()}
        return len(live) == 2 and 0 not in live and retired not in live

    assert tasks.wait_for(replaced, RESULT_TIMEOUT), [p.pid for p in the_pool._pool]


def test_an_argument_that_cannot_be_sent_raises_pickles_own_error(pool):
    with pytest.raises(TypeError, match="lock"):
        pool.map(tasks.square, [1, threading.Lock()])
    with pytest.raises(TypeError, match="lock"):
        pool.apply(tasks.square, (threading.Lock(),))
    assert pool.map(tasks.square, range(3)) == [0, 1, 4]


@pytest.mark.parametrize("kind", ["imap", "imap_unordered"])
def test_imap_results_read_after_close_and_join_are_all_there(new_pool, kind):
    # A common tutorial order: join waits for every task, the input read ahead or not.
    the_pool = new_pool(2)
    results = getattr(the_pool, kind)(tasks.square, range(1000), 10)
    the_pool.close()
    the_pool.join()
    assert sorted(results) == [x * x for x in range(1000)]


def numbers_then_error_at(count):
    """An input iterable that fails after ``count`` items."""
    yield from range(count)
    raise ValueError("input failed")


@pytest.mark.parametrize("chunksize", [None, 1, 2])
@pytest.mark.parametrize("kind", ["imap", "imap_unordered"])
def test_an_input_error_comes_after_the_results_of_every_item_before_it(pool, kind, chunksize):
    if IS_STDLIB and (chunksize == 2 or kind == "imap_unordered"):
        pytest.skip("the stdlib drops the items of a chunk being filled, or may raise first")
    # gilfree cuts its own chunks even at the default: none of the 7 items may be lost.
    options = {} if chunksize is None else {"chunksize": chunksize}
    received = []
    with pytest.raises(ValueError, match="^input failed$"):
        for value in getattr(pool, kind)(tasks.square, numbers_then_error_at(7), **options):
            received.append(value)
    assert sorted(received) == SQUARES[:7]
