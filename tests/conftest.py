"""Shared fixtures: which executor is under test, start methods, gates, leak checks.

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
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import helpers

IMPL = os.environ.get("GILFREE_TEST_IMPL", "gilfree")
IS_STDLIB = IMPL == "stdlib"

START_METHODS = ["zygote", "spawn", "fork"]
_STDLIB_START_METHOD = {"zygote": "forkserver", "spawn": "spawn", "fork": "fork"}

#: /dev/shm names owned by other tools (semaphores, multiprocessing, torch...).
SHM_IGNORED_PREFIXES = ("sem.", "mp-", "pym-", "psm_")

#: How long to wait for processes to disappear before calling them leaked.
EXIT_DEADLINE = 10.0


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


#: How long a fixture's teardown waits for ``shutdown`` before reporting a hang.
SHUTDOWN_DEADLINE = 30.0


def shutdown_within_deadline(executors, deadline=SHUTDOWN_DEADLINE):
    """Shut executors down, failing (instead of hanging the session) if one hangs.

    pytest-timeout does not fire a second time in a teardown, so a hung
    ``shutdown`` would otherwise stop the whole run.
    """

    def shut_all():
        for executor in executors:
            executor.shutdown(wait=True, cancel_futures=True)

    thread = threading.Thread(target=shut_all, name="test-shutdown", daemon=True)
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        pytest.fail(f"executor shutdown did not return within {deadline} s")


def terminate_within_deadline(pools, deadline=30.0):
    """Terminate and join ``pools``, failing (not hanging the session) if that hangs."""

    def terminate_all():
        for pool in pools:
            pool.terminate()
            pool.join()

    thread = threading.Thread(target=terminate_all, name="test-pool-terminate", daemon=True)
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        pytest.fail(f"Pool.terminate/join did not return within {deadline} s")


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


class Gate:
    """A file-based barrier between the test and blocking tasks in workers."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.path = str(directory / "gate-open")

    def started_path(self):
        """A fresh path a task touches when it starts running."""
        return str(self.directory / f"started-{uuid.uuid4().hex}")

    def wait_started(self, paths, timeout=30.0):
        """Wait until every path in ``paths`` exists; fail the test otherwise."""
        deadline = time.monotonic() + timeout
        for path in paths:
            remaining = max(0.0, deadline - time.monotonic())
            assert helpers.wait_for_file(path, remaining), f"task never started: {path}"

    def release(self):
        Path(self.path).touch()

    @property
    def released(self):
        return os.path.exists(self.path)


@pytest.fixture
def gate(tmp_path, make_executor):
    """A Gate opened at teardown, before the executors made by ``make_executor`` shut down."""
    directory = tmp_path / "gate"
    directory.mkdir()
    the_gate = Gate(directory)
    yield the_gate
    the_gate.release()


# --- scripts run in a child interpreter -------------------------------------------------


def run_script(directory: Path, source: str, *args: str, environment=None):
    """Run ``source`` as a ``__main__`` script, with ``environment`` added to the variables;
    return (returncode, stdout, stderr).

    Output goes to files, not pipes: a worker that outlives the script would
    keep a pipe open and make ``subprocess.run`` wait for it.
    """
    script = directory / "script.py"
    script.write_text(source)
    stdout_path, stderr_path = directory / "stdout.txt", directory / "stderr.txt"
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        completed = subprocess.run(
            [sys.executable, str(script), *args],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            timeout=45,
            cwd=directory,
            env={**os.environ, "GILFREE_TEST_IMPL": IMPL, **(environment or {})},
        )
    return completed.returncode, stdout_path.read_text(), stderr_path.read_text()


# --- process and shared-memory leak checks --------------------------------------------


def process_state(pid):
    """The /proc state letter of ``pid`` ("R", "S", "Z"...) or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def process_gone(pid, zombie_is_gone=False):
    """True once ``pid`` no longer exists.

    A zombie still counts as existing (someone failed to reap it) unless
    ``zombie_is_gone``: for orphans whose reaping is the init process's job.
    """
    if os.path.exists("/proc"):
        state = process_state(pid)
        return state is None or (zombie_is_gone and state == "Z")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_until_gone(pids, deadline=EXIT_DEADLINE, zombie_is_gone=False):
    """Poll until every pid has disappeared; return those still present."""
    end = time.monotonic() + deadline
    remaining = set(pids)
    while remaining:
        remaining = {pid for pid in remaining if not process_gone(pid, zombie_is_gone)}
        if not remaining or time.monotonic() > end:
            break
        time.sleep(0.02)
    return remaining


def child_pids(parent=None):
    """Pids of the direct children of ``parent`` (default: this process), from /proc."""
    parent = os.getpid() if parent is None else parent
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == parent:
            children.append(int(entry))
    return children


def describe_process(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmdline = "?"
    return f"pid {pid} state {process_state(pid)}: {cmdline or '<no cmdline>'}"


def allowed_children():
    """Long-lived helpers that may outlive every executor by design."""
    allowed = set()
    if not IS_STDLIB:
        from gilfree._workers import zygote

        allowed.update(zygote.pids())  # one zygote per distinct template
    # The stdlib's own singletons (possibly started by tests or by gilfree).
    from multiprocessing import forkserver, resource_tracker

    for owner, attribute in (
        (forkserver._forkserver, "_forkserver_pid"),
        (resource_tracker._resource_tracker, "_pid"),
    ):
        pid = getattr(owner, attribute, None)
        if pid:
            allowed.add(pid)
    return allowed


def shm_entries():
    """Names in /dev/shm that are not owned by other tools."""
    try:
        names = os.listdir("/dev/shm")
    except FileNotFoundError:
        return set()
    return {name for name in names if not name.startswith(SHM_IGNORED_PREFIXES)}


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
