"""gilfree: real parallelism for CPU-bound Python.

A process pool whose messages travel through shared-memory rings with a Rust core, drop-in for
``concurrent.futures.ProcessPoolExecutor`` and ``multiprocessing.Pool``/``Process`` (or the whole
``multiprocessing`` module: ``import gilfree.multiprocessing as multiprocessing``). Lambdas and
closures can be sent; workers are forked from a pre-warmed template process (the zygote).

The public names are loaded on first access, so that worker processes, which import only
``gilfree._workers.worker``, start without importing concurrent.futures' process machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Registers the codec's pickle fallback and pandas reducers with gilfree._core (no pandas import).
from gilfree._wire import values as _values  # noqa: F401

if TYPE_CHECKING:
    from gilfree._engine.aio import AsyncMapIterator
    from gilfree._engine.future import Future
    from gilfree._engine.slots import WorkerStats
    from gilfree.connect import executor_at
    from gilfree.errors import (
        BrokenProcessPool,
        SerializationError,
        TaskTimeoutError,
        UnpicklableExceptionError,
        WorkerCrashedError,
    )
    from gilfree.executor import Executor, ProcessPoolExecutor
    from gilfree.pool import Pool
    from gilfree.process import Process
    from gilfree.shared import shared_ndarray

__all__ = [
    "AsyncMapIterator",
    "BrokenProcessPool",
    "Executor",
    "Future",
    "Pool",
    "Process",
    "ProcessPoolExecutor",
    "SerializationError",
    "TaskTimeoutError",
    "UnpicklableExceptionError",
    "WorkerCrashedError",
    "WorkerStats",
    "executor_at",
    "shared_ndarray",
]
__version__ = "0.1.0"

_HOMES = {
    "BrokenProcessPool": "gilfree.errors",
    "WorkerCrashedError": "gilfree.errors",
    "SerializationError": "gilfree.errors",
    "TaskTimeoutError": "gilfree.errors",
    "UnpicklableExceptionError": "gilfree.errors",
    "shared_ndarray": "gilfree.shared",
    "executor_at": "gilfree.connect",
    "Executor": "gilfree.executor",
    "ProcessPoolExecutor": "gilfree.executor",
    "WorkerStats": "gilfree._engine.slots",
    "Future": "gilfree._engine.future",
    "AsyncMapIterator": "gilfree._engine.aio",
    "Pool": "gilfree.pool",
    "Process": "gilfree.process",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'gilfree' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
