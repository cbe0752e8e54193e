"""Pickling what a worker needs at start: the initializer and its arguments.

``initargs`` often carry multiprocessing objects (a ``Queue`` for logging, a ``Lock``, an
``Event``), which refuse plain pickling outside a process start. This pickler adds
multiprocessing's own reducers and pretends, while it runs, that a process is being spawned:
semaphores then travel by name and file descriptors through multiprocessing's resource sharer,
exactly as they would in ``multiprocessing.Process(args=...)``. Functions and classes of
``__main__`` are sent as ``gilfree._wire.functions.MainPickler`` sends them. A payload made this
way is good for one worker, so it is made again for every worker started.
"""

from __future__ import annotations

import collections
import io
import mmap
import sys
from multiprocessing import context
from multiprocessing.reduction import ForkingPickler
from typing import Any, ClassVar

from gilfree._wire.functions import MainPickler
from gilfree._wire.protocol import PROTOCOL


class _Pickler(MainPickler):
    """``__main__`` as workers share it (``MainPickler``), plus multiprocessing's reducers.
    A numpy array over memory that processes share by inheritance is refused (see
    ``_inherited_memory``), as multiprocessing refuses the ``RawArray`` itself."""

    # The C pickler reads dispatch_table when it is created, so it is set on the class.
    dispatch_table: ClassVar[collections.ChainMap[Any, Any]] = collections.ChainMap(
        ForkingPickler._extra_reducers,  # type: ignore[attr-defined]  # noqa: SLF001 - registered reducers
        MainPickler.dispatch_table,
    )

    def reducer_override(self, obj: Any) -> Any:
        numpy = sys.modules.get("numpy")
        if numpy is not None and isinstance(obj, numpy.ndarray) and _inherited_memory(obj):
            raise TypeError(
                "a numpy array over memory shared by inheritance (a multiprocessing RawArray or"
                " Array, an mmap) reaches a child only when it is forked: pickling would send a"
                " copy, and the child's writes would be lost"
            )
        return super().reducer_override(obj)


def _inherited_memory(array: Any) -> bool:
    """Whether ``array`` views memory that a forked child shares with its parent, where a copy
    would not do: a ``multiprocessing.sharedctypes`` object's (``np.frombuffer(RawArray(...))``,
    and views of it) or an ``mmap``'s."""
    from multiprocessing.heap import BufferWrapper

    base = array.base
    for _ in range(64):  # a chain of views, each the base of the next
        if base is None:
            return False
        if isinstance(base, mmap.mmap):
            return True
        try:
            wrapper = base.__dict__.get("_wrapper") if hasattr(base, "__dict__") else None
        except Exception:  # noqa: BLE001 - a base whose attributes raise shares nothing of ours
            return False
        if isinstance(wrapper, BufferWrapper):
            return True
        base = base.obj if type(base) is memoryview else getattr(base, "base", None)
    return False


class _SpawningPopen:
    """What multiprocessing's reducers ask of the process being spawned."""

    @staticmethod
    def duplicate_for_child(fd: int) -> int:
        return fd

    @staticmethod
    def DupFd(fd: int) -> Any:  # noqa: N802 - multiprocessing's name
        from multiprocessing.resource_sharer import DupFd

        return DupFd(fd)


def dumps_for_worker(value: Any, popen: Any = None) -> bytes:
    """Pickles ``value`` (by value where needed) as multiprocessing would for a new process.
    ``popen`` is the process being started, if it can carry file descriptors itself (it has
    multiprocessing's ``duplicate_for_child`` and ``DupFd``); else they go through
    multiprocessing's resource sharer."""
    buffer = io.BytesIO()
    dump_for_worker(value, buffer, popen)
    return buffer.getvalue()


def dump_for_worker(value: Any, file: Any, popen: Any = None) -> None:
    """``dumps_for_worker``, written to ``file`` as it is made (no copy of it in memory)."""
    previous = context.get_spawning_popen()
    # Any object with duplicate_for_child serves; typeshed names multiprocessing's Popens only.
    context.set_spawning_popen(popen if popen is not None else _SpawningPopen())  # type: ignore[arg-type]
    try:
        _Pickler(file, PROTOCOL).dump(value)
    finally:
        context.set_spawning_popen(previous)


class _TrialPopen(_SpawningPopen):
    """A process start that is only tried: descriptors are left where they are (nothing is
    registered with the resource sharer for a worker that will never ask for it)."""

    @staticmethod
    def DupFd(fd: int) -> Any:  # noqa: N802 - multiprocessing's name
        return fd


def sendable_to_worker(value: Any) -> bool:
    """Whether ``dumps_for_worker`` accepts ``value``: tried once, without its side effects.
    Only a forked worker can have what it refuses, such as a lock made by the ``fork``
    context."""
    try:
        dumps_for_worker(value, _TrialPopen())
    except Exception:  # noqa: BLE001 - any refusal: only fork can carry it
        return False
    return True
