"""Killing a worker with the processes it started.

A task may leave processes behind: a ``subprocess.Popen`` still running, the workers of a
loky executor a nested ``Parallel`` started. A worker killed for its task (a timeout, an
aborted joblib call, Ctrl-C) would orphan them, and they would run on, holding the parent's
output pipes open, as loky's own kills do not. ``kill_tree`` kills them with it.

Invariant: a process is stopped (SIGSTOP) before its children are read from ``/proc``, so it
can neither start a child the walk misses nor reap one (a listed pid stays that child's,
alive or a zombie, until its stopped parent could wait for it). Every process found is then
killed; a stopped process dies of SIGKILL at once.
"""

from __future__ import annotations

import os
import signal


def kill_tree(pid: int) -> None:
    """SIGKILLs ``pid`` and every process descended from it. Where ``/proc`` lists no
    children (not Linux), ``pid`` alone."""
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            os.kill(current, signal.SIGSTOP)
        except (ProcessLookupError, PermissionError):
            continue  # gone already, or not ours to stop (it left for another user)
        found.append(current)
        pending.extend(children(current))
    for current in found:
        try:
            os.kill(current, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s children, from ``/proc/PID/task/TID/children`` (each thread's);
    empty where that is not to be read."""
    found: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children") as listing:
                found.extend(int(child) for child in listing.read().split())
        except (OSError, ValueError):
            pass
    return found
