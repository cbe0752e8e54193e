"""The child side of ``gilfree.Process`` started by the zygote.

The zygote forks the child with the descriptors the parent sent (``Zygote.start_process``):

    fds[0]   a memory file holding two pickles, one after the other: the ``WorkerSetup``,
             then the process object (pickled by ``dumps_for_worker``)
    fds[1]   the write end of the process's sentinel pipe: held until the child exits
    fds[2]   the read end of the parent's pipe (``parent_process().is_alive()``)
    fds[3:]  descriptors the process object's arguments carry (connections, queues): their
             pickles name them by index (``InheritedFd``)

The child takes the parent's paths and main module, unpickles the process object and runs
``BaseProcess._bootstrap``, exactly as a multiprocessing child does (it prints the traceback
of an exception in ``run`` and exits with 1).
"""

from __future__ import annotations

import os
import pickle

#: Leading descriptors of a request before the inherited ones.
PAYLOAD, SENTINEL, PARENT_SENTINEL, FIRST_INHERITED = range(4)

_inherited: list[int] = []


class InheritedFd:
    """multiprocessing's ``DupFd`` for a gilfree child: a descriptor sent with the request."""

    def __init__(self, index: int) -> None:
        self.index = index

    def detach(self) -> int:
        """The descriptor, in the child."""
        return _inherited[self.index]


def run(fds: list[int]) -> int:
    """Runs the process object; returns its exit code."""
    from gilfree._wire import main as _main
    from gilfree._workers.worker import apply_setup

    _main.in_gilfree_process = True
    _inherited[:] = fds[FIRST_INHERITED:]
    try:
        with os.fdopen(fds[PAYLOAD], "rb") as payload:
            payload.seek(0)
            apply_setup(pickle.load(payload))  # the paths first: the object may need them
            process_object = pickle.load(payload)
    except BaseException:  # noqa: BLE001 - reported as multiprocessing's children do
        import sys
        import traceback

        sys.stderr.write("gilfree: the process could not be started in the child:\n")
        traceback.print_exc()
        return 1
    # As multiprocessing's fork and forkserver children (popen_fork.Popen._launch): only
    # multiprocessing's exit function is registered (not the zygote's handlers), and atexit
    # handlers run before os._exit, which flushes queue feeder threads (Python 3.13's _bootstrap
    # no longer calls util._exit_function itself; on 3.11 it runs twice, harmlessly).
    import atexit
    from multiprocessing import util

    atexit._clear()  # noqa: SLF001
    atexit.register(util._exit_function)  # type: ignore[attr-defined]  # noqa: SLF001
    try:
        exit_code: int = process_object._bootstrap(parent_sentinel=fds[PARENT_SENTINEL])  # noqa: SLF001
        return exit_code
    finally:
        atexit._run_exitfuncs()  # noqa: SLF001
