"""gilfree: real parallelism for CPU-bound Python.

A process pool whose messages travel through shared-memory rings with a Rust core, drop-in for
``concurrent.futures.ProcessPoolExecutor``. Lambdas and closures can be sent; workers are forked
from a pre-warmed template process (the zygote).
"""

from __future__ import annotations

from gilfree.errors import BrokenProcessPool, WorkerCrashedError
from gilfree.executor import Executor, ProcessPoolExecutor

__all__ = ["BrokenProcessPool", "Executor", "ProcessPoolExecutor", "WorkerCrashedError"]
__version__ = "0.1.0"


def _zygote_pid() -> int | None:
    """The pid of this process's default zygote, if started (for tests and diagnostics)."""
    from gilfree import _zygote

    pids = _zygote.pids()
    return pids[0] if pids else None
