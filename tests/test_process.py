"""multiprocessing.Process's API and semantics, checked against gilfree.Process and the stdlib.

``process_class()`` is the class under test: ``gilfree.Process`` by default,
``multiprocessing.Process`` with ``GILFREE_TEST_IMPL=stdlib``. Processes made
with the ``make_process`` fixture are killed and reaped at teardown if a test
left them running. Targets live in ``support.tasks`` and report back through files,
a ``multiprocessing.Queue`` or a ``Pipe``; blocking targets wait on the file
``gate`` (conftest). What the parent interpreter does at exit (the traceback a
failing child prints, daemonic children) is checked in a script run in a
child interpreter.
"""

from __future__ import annotations

import ast
import multiprocessing
import multiprocessing.connection
import os
import signal
from pathlib import Path

import pytest

from conftest import IS_STDLIB
from support import tasks
from support.limits import RESULT_TIMEOUT, TERMINATE_DEADLINE, TESTS_DIRECTORY
from support.processes import run_script, wait_until_gone

pytestmark = [pytest.mark.timeout(30), pytest.mark.process_only]

#: Generous upper bound for a terminated or killed process to be joined.


def process_class():
    """The Process class under test."""
    if IS_STDLIB:
        return multiprocessing.Process
    import gilfree

    return gilfree.Process


@pytest.fixture
def make_process():
    """Factory for processes (``Process``'s arguments, or ``cls=`` a subclass); reaped after."""
    created = []

    def factory(*args, cls=None, **kwargs):
        process = (cls or process_class())(*args, **kwargs)
        created.append(process)
        return process

    yield factory
    for process in created:
        try:
            if process.is_alive():
                process.kill()
                process.join(TERMINATE_DEADLINE)
        except ValueError:  # closed by the test
            pass


def start_blocked(make_process, gate):
    """Start a process that holds until the gate opens; return it once it runs."""
    started = gate.started_path()
    process = make_process(target=tasks.block_until_released, args=(gate.path, None, started))
    process.start()
    gate.wait_started([started])
    return process, started


#: Header of the scripts: the Process class under test, importable tasks.
SCRIPT_HEADER = f"""
import os
import sys

sys.path.insert(0, {TESTS_DIRECTORY!r})
from support import tasks
if os.environ.get("GILFREE_TEST_IMPL") == "stdlib":
    from multiprocessing import Process
else:
    from gilfree import Process
"""


# --- construction ------------------------------------------------------------------------


def test_names_explicit_kept_default_distinct(make_process):
    named = make_process(target=tasks.square, args=(2,), name="worker-7")
    assert named.name == "worker-7"
    named.name = "renamed"
    assert named.name == "renamed"
    first, second = make_process(target=tasks.square), make_process(target=tasks.square)
    assert isinstance(first.name, str) and first.name
    assert first.name != second.name


def test_state_before_start(make_process):
    process = make_process(target=tasks.square, args=(2,))
    assert process.pid is None
    assert process.exitcode is None
    assert not process.is_alive()
    with pytest.raises(ValueError, match="process not started"):
        process.sentinel


def test_daemon_flag_is_settable_before_start_only(make_process):
    process = make_process(target=tasks.square, args=(2,))
    assert process.daemon is False
    process.daemon = True
    assert process.daemon is True
    assert make_process(target=tasks.square, args=(2,), daemon=True).daemon is True
    process.start()
    process.join(RESULT_TIMEOUT)
    assert process.exitcode == 0
    with pytest.raises(AssertionError, match="process has already started"):
        process.daemon = False


# --- running: target, args, exit codes ------------------------------------------------------


def test_target_receives_args_and_kwargs(make_process, tmp_path):
    path = str(tmp_path / "call")
    process = make_process(
        target=tasks.record_call, args=(path, 1, "two"), kwargs={"three": [3], "four": None}
    )
    process.start()
    process.join(RESULT_TIMEOUT)
    assert process.exitcode == 0
    assert ast.literal_eval(Path(path).read_text()) == ((1, "two"), {"three": [3], "four": None})


