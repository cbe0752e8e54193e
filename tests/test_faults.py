"""Faults and lifecycle: workers that crash or hang, retries, timeouts, recycling, statistics,
and what happens to the workers when the parent is killed, interrupted or simply exits.

Every test checks that each submitted task gets exactly one outcome (its result, or the one
error it should get), using ``outcomes``: a list of ``("ok", value)`` / ``("error", type)`` /
``("cancelled", None)`` per future, asserted whole. Worker pids learned along the way are
checked to be gone (reaped: a zombie counts as present, except for orphans of a killed script).
Tasks that must hang wait for a gate file; timeouts are short (0.3 to 1 s) and elapsed times
are only checked against the timeout itself (a task never fails before it) or generous bounds
stated by the issue (parent death: 1 s; Ctrl-C: 0.5 s).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

import gilfree
from conftest import IMPL
from gilfree import SerializationError, TaskTimeoutError, WorkerCrashedError
from support import tasks
from support.limits import RESULT_TIMEOUT, TESTS_DIRECTORY
from support.processes import process_state, wait_until_gone

pytestmark = pytest.mark.gilfree_only


#: How each ``tasks.crash`` mode is described in a WorkerCrashedError's message.
CRASHES = [("SIGKILL", "signal SIGKILL"), ("SIGSEGV", "signal SIGSEGV"), ("exit3", "exit code 3")]


# --- outcomes ---------------------------------------------------------------------------------


def outcomes(futures, timeout=RESULT_TIMEOUT):
    """Each future's single outcome, in order: ``("ok", result)``, ``("error", type)`` or
    ``("cancelled", None)``. Fails if any future has none within ``timeout``."""
    futures = list(futures)
    _, not_done = concurrent.futures.wait(futures, timeout=timeout)
    assert not not_done, f"{len(not_done)} of {len(futures)} futures got no outcome in {timeout} s"
    found = []
    for future in futures:
        if future.cancelled():
            found.append(("cancelled", None))
            continue
        error = future.exception()
        found.append(("ok", future.result()) if error is None else ("error", type(error)))
    return found


def ok(values):
    return [("ok", value) for value in values]


def drain(iterator):
    """Everything a map iterator yields before it raises: ``(results, error or None)``."""
    results = []
    try:
        for value in iterator:
            results.append(value)
    except Exception as error:
        return results, error
    return results, None


def pid_in(message):
    found = re.search(r"\bpid (\d+)\b", message)
    assert found, f"no pid in {message!r}"
    return int(found.group(1))


def live_worker_pids(executor):
    return {entry.pid for entry in executor.stats() if entry.alive}


def assert_usable(executor, avoid_pids=()):
    """The executor still runs work (submit and map), on workers other than ``avoid_pids``."""
    futures = [executor.submit(tasks.sleep_and_get_pid, 0.01) for _ in range(4)]
    pids = [value for kind, value in outcomes(futures) if kind == "ok"]
    assert len(pids) == 4, "tasks failed on a repaired executor"
    assert not set(pids) & set(avoid_pids), "a dead worker's pid ran a task"
    assert not set(avoid_pids) & set(executor._processes)
    assert list(executor.map(tasks.square, range(200))) == [x * x for x in range(200)]


def resident_bytes():
    """This process's resident memory (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- argument checks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"task_timeout": 0}, ValueError),
        ({"task_timeout": -1.5}, ValueError),
        ({"task_timeout": "1"}, TypeError),
        ({"task_timeout": True}, TypeError),
        ({"retries": -1}, ValueError),
        ({"retries": 1.0}, TypeError),
        ({"retries": "2"}, TypeError),
        ({"retries": True}, TypeError),
        ({"max_memory_per_child": 0}, ValueError),
        ({"max_memory_per_child": -1}, ValueError),
        ({"max_memory_per_child": 1.5e9}, (TypeError, ValueError)),
        ({"max_memory_per_child": "1G"}, (TypeError, ValueError)),
        ({"max_memory_per_child": True}, (TypeError, ValueError)),
    ],
)
def test_constructor_rejects_bad_fault_settings(make_executor, kwargs, error):
    name = next(iter(kwargs))
    with pytest.raises(error, match=name):
        make_executor(max_workers=1, **kwargs)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"timeout": 0}, ValueError),
        ({"timeout": -0.1}, ValueError),
        ({"timeout": "0.5"}, TypeError),
        ({"timeout": False}, TypeError),
        ({"retries": -2}, ValueError),
        ({"retries": 0.5}, TypeError),
        ({"retries": None}, TypeError),
        ({"retries": True}, TypeError),
    ],
)
def test_submit_with_rejects_bad_timeout_and_retries(shared_executor, kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        shared_executor.submit_with(tasks.square, (3,), **kwargs)
    assert outcomes([shared_executor.submit_with(tasks.square, (3,))]) == [("ok", 9)]


@pytest.mark.process_only
def test_submit_with_passes_args_and_kwargs_unchanged(shared_executor):
    kwargs = {"timeout": 0.001, "retries": -1, "fn": "f", "args": (1,), "kwargs": {}}
    futures = [
        shared_executor.submit_with(tasks.echo_kwargs, kwargs=kwargs),
        shared_executor.submit_with(tasks.echo, (1, 2), {"timeout": None}, timeout=5, retries=1),
        shared_executor.submit_with(tasks.add, [2, 3]),
        shared_executor.submit_with(tasks.get_pid),
    ]
    found = outcomes(futures)
    assert found[:3] == [("ok", kwargs), ("ok", ((1, 2), {"timeout": None})), ("ok", 5)]
    assert found[3][0] == "ok"


# --- a worker dying under its task ------------------------------------------------------------


@pytest.mark.parametrize("how, ending", CRASHES, ids=[how for how, _ in CRASHES])
@pytest.mark.process_only
def test_a_crash_fails_only_its_task_and_the_worker_is_replaced(executor, tmp_path, how, ending):
    pid_path = tmp_path / "crashed-pid"
    before = [executor.submit(tasks.square, x) for x in range(5)]
    doomed = executor.submit(tasks.crash, how, str(pid_path))
    after = [executor.submit(tasks.square, x) for x in range(5, 40)]
    found = outcomes(before + [doomed] + after)
    assert found == ok(x * x for x in range(5)) + [("error", WorkerCrashedError)] + ok(
        x * x for x in range(5, 40)
    )
    error = doomed.exception()
    assert isinstance(error, BrokenProcessPool)
    pid = int(pid_path.read_text())
    message = str(error)
    assert pid_in(message) == pid, message
    assert ending in message
    assert "tasks.crash" in message
    assert wait_until_gone([pid]) == set(), "the crashed worker was not reaped"
    assert_usable(executor, avoid_pids=[pid])


@pytest.mark.process_only
def test_tasks_queued_behind_a_crash_on_the_same_worker_complete(make_executor, start_method):
    executor = make_executor(max_workers=1, start_method=start_method)
    # Fast tasks first, so that the worker gets more than one task in flight at a time.
    assert list(executor.map(tasks.square, range(300))) == [x * x for x in range(300)]
    futures = [executor.submit(tasks.crash_if, x, 10) for x in range(40)]
    expected = ok(x * x for x in range(10)) + [("error", WorkerCrashedError)]
    assert outcomes(futures) == expected + ok(x * x for x in range(11, 40))
    assert_usable(executor)


@pytest.mark.process_only
def test_several_crashes_in_a_row_leave_every_other_task_untouched(make_executor, start_method):
    executor = make_executor(max_workers=2, start_method=start_method)
    hows = ["SIGKILL", "exit3", "SIGSEGV"] * 2
    futures, expected = [], []
    for index, how in enumerate(hows):
        futures += [executor.submit(tasks.square, index), executor.submit(tasks.crash, how)]
        expected += [("ok", index * index), ("error", WorkerCrashedError)]
    assert outcomes(futures) == expected
    crashes = sum(entry.crashes for entry in executor.stats())
    assert crashes == len(hows)
    assert_usable(executor)


@pytest.mark.parametrize("chunksize", [5, None])
@pytest.mark.process_only
def test_a_crash_in_map_raises_worker_crashed_error_after_the_results_before_it(
    executor, chunksize
):
    iterator = executor.map(tasks.crash_if, range(60), [32] * 60, chunksize=chunksize)
    results, error = drain(iterator)
    assert type(error) is WorkerCrashedError
    assert "tasks.crash_if" in str(error)
    assert "signal SIGKILL" in str(error)
    # Only the crashed item is lost: its chunk is sent again item by item, and every item
    # before it comes back.
    assert results == [x * x for x in range(32)]
    assert_usable(executor)


def imap_outcomes(iterator):
    """Each item an imap iterator gives: its result, or the type of the error it raised."""
    found = []
    while True:
        try:
            found.append(iterator.next(timeout=RESULT_TIMEOUT))
        except StopIteration:
            return found
        except Exception as error:
            found.append(type(error))


@pytest.mark.gilfree_only
@pytest.mark.process_only
@pytest.mark.parametrize("chunksize", [None, 8])
def test_pool_imap_fails_only_the_item_that_crashed_or_cannot_be_sent(start_method, chunksize):
    """A crash inside a chunk, or one result that cannot be sent back, failed the chunk as a
    whole: imap gave one error for it and went on without its other items' results."""
    from multiprocessing.pool import MaybeEncodingError

    expected = [x * x for x in range(300)]
    expected[100] = WorkerCrashedError
    with gilfree.Pool(2, context=None if start_method == "zygote" else start_method) as pool:
        crashed = pool.imap(functools.partial(tasks.crash_if, bad=100), range(300), chunksize)
        assert imap_outcomes(crashed) == expected
        lock_at = functools.partial(tasks.lock_at, at=150)
        unsent = pool.imap_unordered(lock_at, range(300), chunksize)
        outcomes_seen = imap_outcomes(unsent)
        assert outcomes_seen.count(MaybeEncodingError) == 1
        assert sorted(x for x in outcomes_seen if x is not MaybeEncodingError) == [
            x for x in range(300) if x != 150
        ]


@pytest.mark.process_only
def test_a_crash_names_a_callable_whose_repr_raises_by_its_type(executor):
    error = executor.submit(tasks.CrashingCallable()).exception(timeout=RESULT_TIMEOUT)
    assert type(error) is WorkerCrashedError
    assert str(error).endswith("while running a CrashingCallable object")
    assert_usable(executor)


# --- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["executor", "submit_with"])
@pytest.mark.process_only
def test_a_task_that_crashes_once_succeeds_with_one_retry(
    make_executor, start_method, tmp_path, where
):
    marker = tmp_path / "crashed-once"
    if where == "executor":
        executor = make_executor(max_workers=2, start_method=start_method, retries=1)
        flaky = executor.submit(tasks.crash_the_first_time, str(marker), "second time lucky")
    else:
        executor = make_executor(max_workers=2, start_method=start_method)
        flaky = executor.submit_with(
            tasks.crash_the_first_time, (str(marker), "second time lucky"), retries=1
        )
    others = [executor.submit(tasks.square, x) for x in range(20)]
    assert outcomes([flaky] + others) == [("ok", "second time lucky")] + ok(
        x * x for x in range(20)
    )
    assert marker.exists(), "the task never crashed: the test proves nothing"
    assert sum(entry.crashes for entry in executor.stats()) == 1


@pytest.mark.process_only
def test_a_task_that_crashes_once_fails_without_retries(make_executor, start_method, tmp_path):
    marker = tmp_path / "crashed-once"
    executor = make_executor(max_workers=2, start_method=start_method)
    flaky = executor.submit(tasks.crash_the_first_time, str(marker), "never")
    assert outcomes([flaky]) == [("error", WorkerCrashedError)]
    assert "tried" not in str(flaky.exception())
    # The same call succeeds now that the marker exists: the pool was not harmed.
    again = executor.submit(tasks.crash_the_first_time, str(marker), "now")
    assert outcomes([again]) == [("ok", "now")]


@pytest.mark.process_only
def test_retries_run_a_crashing_task_on_fresh_workers_then_say_how_often(
    make_executor, start_method, tmp_path
):
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    executor = make_executor(max_workers=2, start_method=start_method, retries=2)
    doomed = executor.submit(tasks.count_attempt_then_crash, str(attempts))
    others = [executor.submit(tasks.square, x) for x in range(30)]
    assert outcomes([doomed] + others) == [("error", WorkerCrashedError)] + ok(
        x * x for x in range(30)
    )
    runs = sorted(int(name.split("-")[1]) for name in os.listdir(attempts))
    assert len(runs) == 3, f"expected 1 run + 2 retries, saw {len(runs)} runs"
    assert len(set(runs)) == 3, "each retry must run on a fresh worker"
    message = str(doomed.exception())
    assert "(tried 3 times)" in message
    assert pid_in(message) in runs
    assert "tasks.count_attempt_then_crash" in message
    assert wait_until_gone(runs) == set()
    assert_usable(executor, avoid_pids=runs)


@pytest.mark.process_only
def test_submit_with_retries_overrides_the_executor_default(make_executor, tmp_path):
    executor = make_executor(max_workers=2, retries=3)
    no_retry = executor.submit_with(
        tasks.crash_the_first_time, (str(tmp_path / "a"), "a"), retries=0
    )
    default = executor.submit_with(tasks.crash_the_first_time, (str(tmp_path / "b"), "b"))
    assert outcomes([no_retry, default]) == [("error", WorkerCrashedError), ("ok", "b")]


@pytest.mark.process_only
def test_a_crashed_map_chunk_is_retried(make_executor, start_method, tmp_path):
    done = tmp_path / "already-done"
    done.touch()
    markers = [str(done)] * 50
    markers[23] = str(tmp_path / "crash-on-item-23")
    executor = make_executor(max_workers=2, start_method=start_method, retries=1)
    results = list(executor.map(tasks.crash_the_first_time, markers, range(50), chunksize=4))
    assert results == list(range(50))
    assert os.path.exists(markers[23])
    assert sum(entry.crashes for entry in executor.stats()) == 1


# --- timeouts ---------------------------------------------------------------------------------


def started_pids(directory):
    return [int(name.split("-")[1]) for name in os.listdir(directory)]


@pytest.mark.process_only
def test_a_task_past_its_timeout_fails_and_its_worker_is_replaced(
    make_executor, start_method, gate, tmp_path
):
    executor = make_executor(max_workers=2, start_method=start_method, task_timeout=0.5)
    started = tmp_path / "started"
    started.mkdir()
    begin = time.monotonic()
    hung = executor.submit(tasks.record_start_and_block, str(started), gate.path)
    others = [executor.submit(tasks.sleep_and_return, 0.05, x) for x in range(12)]
    found = outcomes([hung] + others)
    elapsed = time.monotonic() - begin
    assert found == [("error", TaskTimeoutError)] + ok(range(12))
    error = hung.exception()
    assert isinstance(error, TimeoutError)
    [pid] = started_pids(started)
    message = str(error)
    assert "tasks.record_start_and_block" in message
    assert "0.5 s" in message
    assert pid_in(message) == pid
    assert elapsed >= 0.5, "the task failed before its timeout"
    assert wait_until_gone([pid]) == set(), "the timed-out worker was not killed and reaped"
    stats = executor.stats()
    assert sum(entry.timeouts for entry in stats) == 1
    assert sum(entry.crashes for entry in stats) == 0
    assert_usable(executor, avoid_pids=[pid])


@pytest.mark.process_only
def test_a_worker_killed_for_its_task_takes_the_processes_it_started_along(
    make_executor, gate, tmp_path
):
    """A subprocess (or a nested pool's workers) that the task started would run on orphaned,
    holding the parent's output open; loky kills them with the worker too."""
    executor = make_executor(max_workers=1, task_timeout=0.5)
    pid_path = tmp_path / "child.pid"
    future = executor.submit(tasks.start_child_and_block, str(pid_path), gate.path)
    assert tasks.wait_for_file(str(pid_path))
    child = int(pid_path.read_text())
    try:
        with pytest.raises(TaskTimeoutError):
            future.result(timeout=RESULT_TIMEOUT)
        assert wait_until_gone([child], zombie_is_gone=True) == set(), "the task's child lived"
    finally:
        tasks.kill_quietly([child])
    assert executor.submit(tasks.square, 3).result(timeout=RESULT_TIMEOUT) == 9


@pytest.mark.process_only
def test_a_timeout_does_not_touch_tasks_running_beside_it(make_executor, gate, tmp_path):
    executor = make_executor(max_workers=2)
    started = gate.started_path()
    hung = executor.submit_with(
        tasks.block_until_released, (gate.path, "released", started), timeout=0.5
    )
    gate.wait_started([started])
    long = executor.submit(tasks.sleep_and_return, 1.0, "long")
    queued = [executor.submit(tasks.square, x) for x in range(10)]
    assert outcomes([hung, long] + queued) == [("error", TaskTimeoutError), ("ok", "long")] + ok(
        x * x for x in range(10)
    )


@pytest.mark.process_only
def test_submit_with_timeout_none_lifts_the_executor_default(make_executor):
    executor = make_executor(max_workers=2, task_timeout=0.3)
    unlimited = executor.submit_with(tasks.sleep_and_return, (0.8, "unlimited"), timeout=None)
    limited = executor.submit(tasks.sleep_and_return, 0.8, "limited")
    longer = executor.submit_with(tasks.sleep_and_return, (0.1, "own limit"), timeout=5)
    assert outcomes([unlimited, limited, longer]) == [
        ("ok", "unlimited"),
        ("error", TaskTimeoutError),
        ("ok", "own limit"),
    ]


@pytest.mark.process_only
def test_a_timed_out_task_is_not_retried(make_executor, gate, tmp_path):
    executor = make_executor(max_workers=2, retries=3, task_timeout=0.4)
    started = tmp_path / "started"
    started.mkdir()
    hung = executor.submit(tasks.record_start_and_block, str(started), gate.path)
    assert outcomes([hung]) == [("error", TaskTimeoutError)]
    assert outcomes([executor.submit(tasks.square, 4)]) == [("ok", 16)]
    assert len(started_pids(started)) == 1
    stats = executor.stats()
    assert (sum(e.timeouts for e in stats), sum(e.crashes for e in stats)) == (1, 0)


@pytest.mark.parametrize("chunksize", [1, None])
@pytest.mark.process_only
def test_a_hanging_map_item_makes_the_map_raise_task_timeout_error(
    make_executor, gate, tmp_path, chunksize
):
    executor = make_executor(max_workers=2, task_timeout=0.4)
    count = 40
    iterator = executor.map(
        tasks.block_on_value,
        [gate.path] * count,
        [str(tmp_path)] * count,
        range(count),
        [25] * count,
        chunksize=chunksize,
    )
    results, error = drain(iterator)
    assert type(error) is TaskTimeoutError
    assert "tasks.block_on_value" in str(error)
    assert os.path.exists(tmp_path / "started-25")
    assert len(results) <= 25
    if chunksize == 1:
        assert len(results) == 25
    assert results == [x * x for x in range(len(results))]
    assert_usable(executor)


@pytest.mark.process_only
def test_each_map_item_may_take_the_task_timeout(make_executor):
    executor = make_executor(max_workers=1, task_timeout=0.5)
    # A chunk of 4 items of 0.2 s runs 0.8 s: past one timeout, well within 4 of them.
    results = list(executor.map(tasks.sleep_and_return, [0.2] * 8, range(8), chunksize=4))
    assert results == list(range(8))
    assert sum(entry.timeouts for entry in executor.stats()) == 0


@pytest.mark.process_only
def test_cancelling_a_running_task_returns_false_and_it_completes(make_executor, gate):
    executor = make_executor(max_workers=1, task_timeout=20)
    started = gate.started_path()
    running = executor.submit(tasks.block_until_released, gate.path, "finished", started)
    gate.wait_started([started])
    assert running.cancel() is False
    assert running.running()
    gate.release()
    assert outcomes([running]) == [("ok", "finished")]
    assert sum(entry.crashes + entry.timeouts for entry in executor.stats()) == 0


@pytest.mark.process_only
def test_worker_start_up_does_not_count_against_a_task_timeout(make_executor, start_method):
    executor = make_executor(
        max_workers=1,
        start_method=start_method,
        initializer=tasks.sleep_and_return,
        initargs=(1.0,),
    )
    # The task itself runs 0.05 s, well within 0.5 s; the initializer takes 1 s before it.
    quick = executor.submit_with(tasks.sleep_and_return, (0.05, "quick"), timeout=0.5)
    assert outcomes([quick]) == [("ok", "quick")]


# --- executor._processes ----------------------------------------------------------------------


@pytest.mark.process_only
def test_processes_lists_only_real_pids(make_executor):
    # The window is short (the zygote reports the pid within a millisecond): try many times.
    for _ in range(30):
        executor = make_executor(max_workers=2, start_method="zygote")
        future = executor.submit(tasks.square, 3)
        processes = executor._processes
        assert all(pid > 0 and handle.pid == pid for pid, handle in processes.items()), (
            f"executor._processes right after the first submit: {sorted(processes)}"
        )
        assert outcomes([future]) == [("ok", 9)]
        executor.shutdown(wait=True)


# --- recycling --------------------------------------------------------------------------------


def memory_limited_executor(make_executor, start_method):
    """A one-worker executor with a memory limit, its worker started and measured fast (so
    that it gets two tasks in flight at once); returns (executor, limit, the worker's pid)."""
    # A forked worker starts with this process's resident pages: set the limit above them.
    limit = resident_bytes() + (200 << 20)
    executor = make_executor(max_workers=1, start_method=start_method, max_memory_per_child=limit)
    small = outcomes([executor.submit(tasks.get_pid) for _ in range(20)])
    pids = {value for _, value in small}
    assert [kind for kind, _ in small] == ["ok"] * 20 and len(pids) == 1, small
    return executor, limit, pids.pop()


@pytest.mark.process_only
def test_a_worker_past_max_memory_per_child_is_replaced_after_its_task(make_executor, start_method):
    executor, limit, first = memory_limited_executor(make_executor, start_method)
    big = executor.submit(tasks.allocate_and_keep, limit + (100 << 20))
    assert outcomes([big]) == [("ok", first)]
    after = outcomes([executor.submit(tasks.get_pid) for _ in range(5)])
    assert len({value for _, value in after}) == 1
    assert after[0][0] == "ok" and after[0][1] != first, "the next task must run in a new worker"
    assert wait_until_gone([first]) == set()
    [entry] = executor.stats()
    assert (entry.tasks_done, entry.crashes, entry.timeouts, entry.restarts) == (26, 0, 0, 1)
    assert entry.pid == after[0][1]


@pytest.mark.process_only
def test_the_task_right_after_a_memory_hog_runs_in_a_new_worker_even_if_submitted_with_it(
    make_executor, start_method
):
    executor, limit, first = memory_limited_executor(make_executor, start_method)
    big = executor.submit(tasks.allocate_and_keep, limit + (100 << 20))
    after = executor.submit(tasks.get_pid)
    found = outcomes([big, after])
    assert found[0] == ("ok", first)
    assert found[1][0] == "ok" and found[1][1] != first, "the next task must run in a new worker"


@pytest.mark.process_only
def test_max_tasks_per_child_counts_as_restarts_not_crashes(make_executor, start_method):
    if start_method == "fork":
        pytest.skip("max_tasks_per_child is rejected with fork (as in the stdlib)")
    executor = make_executor(max_workers=1, start_method=start_method, max_tasks_per_child=2)
    found = outcomes([executor.submit(tasks.get_pid) for _ in range(6)])
    pids = [value for _, value in found]
    assert [kind for kind, _ in found] == ["ok"] * 6
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5]
    [entry] = executor.stats()
    assert (entry.tasks_done, entry.crashes, entry.restarts) == (6, 0, 2)


