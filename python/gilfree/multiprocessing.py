"""A stand-in for the ``multiprocessing`` module: ``import gilfree.multiprocessing as
multiprocessing``.

gilfree's names here: ``Pool`` (``gilfree.Pool``), ``Process`` (``gilfree.Process``) and
``set_start_method`` (the stdlib's, which gilfree's pools and processes then follow).

Everything else is the stdlib's own object, passed through unchanged: ``Queue``, ``SimpleQueue``,
``JoinableQueue``, ``Pipe``, ``Manager``, ``Lock``, ``RLock``, ``Event``, ``Condition``,
``Semaphore``, ``Barrier``, ``Value``, ``Array``, ``cpu_count``, ``current_process``,
``active_children``, ``parent_process``, ``get_context``, ``get_start_method``,
``freeze_support``, the exceptions (``TimeoutError``, ``ProcessError``, ...) and the submodules
(``multiprocessing.shared_memory``, ``.pool``, ``.managers``, ..., imported on first access, as
attributes or by ``import gilfree.multiprocessing.pool``: either way the stdlib's module itself,
never a second copy with its own authkey and default context). Contexts from ``get_context``
are the stdlib's, so ``get_context("spawn").Pool`` is the stdlib's pool.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import multiprocessing as _stdlib
import sys
from collections.abc import Sequence
from multiprocessing import *  # noqa: F403 - the stdlib's public names, passed through
from types import ModuleType
from typing import Any

from gilfree._workers import launch as _launch

# gilfree's in place of the stdlib's (whose Pool is a function, hence the type: ignore).
from gilfree.pool import Pool  # type: ignore[assignment]  # noqa: F401
from gilfree.process import Process  # noqa: F401

__all__ = list(_stdlib.__all__)
#: The names this module takes from gilfree rather than from the stdlib.
GILFREE_NAMES = ("Pool", "Process", "set_start_method")


def set_start_method(method: str | None, force: bool = False) -> None:  # type: ignore[no-redef]
    """``multiprocessing.set_start_method``, which gilfree follows too: ``Pool``, ``Process``
    and ``gilfree.ProcessPoolExecutor`` made without a context of their own then start their
    workers that way (``"fork"``: forked from this process, inheriting its memory;
    ``"spawn"``: fresh interpreters; ``"forkserver"``: from gilfree's zygote, its default).
    ``python -m gilfree run`` makes ``multiprocessing.set_start_method`` this function."""
    # The context's own method, not the module's name: ``run`` makes that this function.
    _stdlib.context._default_context.set_start_method(method, force=force)  # noqa: SLF001
    _launch.script_start_method = {"forkserver": "zygote", None: None}.get(method, method)


#: A package without a folder of its own: its submodules are the stdlib's (``_Submodules``).
__path__: list[str] = []


class _Submodules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``gilfree.multiprocessing.X`` as the stdlib's ``multiprocessing.X`` module."""

    PREFIX = __name__ + "."

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(self.PREFIX):
            return None
        stdlib_name = "multiprocessing." + fullname[len(self.PREFIX) :]
        if importlib.util.find_spec(stdlib_name) is None:
            return None  # ModuleNotFoundError, naming this module's submodule
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        # The import system takes whatever sys.modules holds under the name once this
        # returns: the stdlib's module itself, whose attributes (__spec__...) stay its own.
        stdlib_name = "multiprocessing." + module.__name__[len(self.PREFIX) :]
        sys.modules[module.__name__] = importlib.import_module(stdlib_name)


sys.meta_path.append(_Submodules())


def __getattr__(name: str) -> Any:
    """Names the stdlib module gains later, and its submodules (``shared_memory``, ...)."""
    if name.startswith("__") and name.endswith("__"):  # never the stdlib package's own
        raise AttributeError(f"module 'gilfree.multiprocessing' has no attribute {name!r}")
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