def test_start_join_is_alive_exitcode_pid(make_process, gate):
    process, started = start_blocked(make_process, gate)
    assert isinstance(process.pid, int)
    assert process.pid != os.getpid()
    assert int(Path(started).read_text()) == process.pid  # the target ran in that process
    assert process.is_alive()
    assert process.exitcode is None
    gate.release()
    process.join(RESULT_TIMEOUT)
    assert not process.is_alive()
    assert process.exitcode == 0


def test_join_with_timeout_returns_while_still_running(make_process, gate):
    process, _ = start_blocked(make_process, gate)
    assert process.join(0.05) is None
    assert process.is_alive()
    assert process.exitcode is None
    gate.release()
    process.join(RESULT_TIMEOUT)
    assert process.exitcode == 0


def test_sentinel_is_ready_when_the_process_ends(make_process, gate):
    process, _ = start_blocked(make_process, gate)
    assert multiprocessing.connection.wait([process.sentinel], timeout=0.05) == []
    gate.release()
    assert multiprocessing.connection.wait([process.sentinel], RESULT_TIMEOUT) == [process.sentinel]
    process.join(RESULT_TIMEOUT)
    assert process.exitcode == 0


def test_exitcode_is_1_when_the_target_raises(make_process):
    process = make_process(target=tasks.raise_value_error, args=("expected in a test",))
    process.start()
    process.join(RESULT_TIMEOUT)
    assert process.exitcode == 1


@pytest.mark.parametrize("code, exitcode", [(3, 3), (0, 0), (None, 0), ("a message", 1)])
def test_system_exit_sets_the_exitcode(make_process, code, exitcode):
    process = make_process(target=tasks.exit_with, args=(code,))
    process.start()
    process.join(RESULT_TIMEOUT)
    assert process.exitcode == exitcode


def test_multiprocessings_logging_to_stderr_reaches_the_children(tmp_path):
    # Spawned children take log_to_stderr() and the logger's level from the parent.
    source = (
        SCRIPT_HEADER
        + """
import logging
import multiprocessing
from multiprocessing import util

def log_here(what):
    util.info(what)

if __name__ == "__main__":
    multiprocessing.log_to_stderr(logging.INFO)
    process = Process(target=log_here, args=("info from the child",))
    process.start()
    process.join(30)
    if os.environ.get("GILFREE_TEST_IMPL") != "stdlib":
        import gilfree
        with gilfree.ProcessPoolExecutor(1) as executor:
            executor.submit(log_here, "info from a worker").result(30)
    print("exitcode", process.exitcode)
"""
    )
    returncode, stdout, stderr = run_script(tmp_path, source)
    assert returncode == 0, stderr
    assert stdout.split() == ["exitcode", "0"]
    assert "] info from the child" in stderr
    if not IS_STDLIB:
        assert "[INFO/GilfreeWorker-" in stderr and "] info from a worker" in stderr


def test_failing_target_prints_its_traceback(tmp_path):
    source = (
        SCRIPT_HEADER
        + """
if __name__ == "__main__":
    process = Process(
        target=tasks.raise_custom_error, args=("boom from the child",), name="worker-7"
    )
    process.start()
    process.join(30)
    print("exitcode", process.exitcode)
"""
    )
    returncode, stdout, stderr = run_script(tmp_path, source)
    assert returncode == 0, stderr
    assert stdout.split() == ["exitcode", "1"]
    assert "Process worker-7:\nTraceback (most recent call last):" in stderr
    assert "raise_custom_error" in stderr
    assert "tasks.CustomError: boom from the child" in stderr


# --- stopping --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, signal_number", [("terminate", signal.SIGTERM), ("kill", signal.SIGKILL)]
)
def test_terminate_and_kill_give_a_negative_exitcode(make_process, gate, method, signal_number):
    process, _ = start_blocked(make_process, gate)
    getattr(process, method)()
    process.join(TERMINATE_DEADLINE)
    assert not process.is_alive()
    assert process.exitcode == -signal_number