# --- statistics -------------------------------------------------------------------------------


@pytest.mark.process_only
def test_stats_has_one_frozen_entry_per_slot(make_executor, start_method):
    executor = make_executor(max_workers=3, start_method=start_method)
    # Three tasks that overlap, so that every slot gets a worker.
    pids = {
        value
        for _, value in outcomes([executor.submit(tasks.sleep_and_get_pid, 0.3) for _ in range(3)])
    }
    stats = executor.stats()
    assert [entry.slot for entry in stats] == [0, 1, 2]
    assert all(isinstance(entry, gilfree.WorkerStats) for entry in stats)
    assert {entry.pid for entry in stats} == pids == set(executor._processes)
    assert all(entry.alive for entry in stats)
    assert sum(entry.tasks_done for entry in stats) == 3
    assert all(entry.busy_seconds >= 0.25 for entry in stats)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats[0].tasks_done = 99
    assert {field.name for field in dataclasses.fields(stats[0])} == {
        "slot",
        "pid",
        "alive",
        "tasks_done",
        "crashes",
        "timeouts",
        "restarts",
        "busy_seconds",
    }


@pytest.mark.process_only
def test_stats_count_tasks_crashes_timeouts_and_restarts(make_executor, start_method, gate):
    executor = make_executor(max_workers=1, start_method=start_method)

    def counters():
        [entry] = executor.stats()
        return entry.tasks_done, entry.crashes, entry.timeouts, entry.restarts

    assert counters() == (0, 0, 0, 0)
    assert outcomes([executor.submit(tasks.square, x) for x in range(10)]) == ok(
        x * x for x in range(10)
    )
    assert list(executor.map(tasks.square, range(20))) == [x * x for x in range(20)]
    assert counters() == (30, 0, 0, 0)

    busy_before = executor.stats()[0].busy_seconds
    [(_, pid)] = outcomes([executor.submit(tasks.sleep_and_get_pid, 0.1)])
    [entry] = executor.stats()
    assert entry.busy_seconds - busy_before >= 0.09
    assert (entry.pid, entry.alive) == (pid, True)
    assert counters() == (31, 0, 0, 0)

    outcomes([executor.submit(tasks.crash, "SIGKILL")])
    assert counters()[:3] == (31, 1, 0)  # the crashed task is not "done"
    [(_, new_pid)] = outcomes([executor.submit(tasks.get_pid)])
    assert new_pid != pid
    assert counters() == (32, 1, 0, 1)
    assert executor.stats()[0].pid == new_pid

    outcomes([executor.submit_with(tasks.block_until_released, (gate.path,), timeout=0.3)])
    assert counters()[:3] == (32, 1, 1)
    outcomes([executor.submit(tasks.get_pid)])
    assert counters() == (33, 1, 1, 2)


