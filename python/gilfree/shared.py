"""Arrays in shared memory, for the map-over-a-big-array pattern.

``shared_ndarray(shape, dtype)`` returns an ordinary numpy array whose memory is shared: pass it
(or a contiguous slice of it) to tasks and they receive the same memory by reference, whatever
its size, with nothing copied. Writes are visible to every process at once because it is the
same memory, so synchronisation is yours: have tasks write disjoint parts, or coordinate them.
The memory is freed when the last array using it is gone, in every process.

numpy stays optional: it is imported when ``shared_ndarray`` is first called.
"""

from __future__ import annotations

import math
from typing import Any

from gilfree._core import SharedBuffer

__all__ = ["shared_ndarray"]


def shared_ndarray(shape: int | tuple[int, ...], dtype: Any = float, order: str = "C") -> Any:
    """A zero-filled numpy array of ``shape`` and ``dtype`` in shared memory (see the module
    docstring). ``order`` is ``"C"`` (row-major, default) or ``"F"`` (column-major)."""
    import numpy

    dimensions = (shape,) if isinstance(shape, int) else tuple(shape)
    if any(not isinstance(size, int) or size < 0 for size in dimensions):
        raise ValueError(f"shape must be non-negative integers, got {shape!r}")
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', got {order!r}")
    element = numpy.dtype(dtype)
    count = math.prod(dimensions)
    buffer = SharedBuffer.allocate(max(count * element.itemsize, 1))
    # numpy's stubs take only the buffer types they name, not any PEP 688 buffer.
    flat = numpy.frombuffer(buffer, dtype=element, count=count)  # type: ignore[call-overload]
    return flat.reshape(dimensions, order=order)