def test_close_after_join_releases_the_process(make_process):
    process = make_process(target=tasks.square, args=(2,))
    process.start()
    pid = process.pid
    process.join(RESULT_TIMEOUT)
    process.close()
    process.close()  # closing twice is allowed
    with pytest.raises(ValueError, match="process object is closed"):
        process.pid
    with pytest.raises(ValueError, match="process object is closed"):
        process.is_alive()
    assert wait_until_gone([pid]) == set()


def test_close_while_running_raises_value_error(make_process, gate):
    process, _ = start_blocked(make_process, gate)
    with pytest.raises(ValueError, match="^Cannot close a process while it is still running"):
        process.close()
    gate.release()
    process.join(RESULT_TIMEOUT)
    process.close()


def test_start_twice_raises_assertion_error(make_process):
    process = make_process(target=tasks.square, args=(2,))
    process.start()
    with pytest.raises(AssertionError, match="^cannot start a process twice$"):
        process.start()
    process.join(RESULT_TIMEOUT)
    assert process.exitcode == 0


def test_daemonic_child_is_terminated_when_the_parent_exits(tmp_path, gate):
    pid_path = str(tmp_path / "pid")
    source = (
        SCRIPT_HEADER
        + f"""
if __name__ == "__main__":
    process = Process(target=tasks.write_pid_and_block, args=({pid_path!r}, {gate.path!r}),
                      daemon=True)
    process.start()
    assert tasks.wait_for_file({pid_path!r}, 30)
"""
    )  # the script ends without joining: the interpreter's exit must stop the child
    returncode, _, stderr = run_script(tmp_path, source)
    assert returncode == 0, stderr
    pid = int(Path(pid_path).read_text())
    assert wait_until_gone([pid], TERMINATE_DEADLINE, zombie_is_gone=True) == set()


def test_non_daemonic_child_is_waited_for_at_parent_exit(tmp_path):
    done_path = str(tmp_path / "done")
    source = (
        SCRIPT_HEADER
        + f"""
if __name__ == "__main__":
    Process(target=tasks.sleep_then_touch, args=({done_path!r}, 0.3)).start()
"""
    )  # the script ends without joining: the interpreter's exit must wait for the child
    returncode, _, stderr = run_script(tmp_path, source)
    assert returncode == 0, stderr
    assert os.path.exists(done_path)


# --- subclasses and communication ---------------------------------------------------------


def test_subclass_run_is_called_in_the_child(make_process, tmp_path):
    class Recorder(process_class()):
        def __init__(self, path, label):
            super().__init__()
            self.path = path
            self.label = label

        def run(self):
            tasks.record_call(self.path, self.label, os.getpid())

    path = str(tmp_path / "call")
    process = make_process(path, "from run", cls=Recorder)
    process.start()
    process.join(RESULT_TIMEOUT)
    assert process.exitcode == 0
    assert ast.literal_eval(Path(path).read_text()) == (("from run", process.pid), {})


def test_queue_in_args_carries_data_back(make_process):
    queue = multiprocessing.Queue()
    try:
        process = make_process(target=tasks.put_in_queue, args=(queue, {"answer": [42]}))
        process.start()
        assert queue.get(timeout=RESULT_TIMEOUT) == {"answer": [42]}
        process.join(RESULT_TIMEOUT)
        assert process.exitcode == 0
    finally:
        queue.close()
        queue.join_thread()


def test_pipe_in_args_carries_data_both_ways(make_process):
    parent_end, child_end = multiprocessing.Pipe()
    with parent_end:
        process = make_process(target=tasks.pipe_double, args=(child_end,))
        process.start()
        child_end.close()  # the parent's copy: only the child's remains open
        parent_end.send(21)
        assert parent_end.poll(RESULT_TIMEOUT)
        assert parent_end.recv() == 42
        process.join(RESULT_TIMEOUT)
        assert process.exitcode == 0
        # The child closed its end and exited: no copy is left, the parent sees EOF.
        assert parent_end.poll(10)
        with pytest.raises(EOFError):
            parent_end.recv()