# --- other failures ---------------------------------------------------------------------------


def submit_to_a_breaking_pool(executor, count=5):
    """Submits ``count`` tasks to an executor whose initializer breaks it: the futures of those
    it took, all failed with BrokenProcessPool (the pool may refuse the later submits once its
    first worker has failed)."""
    futures, refused = [], 0
    for x in range(count):
        try:
            futures.append(executor.submit(tasks.square, x))
        except BrokenProcessPool:
            refused += 1
    assert futures, "the first submit cannot know the pool is broken"
    assert len(futures) + refused == count
    assert outcomes(futures) == [("error", BrokenProcessPool)] * len(futures)
    return futures


@pytest.mark.process_only
def test_a_failing_initializer_fails_every_future_with_its_cause(make_executor, start_method):
    executor = make_executor(
        max_workers=2, start_method=start_method, initializer=tasks.failing_initializer
    )
    futures = submit_to_a_breaking_pool(executor)
    for future in futures:
        cause = future.exception().__cause__
        assert isinstance(cause, RuntimeError)
        assert "initializer failed on purpose" in str(cause)
    with pytest.raises(BrokenProcessPool):
        executor.submit(tasks.square, 1)


@pytest.mark.process_only
@pytest.mark.parametrize(
    ("initializer", "ending"),
    [("exiting_initializer", "exit code 3"), ("sigkilled_initializer", "signal SIGKILL")],
)
def test_an_initializer_that_ends_its_worker_breaks_the_pool(
    make_executor, start_method, initializer, ending
):
    """As an initializer that raises does (and the stdlib's pool), once a few workers in a row
    died so (one killed from outside while it starts does not, and more deaths by SIGKILL are
    taken, the OOM killer's included): each task was blamed for the crash instead, and each
    submit started a worker that died the same way."""
    executor = make_executor(
        max_workers=2, start_method=start_method, initializer=getattr(tasks, initializer)
    )
    futures = submit_to_a_breaking_pool(executor)
    if IMPL != "stdlib":
        cause = futures[0].exception().__cause__
        assert type(cause) is WorkerCrashedError
        assert ending in str(cause)
        assert "died before they were ready" in str(cause)
    with pytest.raises(BrokenProcessPool):
        executor.submit(tasks.square, 1)


