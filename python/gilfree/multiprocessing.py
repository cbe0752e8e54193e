"""A stand-in for the ``multiprocessing`` module: ``import gilfree.multiprocessing as
multiprocessing``.

gilfree's names here: ``Pool`` (``gilfree.Pool``) and ``Process`` (``gilfree.Process``).

Everything else is the stdlib's own object, passed through unchanged: ``Queue``, ``SimpleQueue``,
``JoinableQueue``, ``Pipe``, ``Manager``, ``Lock``, ``RLock``, ``Event``, ``Condition``,
``Semaphore``, ``Barrier``, ``Value``, ``Array``, ``cpu_count``, ``current_process``,
``active_children``, ``parent_process``, ``get_context``, ``set_start_method``,
``get_start_method``, ``freeze_support``, the exceptions (``TimeoutError``, ``ProcessError``,
...) and the submodules (``multiprocessing.shared_memory``, ``.pool``, ``.managers``, ...,
imported on first access). Contexts from ``get_context`` are the stdlib's, so
``get_context("spawn").Pool`` is the stdlib's pool.
"""

from __future__ import annotations

import importlib
import multiprocessing as _stdlib
from multiprocessing import *  # noqa: F403 - the stdlib's public names, passed through
from types import ModuleType
from typing import Any

# gilfree's in place of the stdlib's (whose Pool is a function, hence the type: ignore).
from gilfree.pool import Pool  # type: ignore[assignment]  # noqa: F401
from gilfree.process import Process  # noqa: F401

__all__ = list(_stdlib.__all__)
#: The names this module takes from gilfree rather than from the stdlib.
GILFREE_NAMES = ("Pool", "Process")


def __getattr__(name: str) -> Any:
    """Names the stdlib module gains later, and its submodules (``shared_memory``, ...)."""
    try:
        return getattr(_stdlib, name)
    except AttributeError:
        pass
    try:
        module: ModuleType = importlib.import_module(f"multiprocessing.{name}")
    except ModuleNotFoundError:
        raise AttributeError(
            f"module 'gilfree.multiprocessing' has no attribute {name!r}"
        ) from None
    return module


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
