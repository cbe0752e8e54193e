"""Worker processes and shared memory must not outlive their executor.

Worker pids are learned from tasks (``os.getpid()`` in the worker). A pid
counts as gone once ``/proc/<pid>`` has disappeared: a zombie still counts as
present, so a worker that nobody reaps fails these tests. Deadlines are short
polls, not sleeps.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import textwrap
import threading
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from conftest import create_executor
from support import tasks
from support.limits import RESULT_TIMEOUT
from support.processes import run_script, shm_entries, wait_until_gone


def blocked_worker_pids(executor, gate, count):
    """Occupy ``count`` workers with blocking tasks; return (futures, worker pids)."""
    pid_paths = [gate.started_path() for _ in range(count)]
    futures = [executor.submit(tasks.write_pid_and_block, path, gate.path) for path in pid_paths]
    gate.wait_started(pid_paths)
    return futures, [int(Path(path).read_text()) for path in pid_paths]


# --- shutdown reaps every worker ------------------------------------------------------


@pytest.mark.process_only
def test_workers_are_gone_after_shutdown(executor, gate):
    futures, pids = blocked_worker_pids(executor, gate, 2)
    assert len(set(pids)) == 2
    assert os.getpid() not in pids
    gate.release()
    assert sorted(f.result(timeout=RESULT_TIMEOUT) for f in futures) == sorted(pids)
    executor.shutdown(wait=True)
    assert wait_until_gone(pids) == set()


@pytest.mark.process_only
def test_workers_are_gone_after_the_context_manager_exits(start_method):
    with create_executor(max_workers=2, start_method=start_method) as executor:
        pids = {
            f.result(timeout=RESULT_TIMEOUT)
            for f in [executor.submit(tasks.get_pid) for _ in range(10)]
        }
    assert pids
    assert wait_until_gone(pids) == set()


@pytest.mark.process_only
def test_workers_are_gone_after_shutdown_with_cancel_futures(executor, gate):
    futures, pids = blocked_worker_pids(executor, gate, 2)
    queued = [executor.submit(tasks.square, i) for i in range(8)]
    gate.release()
    executor.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in futures + queued)
    assert wait_until_gone(pids) == set()


@pytest.mark.process_only
def test_workers_are_gone_when_the_executor_is_garbage_collected(start_method):
    executor = create_executor(max_workers=2, start_method=start_method)
    pids = {
        f.result(timeout=RESULT_TIMEOUT)
        for f in [executor.submit(tasks.get_pid) for _ in range(10)]
    }
    del executor
    gc.collect()
    assert wait_until_gone(pids) == set()


@pytest.mark.process_only
def test_replaced_workers_are_reaped_with_max_tasks_per_child(make_executor, start_method):
    if start_method == "fork":
        pytest.skip("the stdlib rejects max_tasks_per_child with fork; not required of gilfree")
    executor = make_executor(max_workers=2, start_method=start_method, max_tasks_per_child=1)
    # One task at a time: CPython gh-115634 deadlocks the stdlib on a backlog.
    pids = {executor.submit(tasks.get_pid).result(timeout=RESULT_TIMEOUT) for _ in range(6)}
    assert len(pids) > 2
    executor.shutdown(wait=True)
    assert wait_until_gone(pids) == set()


@pytest.mark.gilfree_only  # the stdlib's fork children skip exit handlers before 3.13
@pytest.mark.process_only
def test_exit_handlers_a_task_registered_run_when_its_worker_exits(executor, tmp_path):
    marker = tmp_path / "handler-ran"
    pid = executor.submit(tasks.touch_at_exit, str(marker)).result(timeout=RESULT_TIMEOUT)
    executor.shutdown(wait=True)
    assert wait_until_gone([pid]) == set()
    assert marker.exists()


@pytest.mark.gilfree_only  # the stdlib waits for such threads forever
@pytest.mark.process_only
@pytest.mark.timeout(60)
def test_every_worker_that_cannot_end_is_killed_at_shutdown(executor):
    """Workers join their threads as they exit (as multiprocessing children do); two workers
    held by threads that outlive the shutdown's deadline are both killed, not only the first."""
    futures = [executor.submit(tasks.leave_a_thread_running, 120) for _ in range(2)]
    pids = {future.result(timeout=RESULT_TIMEOUT) for future in futures}
    assert len(pids) == 2
    executor.shutdown(wait=True)
    assert wait_until_gone(pids) == set()