@pytest.mark.process_only
def test_an_unpicklable_result_is_a_serialization_error_and_the_pool_goes_on(executor):
    futures = [
        executor.submit(tasks.square, 2),
        executor.submit(tasks.return_lock),
        executor.submit(tasks.square, 3),
    ]
    assert outcomes(futures) == [("ok", 4), ("error", SerializationError), ("ok", 9)]
    error = futures[1].exception()
    assert isinstance(error, pickle.PicklingError)
    assert str(error).startswith("result")
    assert "thread lock" in str(error)
    assert sum(entry.crashes for entry in executor.stats()) == 0
    assert_usable(executor)


@pytest.mark.process_only
def test_a_result_that_cannot_be_encoded_for_lack_of_memory_fails_clearly(executor):
    futures = [
        executor.submit(tasks.return_unencodable_for_memory),
        executor.submit(tasks.square, 5),
    ]
    found = outcomes(futures)
    assert found[1] == ("ok", 25)
    assert found[0][0] == "error"
    error = futures[0].exception()
    assert isinstance(error, Exception)
    described = f"{error!r} {error.__cause__!s}"
    assert "MemoryError" in described
    assert sum(entry.crashes for entry in executor.stats()) == 0
    assert_usable(executor)


# --- the parent killed, interrupted, or exiting -----------------------------------------------


