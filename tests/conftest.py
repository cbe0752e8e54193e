"""The fixtures, and the choice of the implementation under test (the helpers they use live in
``support``).

``GILFREE_TEST_IMPL`` chooses what the executors and pools under test are:

* ``gilfree`` (default): ``gilfree.ProcessPoolExecutor`` and ``gilfree.Pool``, worker
  processes, each start method in turn;
* ``thread``: the same classes with ``backend="thread"`` (the ``start_method`` fixture is
  ``"thread"``). Tests marked ``process_only`` need what only a process can do (a pid of its
  own, a crash, a kill, a start method, pickling) and are skipped. As a safety net, a task or a
  test that would kill or end the test process itself fails instead;
* ``stdlib``: ``concurrent.futures.ProcessPoolExecutor`` and ``multiprocessing.Pool``, the
  reference behaviour (the "zygote" start method maps to "forkserver"). Tests marked
  ``gilfree_only`` cover what only gilfree can do and are skipped;
* ``dask`` and ``ray``: ``gilfree.dask.DaskExecutor`` / ``gilfree.ray.RayExecutor`` and their
  pools, on one cluster of two workers per session (``support.clusters``; the ``start_method``
  fixture is the cluster's name). Tests marked ``process_only`` are skipped, and so are those
  marked ``local_only``: what a cluster does not offer, each with its reason.

At the end of the session an autouse fixture checks that no child process of
the test process is still alive (except gilfree's zygote and the stdlib's own
forkserver / resource tracker) and that no new entry appeared in /dev/shm.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time

import pytest

from support import clusters
from support.limits import EXIT_DEADLINE
from support.processes import (
    Gate,
    allowed_children,
    child_pids,
    describe_process,
    shm_entries,
    shutdown_within_deadline,
)

IMPL = os.environ.get("GILFREE_TEST_IMPL", "gilfree")
IS_STDLIB = IMPL == "stdlib"
IS_THREAD = IMPL == "thread"
IS_CLUSTER = IMPL in ("dask", "ray")
#: What tasks see as the test process's pid (``support.tasks`` refuses to end it).
os.environ["GILFREE_TEST_PID"] = str(os.getpid())

START_METHODS = ["thread"] if IS_THREAD else [IMPL] if IS_CLUSTER else ["zygote", "spawn", "fork"]
_STDLIB_START_METHOD = {"zygote": "forkserver", "spawn": "spawn", "fork": "fork"}


# --- implementation selection ------------------------------------------------------


def create_executor(start_method=None, **kwargs):
    """Build the executor under test with gilfree's signature.

    Under the stdlib, ``start_method`` becomes an ``mp_context`` and
    ``preload`` is dropped.
    """
    if IS_STDLIB:
        kwargs.pop("preload", None)
        if start_method is not None and "mp_context" not in kwargs:
            method = _STDLIB_START_METHOD[start_method]
            kwargs["mp_context"] = multiprocessing.get_context(method)
        return concurrent.futures.ProcessPoolExecutor(**kwargs)
    if IS_CLUSTER:
        assert start_method in (None, IMPL), "a start method: mark the test process_only"
        return clusters.executor(IMPL, **kwargs)
    import gilfree

    if IS_THREAD:
        assert start_method in (None, "thread"), "a start method: mark the test process_only"
        kwargs["backend"] = "thread"
    elif start_method is not None:
        kwargs["start_method"] = start_method
    return gilfree.ProcessPoolExecutor(**kwargs)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "gilfree_only: behaviour only gilfree offers; skipped with GILFREE_TEST_IMPL=stdlib",
    )
    config.addinivalue_line(
        "markers",
        "process_only: needs worker processes (pids, crashes, kills, start methods, pickling);"
        " skipped with GILFREE_TEST_IMPL=thread",
    )
    config.addinivalue_line(
        "markers",
        "sends_values: arguments are pickled to other processes (gilfree's or a cluster's);"
        " skipped with GILFREE_TEST_IMPL=thread",
    )
    config.addinivalue_line(
        "markers",
        "local_only(reason): what a cluster's executor does not offer, and why; skipped with"
        " GILFREE_TEST_IMPL=dask and ray",
    )
    if IS_STDLIB:
        # CPython >= 3.12 warns when the stdlib forks a process that has threads.
        config.addinivalue_line(
            "filterwarnings", "ignore:This process .* is multi-threaded:DeprecationWarning"
        )


def pytest_collection_modifyitems(config, items):
    if IS_STDLIB:
        skipped = {"gilfree_only": "gilfree-only behaviour (GILFREE_TEST_IMPL=stdlib)"}
    elif IS_THREAD:
        skipped = {
            "process_only": "needs worker processes (GILFREE_TEST_IMPL=thread)",
            "sends_values": "threads share the caller's objects (GILFREE_TEST_IMPL=thread)",
        }
    elif IS_CLUSTER:
        skipped = {
            "process_only": f"needs gilfree's own worker processes (GILFREE_TEST_IMPL={IMPL})",
            "local_only": f"a cluster does not offer it (GILFREE_TEST_IMPL={IMPL})",
        }
    else:
        return
    for item in items:
        for marker, reason in skipped.items():
            mark = item.get_closest_marker(marker)
            if mark is not None:
                why = f"{reason}: {mark.args[0]}" if mark.args else reason
                item.add_marker(pytest.mark.skip(reason=why))
                break


@pytest.fixture(autouse=IS_THREAD)
def test_process_survives(monkeypatch):
    """Under the thread backend, "the worker's pid" is the test process's: a test that signals
    it fails instead of killing the session (mark it ``process_only``)."""
    real_kill = os.kill

    def kill(pid, signal_number):
        if pid in (os.getpid(), 0, -os.getpgid(0)) and signal_number != 0:
            raise AssertionError(f"signal {signal_number} to the test process: process_only?")
        real_kill(pid, signal_number)

    monkeypatch.setattr(os, "kill", kill)


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module", params=START_METHODS)
def start_method(request):
    """Each start method in turn; module scope lets executors be shared per method."""
    return request.param


@pytest.fixture(scope="module")
def shared_executor(start_method):
    """A two-worker executor shared by the tests of one module that need no fresh pool."""
    executor = create_executor(max_workers=2, start_method=start_method)
    yield executor
    shutdown_within_deadline([executor])


@pytest.fixture
def make_executor():
    """Factory for fresh executors; all of them are shut down after the test."""
    created = []

    def factory(**kwargs):
        executor = create_executor(**kwargs)
        created.append(executor)
        return executor

    yield factory
    shutdown_within_deadline(created)


@pytest.fixture
def executor(make_executor, start_method):
    """A fresh two-worker executor for tests that block, cancel or shut it down."""
    return make_executor(max_workers=2, start_method=start_method)


@pytest.fixture
def gate(tmp_path, make_executor):
    """A Gate opened at teardown, before the executors made by ``make_executor`` shut down."""
    directory = tmp_path / "gate"
    directory.mkdir()
    the_gate = Gate(directory)
    yield the_gate
    the_gate.release()


@pytest.fixture(scope="session", autouse=True)
def no_leaks_after_session():
    """Fail the session if it leaves child processes or /dev/shm entries behind."""
    if not os.path.exists("/proc"):
        yield
        return
    shm_before = shm_entries()
    yield
    end = time.monotonic() + EXIT_DEADLINE
    while True:
        leftover = set(child_pids()) - allowed_children()
        if not leftover or time.monotonic() > end:
            break
        time.sleep(0.05)
    new_shm = set()
    while True:
        new_shm = shm_entries() - shm_before
        if not new_shm or time.monotonic() > end:
            break
        time.sleep(0.05)
    problems = [f"leftover child {describe_process(pid)}" for pid in sorted(leftover)]
    if leftover and not IS_STDLIB:
        problems.append(
            "(gilfree's zygotes are allowed where gilfree._workers.zygote.pids() names them)"
        )
    problems += [f"leftover /dev/shm entry {name}" for name in sorted(new_shm)]
    assert not problems, "test session leaked:\n" + "\n".join(problems)


@pytest.fixture(scope="session", autouse=IS_CLUSTER)
def cluster_session(no_leaks_after_session):
    """Stops the cluster of ``GILFREE_TEST_IMPL=dask`` / ``ray`` at the end of the session,
    before the leak check."""
    yield
    clusters.stop()