# --- a worker killed mid-task ----------------------------------------------------------


@pytest.mark.process_only
def test_killed_worker_fails_its_future_with_broken_process_pool(executor, gate):
    futures, pids = blocked_worker_pids(executor, gate, 1)
    os.kill(pids[0], signal.SIGKILL)
    with pytest.raises(BrokenProcessPool):
        futures[0].result(timeout=RESULT_TIMEOUT)
    assert wait_until_gone(pids) == set()


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_a_refused_collector_thread_breaks_the_pool_and_shutdown_still_works(
    make_executor, start_method, monkeypatch
):
    # Python refuses new threads while it finalizes. concurrent.futures then breaks its pool
    # (gh-109047, CPython's test_python_finalization_error), rather than hang or fail later.
    executor = make_executor(max_workers=2, start_method=start_method)
    name = "_start_joinable_thread"  # what Thread.start calls (3.13; 3.11: _start_new_thread)
    if not hasattr(threading, name):
        name = "_start_new_thread"

    def refuse(*args, **kwargs):
        raise RuntimeError("can't create new thread at interpreter shutdown")

    with monkeypatch.context() as patch:
        patch.setattr(threading, name, refuse)
        with pytest.raises(BrokenProcessPool):
            list(executor.map(tasks.square, range(10)))
        with pytest.raises(BrokenProcessPool):
            executor.submit(tasks.square, 2)
    executor.shutdown(wait=True)


# --- shared memory ----------------------------------------------------------------------


def test_no_new_dev_shm_entries_after_shutdown(start_method):
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm on this system")
    before = shm_entries()
    size = 4 * 1024 * 1024
    with create_executor(max_workers=2, start_method=start_method) as executor:
        blobs = list(executor.map(tasks.make_bytes, [size] * 4))
        assert [len(blob) for blob in blobs] == [size] * 4
        assert list(executor.map(tasks.byte_len, blobs)) == [size] * 4
        assert list(executor.map(tasks.square, range(1000))) == [x * x for x in range(1000)]
    new_entries = shm_entries() - before
    assert not new_entries, f"/dev/shm entries left behind: {sorted(new_entries)}"


# --- processes started by a script end with it -----------------------------------------

EXITING_SCRIPT = textwrap.dedent(
    """
    import concurrent.futures
    import json
    import multiprocessing
    import os
    import sys
    import time

    IMPL = os.environ.get("GILFREE_TEST_IMPL", "gilfree")
    START_METHOD, HOW = sys.argv[1], sys.argv[2]
    STDLIB_METHOD = {"zygote": "forkserver", "spawn": "spawn", "fork": "fork"}


    def worker_pid(_):
        time.sleep(0.05)  # long enough that every worker gets some of the tasks
        return os.getpid()


    if __name__ == "__main__":
        helper_pid = None
        if IMPL == "stdlib":
            context = multiprocessing.get_context(STDLIB_METHOD[START_METHOD])
            executor = concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=context)
        else:
            import gilfree
            executor = gilfree.ProcessPoolExecutor(max_workers=2, start_method=START_METHOD)
        pids = sorted(set(executor.map(worker_pid, range(20))))
        if IMPL != "stdlib":
            from gilfree._workers import zygote

            helper_pid = zygote.default_pid()
        print(json.dumps({"workers": pids, "helper": helper_pid}), flush=True)
        if HOW == "hard-exit":
            os._exit(0)
        # HOW == "return": no shutdown call, the interpreter's exit must clean up.
    """
)