SCRIPT_HEADER = f"""
import json
import os
import signal
import sys
import time

sys.path.insert(0, {TESTS_DIRECTORY!r})
from support import tasks
import gilfree
from gilfree._workers import zygote
"""


class Script:
    """A ``__main__`` script run in the background, its output going to files."""

    def __init__(self, directory: Path, source: str, *args: str) -> None:
        self.directory = directory
        script = directory / "script.py"
        script.write_text(SCRIPT_HEADER + textwrap.dedent(source))
        self.stdout_path = directory / "stdout.txt"
        self.stderr_path = directory / "stderr.txt"
        with open(self.stdout_path, "w") as stdout, open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(script), *args],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=directory,
                env={**os.environ, "GILFREE_TEST_IMPL": IMPL},
            )

    def json_line(self, timeout=RESULT_TIMEOUT):
        """The first line the script prints, as JSON."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.stdout_path.read_text().splitlines()
            if lines:
                return json.loads(lines[0])
            if self.process.poll() is not None:
                break
            time.sleep(0.005)
        pytest.fail(f"the script printed nothing; stderr:\n{self.stderr_path.read_text()}")

    def wait(self, timeout=RESULT_TIMEOUT):
        return self.process.wait(timeout)

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(RESULT_TIMEOUT)


@pytest.fixture
def script_runner(tmp_path):
    scripts = []

    def run(source, *args):
        script = Script(tmp_path, source, *args)
        scripts.append(script)
        return script

    yield run
    for script in scripts:
        script.stop()


BUSY_PARENT_SCRIPT = """
if __name__ == "__main__":
    start_method, started_dir = sys.argv[1], sys.argv[2]
    executor = gilfree.ProcessPoolExecutor(max_workers=2, start_method=start_method)
    paths = [os.path.join(started_dir, f"worker-{index}") for index in range(2)]
    futures = [executor.submit(tasks.touch_and_spin, path, 30) for path in paths]
    child_path = os.path.join(started_dir, "process")
    child = gilfree.Process(target=tasks.touch_and_spin, args=(child_path, 30))
    child.start()
    for path in [*paths, child_path]:
        assert tasks.wait_for_file(path, 30), path
    workers = [int(open(path).read()) for path in paths]
    print(json.dumps({"workers": workers, "zygote": zygote.default_pid(), "process": child.pid}),
          flush=True)
    tasks.spin(30)  # the parent holds its GIL too