@pytest.mark.gilfree_only
def test_lambda_and_closure_targets(make_process):
    queue = multiprocessing.Queue()
    offset = 100

    def closure(target_queue, value):
        target_queue.put(value + offset)

    try:
        processes = [
            make_process(
                target=lambda target_queue, value: target_queue.put(value * 2), args=(queue, 21)
            ),
            make_process(target=closure, args=(queue, 1)),
        ]
        for process in processes:
            process.start()
        assert sorted(queue.get(timeout=RESULT_TIMEOUT) for _ in processes) == [42, 101]
        for process in processes:
            process.join(RESULT_TIMEOUT)
        assert [process.exitcode for process in processes] == [0, 0]
    finally:
        queue.close()
        queue.join_thread()


def test_one_process_per_core_runs_fib(make_process):
    processes = [make_process(target=tasks.fib, args=(25,)) for _ in range(os.cpu_count() or 1)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(RESULT_TIMEOUT)
    assert [process.exitcode for process in processes] == [0] * len(processes)
    assert len({process.pid for process in processes}) == len(processes)


REDIRECTED_OUTPUT_SCRIPT = """
import os
import sys

import gilfree


def say(words):
    print(words, flush=True)
    print(words, file=sys.stderr, flush=True)


if __name__ == "__main__":
    with gilfree.Pool(1) as pool:
        pool.apply(say, ("before",))  # the zygote and a worker start with the first streams
        saved = os.dup(1), os.dup(2)
        with open("captured.txt", "w") as captured:
            os.dup2(captured.fileno(), 1)  # as pytest's capture moves them, per test
            os.dup2(captured.fileno(), 2)
        pool.apply(say, ("pool",))  # the same worker: it has the first streams
        child = gilfree.Process(target=say, args=("process",))
        child.start()
        child.join()
        with gilfree.Pool(1) as fresh:
            fresh.apply(say, ("fresh pool",))
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        print("restored", flush=True)
"""


@pytest.mark.gilfree_only
def test_children_write_where_the_callers_output_goes_when_they_start(tmp_path):
    """Children forked from the zygote wrote to the streams the caller had when the zygote
    started (pytest's fd capture then sent a later test's output to an earlier test's file)."""
    returncode, stdout, stderr = run_script(tmp_path, REDIRECTED_OUTPUT_SCRIPT)
    assert returncode == 0, stderr
    captured = (tmp_path / "captured.txt").read_text().splitlines()
    assert sorted(captured) == sorted(["process", "fresh pool"] * 2)
    assert stdout.splitlines() == ["before", "pool", "restored"]
    assert stderr.splitlines() == ["before", "pool"]


SHARED_ARRAY_VIEW_SCRIPT = """
import multiprocessing

import numpy

import gilfree

shared = None


def fill(view, value):
    view[:] = value


def keep(view):
    global shared
    shared = view


def fill_kept(value):
    shared[:] = value
    return value


if __name__ == "__main__":
    raw = multiprocessing.RawArray("d", 8)
    whole = numpy.frombuffer(raw)
    child = gilfree.Process(target=fill, args=(whole[::2], 1.0))  # a view of a view
    child.start()
    child.join()
    with gilfree.Pool(1, initializer=keep, initargs=(whole[1::2],)) as pool:
        pool.apply(fill_kept, (2.0,))
    print(whole.tolist())
"""


@pytest.mark.gilfree_only
def test_a_numpy_view_of_inherited_shared_memory_reaches_a_forked_child(tmp_path):
    """``np.frombuffer(RawArray(...))`` as a Process argument or in initargs: the child must
    share it, as under the stdlib's fork; it was pickled, so the child wrote to a copy."""
    returncode, stdout, stderr = run_script(tmp_path, SHARED_ARRAY_VIEW_SCRIPT)
    assert returncode == 0, stderr
    assert stdout == f"{[1.0, 2.0] * 4}\n"