def run_exiting_script(tmp_path, start_method, how):
    """Run EXITING_SCRIPT; return the pids of its workers (and of gilfree's zygote)."""
    returncode, stdout, stderr = run_script(tmp_path, EXITING_SCRIPT, start_method, how)
    assert returncode == 0, stderr
    output = json.loads(stdout.strip().splitlines()[-1])
    assert output["workers"]
    pids = set(output["workers"])
    if output["helper"]:
        pids.add(output["helper"])
    return pids


@pytest.mark.process_only
def test_workers_end_when_a_script_exits_without_shutdown(tmp_path, start_method):
    pids = run_exiting_script(tmp_path, start_method, "return")
    # The script is gone, so its orphans belong to init: a zombie is dead enough.
    leftover = wait_until_gone(pids, zombie_is_gone=True)
    tasks.kill_quietly(leftover)
    assert leftover == set()


PENDING_AT_EXIT_SCRIPT = textwrap.dedent(
    """
    import concurrent.futures
    import multiprocessing
    import os
    import sys
    import time

    IMPL = os.environ.get("GILFREE_TEST_IMPL", "gilfree")
    STDLIB_METHOD = {"zygote": "forkserver", "spawn": "spawn", "fork": "fork"}


    def sleep_and_print(seconds, message):
        time.sleep(seconds)
        print(message, flush=True)


    if __name__ == "__main__":
        if IMPL == "stdlib":
            context = multiprocessing.get_context(STDLIB_METHOD[sys.argv[1]])
            executor = concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=context)
        else:
            import gilfree
            method = sys.argv[1]
            where = {"backend": method} if method == "thread" else {"start_method": method}
            executor = gilfree.ProcessPoolExecutor(max_workers=2, **where)
        executor.submit(sleep_and_print, 0.5, "apple")
        # No shutdown, no result: the interpreter's exit waits for the pending task.
    """
)


def test_a_task_pending_at_exit_still_runs_to_its_end(tmp_path, start_method):
    # CPython's test_interpreter_shutdown: exit shuts the executor down (waiting for its work)
    # before anything else gilfree closes at exit, such as the zygote the worker came from.
    returncode, stdout, stderr = run_script(tmp_path, PENDING_AT_EXIT_SCRIPT, start_method)
    assert returncode == 0, stderr
    assert stdout.strip() == "apple"
    assert stderr == ""


POOL_OPEN_AT_EXIT_SCRIPT = textwrap.dedent(
    """
    import itertools
    import multiprocessing
    import os
    import sys
    import time

    IMPL = os.environ.get("GILFREE_TEST_IMPL", "gilfree")


    def sleep(seconds):
        time.sleep(seconds)
        return seconds


    if __name__ == "__main__":
        if IMPL == "stdlib":
            pool = multiprocessing.Pool(2)
        else:
            import gilfree
            method = sys.argv[1]
            pool = gilfree.Pool(2, backend="thread") if method == "thread" else gilfree.Pool(
                2, context=None if method == "zygote" else method
            )
        endless = pool.imap_unordered(sleep, itertools.repeat(0.01))
        print(next(endless), flush=True)
        pool.map_async(sleep, [600] * 4)
        # No close(), no terminate(): the interpreter's exit terminates the pool.
    """
)


def test_a_pool_left_open_is_terminated_at_exit(tmp_path, start_method):
    """As multiprocessing's pool finalizer does: the exit waited for every queued task, and
    for ever for an endless imap."""
    if start_method == "thread":
        pytest.skip("threads cannot be terminated: the exit waits for their tasks")
    # Waiting for the queued minute-long tasks would run past run_script's timeout.
    returncode, stdout, stderr = run_script(tmp_path, POOL_OPEN_AT_EXIT_SCRIPT, start_method)
    assert returncode == 0, stderr
    assert stdout == "0.01\n"


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_workers_end_when_the_parent_dies_abruptly(tmp_path, start_method):
    pids = run_exiting_script(tmp_path, start_method, "hard-exit")
    # The script is gone, so its orphans belong to init: a zombie is dead enough.
    leftover = wait_until_gone(pids, zombie_is_gone=True)
    tasks.kill_quietly(leftover)
    assert leftover == set()