"""


@pytest.mark.process_only
def test_workers_zygote_and_processes_die_within_1s_of_the_parent_being_killed(
    script_runner, tmp_path, start_method
):
    script = script_runner(BUSY_PARENT_SCRIPT, start_method, str(tmp_path))
    started = script.json_line()
    pids = {*started["workers"], started["process"]}
    assert started["zygote"], "gilfree.Process runs from the zygote: it must exist"
    pids.add(started["zygote"])
    assert len(pids) == 4
    assert all(wait_until_gone([pid], 0) == {pid} for pid in pids), "a process ended early"
    killed_at = time.monotonic()
    os.kill(script.process.pid, signal.SIGKILL)
    script.wait()
    # Orphans belong to init once the script is gone: a zombie is dead enough.
    remaining = max(0.0, 1.0 - (time.monotonic() - killed_at))
    leftover = wait_until_gone(pids, deadline=remaining, zombie_is_gone=True)
    waited = time.monotonic() - killed_at
    tasks.kill_quietly(leftover)
    assert leftover == set(), f"still alive {waited:.2f} s after the parent was killed: {leftover}"


SLOW_TOP_LEVEL_SCRIPT = """
if __name__ != "__main__":
    time.sleep(60)  # the template's run of the top level: a slow data load

if __name__ == "__main__":
    zygote.prestart()
    print(json.dumps({"zygote": zygote.default_pid()}), flush=True)
    time.sleep(60)
