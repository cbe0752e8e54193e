"""Big arrays shared once per ``Parallel`` call, and memmaps reopened by filename.

joblib's default backend dumps each array larger than ``max_nbytes`` to a file once per call, and
workers map it. Here the batch is pickled with two reducers of our own (``CallArrays.dumps``):

* **An ndarray** of more than ``max_nbytes`` bytes (as joblib compares; not of object dtype) is
  copied into gilfree's shared memory the first time a batch of the call refers to it, and every
  later batch sends the same copy by reference: the array's id keys it, for as long as the array
  lives (a weak reference drops the entry when it dies, before its id can be reused: arrays a
  lazy generator makes one by one are not kept until the call ends) or until the call ends
  (``close``). Batches in flight hold the shared copies they refer to. An array already in
  shared memory (``gilfree.shared_ndarray``, a view received earlier) is not copied at all.
  Workers see, as ``mmap_mode`` asks: ``"r"`` a read-only view; ``"r+"`` and ``"w+"`` a writable
  view of the shared copy (writes reach the other workers, not the parent's original, as with
  loky's dump files); ``"c"`` and ``None`` a copy-on-write mapping of it (writes stay in the
  worker, and only the pages written are copied).
* **A np.memmap** backed by a file is reopened from its filename, offset and strides, whatever
  its size, in its own mode (``"w+"`` becomes ``"r+"``, so the file is not truncated), with its
  ``filename``, ``offset`` and ``mode``: workers writing into a memmap the parent created write
  into the parent's file, joblib's documented idiom for results written in place. A ``"c"``
  (copy-on-write) memmap is sent as an array instead: the parent's writes to it are in no file.

Smaller arrays, object arrays and other subclasses travel with each batch in gilfree's codec
(copied once per batch). Shared copies are gilfree's pooled shared memory: once the call has
ended and the workers have dropped their views, it is recycled for later copies (bounded; see
README's data plane section).
"""

from __future__ import annotations

import mmap
import pickle
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy

from gilfree import _core
from gilfree._wire.protocol import PROTOCOL
from gilfree._wire.values import pickle_value