FORKED_CHILD_SCRIPT = textwrap.dedent(
    """
    import os
    import sys

    import gilfree


    def square(x):
        return x * x


    if __name__ == "__main__":
        executor = gilfree.ProcessPoolExecutor(2)
        pool = gilfree.Pool(2)
        print(list(executor.map(square, range(3))), pool.map(square, range(3)), flush=True)
        pid = os.fork()
        if pid == 0:  # the user's own fork: the pools are the parent's
            for use in (lambda: executor.submit(square, 2), lambda: pool.map(square, [1])):
                try:
                    use()
                except RuntimeError as error:
                    print("child:", error, flush=True)
            sys.exit(0)  # a normal exit: the exit handlers run
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status), flush=True)
        print(list(executor.map(square, range(4))), pool.map(square, range(4)))
        pool.close()
        pool.join()
        executor.shutdown()
    """
)


@pytest.mark.process_only
@pytest.mark.gilfree_only
def test_a_child_the_user_forks_refuses_the_parents_pools_and_exits(tmp_path):
    """A child of ``os.fork()`` inherits the parent's pools but not their threads, and their
    workers answer the parent only: at its exit it shut them down, waiting for ever for
    replies that went to the parent (and the parent, in ``waitpid``, for the child)."""
    returncode, stdout, stderr = run_script(tmp_path, FORKED_CHILD_SCRIPT)
    assert returncode == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == "[0, 1, 4] [0, 1, 4]"
    assert [line[:36] for line in lines[1:3]] == ["child: this pool belongs to process "] * 2
    assert lines[3:] == ["child exit 0", "[0, 1, 4, 9] [0, 1, 4, 9]"]


STDIN_SCRIPT = textwrap.dedent(
    """
    import sys

    import gilfree


    def read_line(_):
        return sys.stdin.readline()


    if __name__ == "__main__":
        with gilfree.ProcessPoolExecutor(2) as executor:
            print(list(executor.map(read_line, range(2))), flush=True)
        with gilfree.Pool(1) as pool:
            print(pool.map(read_line, range(1)), flush=True)
        print(repr(sys.stdin.read()))
    """
)


@pytest.mark.process_only
def test_workers_read_dev_null_not_the_parents_input(tmp_path):
    """As a multiprocessing child's, a worker's ``sys.stdin`` reads ``/dev/null``: it read the
    parent's input (taking, through its buffer, lines the parent read later)."""
    returncode, stdout, stderr = run_script(tmp_path, STDIN_SCRIPT, stdin_text="first\nsecond\n")
    assert returncode == 0, stderr
    assert stdout.splitlines() == ["['', '']", "['']", "'first\\nsecond\\n'"]


SETTINGS_SCRIPT = textwrap.dedent(
    """
    import os
    import resource

    import gilfree


    def settings(_):
        mask = os.umask(0)
        os.umask(mask)
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        return oct(mask), soft, os.getpriority(os.PRIO_PROCESS, 0)


    if __name__ == "__main__":
        with gilfree.ProcessPoolExecutor(1) as executor:
            print(executor.submit(settings, 0).result())
        os.umask(0o077)
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        )
        os.nice(2)
        with gilfree.ProcessPoolExecutor(1) as executor:
            print(executor.submit(settings, 0).result())
        with gilfree.Pool(1) as pool:
            print(pool.apply(settings, (0,)))
        print(settings(0))
    """
)


@pytest.mark.process_only
def test_workers_take_the_umask_limits_and_priority_the_parent_has_now(tmp_path):
    """Settings a forked child inherits: a worker forked from the template took the
    template's, as they were when it started, so a umask tightened after the first pool
    left the files workers create readable by all."""
    returncode, stdout, stderr = run_script(tmp_path, SETTINGS_SCRIPT)
    assert returncode == 0, stderr
    first, *later = stdout.splitlines()
    assert first != later[-1]
    assert later == [later[-1]] * 3
    assert later[-1].startswith("('0o77', 256, ")