"""


@pytest.mark.process_only
def test_the_zygote_dies_with_the_parent_while_it_still_runs_the_scripts_top_level(
    script_runner,
):
    script = script_runner(SLOW_TOP_LEVEL_SCRIPT)
    zygote_pid = script.json_line()["zygote"]
    assert zygote_pid and wait_until_gone([zygote_pid], 0.3) == {zygote_pid}
    killed_at = time.monotonic()
    os.kill(script.process.pid, signal.SIGKILL)
    script.wait()
    leftover = wait_until_gone([zygote_pid], deadline=1.0, zombie_is_gone=True)
    waited = time.monotonic() - killed_at
    tasks.kill_quietly(leftover)
    assert leftover == set(), f"the zygote still ran {waited:.2f} s after the parent was killed"


def wait_until_asleep(pid, timeout=10.0):
    """Wait until the main thread of ``pid`` has been asleep for 5 samples in a row (10 ms
    apart): it is then waiting for results, not still submitting them."""
    deadline = time.monotonic() + timeout
    asleep = 0
    while asleep < 5 and time.monotonic() < deadline:
        asleep = asleep + 1 if process_state(pid) == "S" else 0
        time.sleep(0.01)


INTERRUPTED_SCRIPT = """
if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    start_method, how, started_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    executor = gilfree.ProcessPoolExecutor(max_workers=2, start_method=start_method)
    # The first submit starts the collector thread, a (short) blocking step of its own.
    executor.submit(tasks.square, 1).result(timeout=30)
    paths = [os.path.join(started_dir, f"task-{index}") for index in range(4)]
    futures = []
    caught = None
    try:
        if how == "map":
            list(executor.map(tasks.touch_and_spin, paths, [30] * 4))
        else:
            futures = [executor.submit(tasks.touch_and_spin, path, 30) for path in paths]
            futures[0].result()
    except KeyboardInterrupt:
        caught = time.monotonic()
    # Every future has an outcome at once, and the executor still works.
    states = []
    for future in futures:
        if future.cancelled():
            states.append("cancelled")
        else:
            error = future.exception(timeout=10)
            states.append("ok" if error is None else type(error).__name__)
    after = executor.submit(tasks.square, 7).result(timeout=30)
    print(json.dumps({"caught": caught, "states": states, "after": after}), flush=True)