class CallArrays:
    """The shared copies of one ``Parallel`` call's big arrays (see the module docstring)."""

    def __init__(self, max_nbytes: int, mmap_mode: str | None) -> None:
        self._max_nbytes = max_nbytes
        self._mmap_mode = mmap_mode
        self._lock = threading.Lock()
        #: id(array) -> (a weak reference to the array, its shared bytes, their order): the
        #: call's shared copies of the arrays still alive.
        self._copies: dict[int, tuple[weakref.ref[Any], Any, str]] = {}
        self._overrides = {numpy.ndarray: self._reduce_array, numpy.memmap: self._reduce_memmap}

    def dumps(self, batch: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
        """``batch`` pickled with its big arrays shared, and its out-of-band buffers (for the
        codec, which sends shared ones by reference); ``loads`` undoes it in the worker."""
        return pickle_value(batch, True, self._overrides)

    def close(self) -> None:
        """The call has ended: forgets its copies (the memory is recycled once workers drop
        their views)."""
        with self._lock:
            self._copies.clear()

    @property
    def shared_count(self) -> int:
        """How many arrays this call has shared."""
        return len(self._copies)

    def _reduce_array(self, array: Any) -> Any:
        if array.nbytes <= self._max_nbytes or array.nbytes == 0 or array.dtype.hasobject:
            return array.__reduce_ex__(PROTOCOL)
        key = id(array)
        with self._lock:
            entry = self._copies.get(key)
            if entry is None or entry[0]() is not array:
                made = _share(array)
                if made is None:  # no shared memory here (not Linux)
                    return array.__reduce_ex__(PROTOCOL)
                # The callback runs as the array dies, before its id can be reused; popping
                # is atomic, so it needs no lock (it may run in any thread, even this one).
                alive = weakref.ref(array, _forgetting(self._copies, key))
                entry = self._copies[key] = (alive, *made)
        _, shared, order = entry
        view = memoryview(shared)
        if self._mmap_mode == "r":
            view = view.toreadonly()
        return _attach, (
            pickle.PickleBuffer(view),
            array.dtype,
            array.shape,
            order,
            self._mmap_mode,
        )

    def _reduce_memmap(self, array: Any) -> Any:
        mapping = getattr(array, "_mmap", None)
        if array.filename is None or mapping is None or array.mode == "c":
            return self._reduce_array(array)
        start = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY
        base = numpy.frombuffer(mapping, dtype=numpy.uint8).__array_interface__["data"][0]
        offset = array.__array_interface__["data"][0] - base
        mode = "r+" if array.mode == "w+" else array.mode
        shape, strides = array.shape, array.strides
        return _reopen, (
            array.filename,
            mode,
            start,
            len(mapping),
            offset,
            array.dtype,
            shape,
            strides,
            array.offset,
        )


def _forgetting(copies: dict[int, Any], key: int) -> Callable[[weakref.ref[Any]], None]:
    """The weak reference's callback that drops ``copies[key]``."""

    def forget(_: weakref.ref[Any]) -> None:
        copies.pop(key, None)

    return forget


def _share(array: Any) -> tuple[Any, str] | None:
    """``(array's bytes in shared memory, "C" or "F")``; None where nothing can be shared."""
    if array.flags.c_contiguous:
        order, contiguous = "C", array
    elif array.flags.f_contiguous:
        order, contiguous = "F", array.T
    else:
        order, contiguous = "C", numpy.ascontiguousarray(array)
    shared = _core.share(contiguous)
    return None if shared is None else (shared, order)


def loads(data: bytes, buffers: list[Any]) -> Any:
    """What ``CallArrays.dumps`` made, in the worker."""
    return pickle.loads(data, buffers=buffers)


def _attach(buffer: Any, dtype: Any, shape: tuple[int, ...], order: Any, mode: str | None) -> Any:
    """A worker's view of a shared copy (see the module docstring for ``mode``)."""
    if mode not in ("r", "r+", "w+"):
        buffer = _copy_on_write(buffer)
    return numpy.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _copy_on_write(buffer: Any) -> Any:
    """A private mapping of shared bytes: read in place, copied page by page when written. A
    plain copy where the bytes cannot be mapped again."""
    view = memoryview(buffer)
    shared: Any = view.obj
    if not isinstance(shared, _core.SharedBuffer):
        return bytearray(view)
    pid, fd, _, length = shared.handle
    offset = shared.file_offset
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    try:
        with open(f"/proc/{pid}/fd/{fd}", "rb") as file:
            private = _PrivateMapping(
                file.fileno(),
                offset - start + length,
                flags=mmap.MAP_PRIVATE,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
                offset=start,
            )
    except OSError:
        return bytearray(view)
    # Pages not written yet are the shared ones: the shared buffer stays in use (and so is not
    # recycled by its owner) for as long as the private mapping lives.
    private.shared = shared
    return memoryview(private)[offset - start :]


class _PrivateMapping(mmap.mmap):
    """A private mapping that holds the shared buffer it maps (see ``_copy_on_write``)."""

    shared: _core.SharedBuffer


def _reopen(
    filename: str,
    mode: Any,
    start: int,
    length: int,
    offset: int,
    dtype: Any,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    file_offset: int = 0,
) -> Any:
    """The parent's memmap, mapped again from its file: the same bytes, shape and strides, and
    its ``filename``, ``offset`` (``file_offset``) and ``mode``."""
    raw = numpy.memmap(filename, dtype=numpy.uint8, mode=mode, offset=start, shape=(length,))
    reopened = numpy.ndarray.__new__(
        numpy.memmap, shape, dtype, buffer=raw, offset=offset, strides=strides
    )
    reopened._mmap = raw._mmap  # type: ignore[attr-defined]  # noqa: SLF001 - memmap's own
    reopened.filename = raw.filename
    reopened.offset, reopened.mode = file_offset, mode
    return reopened
