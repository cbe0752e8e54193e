"""The fixtures, and the choice of the implementation under test (the helpers they use live in
``support``).

``GILFREE_TEST_IMPL=stdlib`` runs the suite against
``concurrent.futures.ProcessPoolExecutor`` (the reference behaviour; the
"zygote" start method maps to "forkserver"), any other value or none runs it
against ``gilfree.ProcessPoolExecutor``. Tests marked ``gilfree_only`` cover
what only gilfree can do and are skipped under the stdlib.

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

START_METHODS = ["zygote", "spawn", "fork"]
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
    import gilfree

    if start_method is not None:
        kwargs["start_method"] = start_method
    return gilfree.ProcessPoolExecutor(**kwargs)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "gilfree_only: behaviour only gilfree offers; skipped with GILFREE_TEST_IMPL=stdlib",
    )
    if IS_STDLIB:
        # CPython >= 3.12 warns when the stdlib forks a process that has threads.
        config.addinivalue_line(
            "filterwarnings", "ignore:This process .* is multi-threaded:DeprecationWarning"
        )


def pytest_collection_modifyitems(config, items):
    if not IS_STDLIB:
        return
    skip = pytest.mark.skip(reason="gilfree-only behaviour (GILFREE_TEST_IMPL=stdlib)")
    for item in items:
        if "gilfree_only" in item.keywords:
            item.add_marker(skip)


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