"""


@pytest.mark.parametrize("how", ["map", "result"])
@pytest.mark.process_only
def test_ctrl_c_raises_keyboard_interrupt_within_half_a_second(
    script_runner, tmp_path, start_method, how
):
    script = script_runner(INTERRUPTED_SCRIPT, start_method, how, str(tmp_path))
    paths = [tmp_path / f"task-{index}" for index in range(2)]
    for path in paths:
        assert tasks.wait_for_file(str(path), RESULT_TIMEOUT), (
            f"task never started; stderr:\n{script.stderr_path.read_text()}"
        )
    worker_pids = [int(path.read_text()) for path in paths]
    wait_until_asleep(script.process.pid)
    sent_at = time.monotonic()  # CLOCK_MONOTONIC is system-wide: comparable across processes
    os.kill(script.process.pid, signal.SIGINT)
    returncode = script.wait()
    assert returncode == 0, script.stderr_path.read_text()
    report = script.json_line()
    assert report["caught"] is not None, "KeyboardInterrupt was not raised"
    assert report["caught"] - sent_at < 0.5
    assert report["after"] == 49
    if how == "result":
        assert len(report["states"]) == 4
        # The interrupted tasks were stopped; none of them may have run to the end.
        assert set(report["states"]) <= {"cancelled", "CancelledError"}, report["states"]
    leftover = wait_until_gone(worker_pids, zombie_is_gone=True)
    tasks.kill_quietly(leftover)
    assert leftover == set()


EXIT_AFTER_FAULTS_SCRIPT = """
if __name__ == "__main__":
    start_method, pid_path, gate_path = sys.argv[1], sys.argv[2], sys.argv[3]
    executor = gilfree.ProcessPoolExecutor(max_workers=2, start_method=start_method, retries=1)
    crashed = executor.submit_with(tasks.crash, ("SIGKILL", pid_path), retries=0)
    hung = executor.submit_with(tasks.block_until_released, (gate_path,), timeout=0.3)
    results = [executor.submit(tasks.sleep_and_get_pid, 0.02) for _ in range(10)]
    outcomes = [type(crashed.exception(30)).__name__, type(hung.exception(30)).__name__]
    pids = sorted({future.result(30) for future in results} | set(executor._processes))
    print(json.dumps({"outcomes": outcomes, "pids": pids,
                      "zygote": zygote.default_pid()}), flush=True)
    # No shutdown: the interpreter's exit must stop the (replacement) workers.
"""


@pytest.mark.process_only
def test_a_script_exits_cleanly_without_shutdown_after_crashes_and_timeouts(
    script_runner, tmp_path, start_method
):
    pid_path = tmp_path / "crashed-pid"
    script = script_runner(
        EXIT_AFTER_FAULTS_SCRIPT, start_method, str(pid_path), str(tmp_path / "never-opened")
    )
    returncode = script.wait()
    assert returncode == 0, script.stderr_path.read_text()
    report = script.json_line()
    assert report["outcomes"] == ["WorkerCrashedError", "TaskTimeoutError"]
    pids = set(report["pids"]) | {int(pid_path.read_text())}
    if report["zygote"]:
        pids.add(report["zygote"])
    leftover = wait_until_gone(pids, zombie_is_gone=True)
    tasks.kill_quietly(leftover)
    assert leftover == set()
