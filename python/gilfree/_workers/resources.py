"""multiprocessing's resource tracker, shared with gilfree's children as ``fork`` shares it.

multiprocessing registers each ``SharedMemory`` segment a process creates *or attaches to*
with a resource-tracker process, which unlinks what is still registered once every process
holding its pipe has exited. A child forked from the caller inherits the caller's tracker;
spawned and forkserver children are handed it. gilfree's children are forked from the template
instead: without the caller's tracker, a child that attached to the caller's segment started a
tracker of its own, which unlinked the segment when the child exited, while the caller still
used it (and warned of a "leaked" segment).

So every child is handed the caller's tracker (``caller_fd``), where the caller runs one, as a
forked child inherits it; a caller that imported ``multiprocessing.shared_memory`` has one
started first, so that segments it makes after its workers started are covered too. Nothing
starts a tracker for a program that uses none.
"""

from __future__ import annotations

import sys


def caller_fd() -> int | None:
    """The write end of this process's resource-tracker pipe, for a child to share; None if
    this process has no tracker (and has not imported ``multiprocessing.shared_memory``)."""
    if "multiprocessing.shared_memory" in sys.modules:
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    if tracker is None:
        return None
    fd: int | None = tracker._resource_tracker._fd  # noqa: SLF001
    return fd


def adopt(fd: int) -> None:
    """Makes the tracker at ``fd`` (the caller's, see ``caller_fd``) this child's, as
    multiprocessing's spawned children do."""
    from multiprocessing import resource_tracker

    resource_tracker._resource_tracker._fd = fd  # type: ignore[attr-defined]  # noqa: SLF001
