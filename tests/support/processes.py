"""Processes and shared memory the tests start and check: scripts run in a child interpreter,
shutdowns that may not hang the session, file gates between a test and its tasks, and the /proc
and /dev/shm checks that find leaked processes and segments."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from support import tasks
from support.limits import EXIT_DEADLINE, GATE_TIMEOUT, SCRIPT_TIMEOUT, SHUTDOWN_DEADLINE

#: /dev/shm names owned by other tools (semaphores, multiprocessing, torch...).
SHM_IGNORED_PREFIXES = ("sem.", "mp-", "pym-", "psm_")


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


def terminate_within_deadline(pools, deadline=SHUTDOWN_DEADLINE):
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


class Gate:
    """A file-based barrier between the test and blocking tasks in workers."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.path = str(directory / "gate-open")

    def started_path(self):
        """A fresh path a task touches when it starts running."""
        return str(self.directory / f"started-{uuid.uuid4().hex}")

    def wait_started(self, paths, timeout=GATE_TIMEOUT):
        """Wait until every path in ``paths`` exists; fail the test otherwise."""
        deadline = time.monotonic() + timeout
        for path in paths:
            remaining = max(0.0, deadline - time.monotonic())
            assert tasks.wait_for_file(path, remaining), f"task never started: {path}"

    def release(self):
        Path(self.path).touch()

    @property
    def released(self):
        return os.path.exists(self.path)


def run_script(directory: Path, source: str, *args: str, environment=None, stdin_text=None):
    """Run ``source`` as a ``__main__`` script, with ``environment`` added to the variables
    and ``stdin_text`` as its input (else none); return (returncode, stdout, stderr).

    Output goes to files, not pipes: a worker that outlives the script would
    keep a pipe open and make ``subprocess.run`` wait for it.
    """
    script = directory / "script.py"
    script.write_text(source)
    stdin_path = directory / "stdin.txt"
    stdin_path.write_text(stdin_text or "")
    stdout_path, stderr_path = directory / "stdout.txt", directory / "stderr.txt"
    with (
        open(stdin_path) as stdin,
        open(stdout_path, "w") as stdout,
        open(stderr_path, "w") as stderr,
    ):
        completed = subprocess.run(
            [sys.executable, str(script), *args],
            stdin=stdin if stdin_text is not None else subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            timeout=SCRIPT_TIMEOUT,
            cwd=directory,
            env={**os.environ, **(environment or {})},  # GILFREE_TEST_IMPL passes through
        )
    return completed.returncode, stdout_path.read_text(), stderr_path.read_text()


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
    zygote = sys.modules.get("gilfree._workers.zygote")
    if zygote is not None:  # gilfree under test, and used
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
