"""Objects the codec takes apart and rebuilds itself instead of pickling them: pandas frames,
series and indexes, and memoryviews of other items than bytes (the codec's REDUCED record).

A DataFrame's pickle costs tens of microseconds however small the frame is: pandas rebuilds its
block manager through several layers, and a column index of strings goes through Arrow both
ways. Here a frame becomes its index, its columns and its blocks (2-D numpy arrays with their
column positions), which the codec sends natively: the arrays as NDARRAY records, copied once
(or read in place from shared memory), the indexes as REDUCED records again. The receiver
rebuilds the frame with `pandas.api.internals.create_dataframe_from_blocks` (pandas 3 on;
before, frames go to pickle), which takes the arrays as they are. A short index of strings (the
usual column index) is built once per process and handed out as a view (`Index.view`: a new
object, the same immutable values), since building one from strings is the dearest part of a
small frame.

What is not plainly numpy-backed goes to pickle as before, whole: subclasses, frames or series
with ``attrs`` or non-default ``flags``, extension blocks (categoricals, nullable integers,
strings, datetimes), indexes other than plain numeric, string and range ones. So every rebuilt
object equals the sent one, dtypes, names and index types included.

A memoryview is sent natively as its bytes; one of other items (``memoryview(array)``, format
``d``, shape ``(2, 3)``) becomes its bytes, format and shape, and is cast back on arrival: it
indexes as the sent one did, not as bytes. ``memoryview.cast`` takes only native formats of one
character and no zero in a shape of several dimensions: other views are refused, as pickle
refuses every memoryview.

The codec calls `reducer_for` once per type and `rebuild` for each REDUCED record. The sender
never imports pandas here (a type can only be a pandas type once the process has imported it);
a receiver imports it on the first record that needs it, as unpickling would: a worker forked
from a template that never imported pandas (a notebook, a script importing it inside a function)
and a caller that never imported it (a task's pandas result) both receive pandas objects.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Hashable
from typing import Any

from gilfree._core import DecodeError

#: Rebuilder numbers: the index into `_REBUILDERS`, the same in every process of one install.
FRAME, SERIES, NUMERIC_INDEX, STRING_INDEX, RANGE_INDEX, MEMORYVIEW = range(6)
#: numpy dtype kinds sent natively: bool, signed and unsigned ints, floats, complexes, objects.
NUMPY_KINDS = frozenset("biufcO")
#: Index dtype kinds sent natively: the same without objects (an object index stays exactly
#: what pandas made of it only through pickle, unless it is all strings).
INDEX_KINDS = frozenset("biufc")
#: String indexes of at most this many labels are kept built, for reuse.
CACHED_LABELS = 64
#: String indexes kept built before the cache starts over.
CACHED_INDEXES = 256

Reduced = tuple[int, tuple[Any, ...]]
_cache: dict[tuple[Any, ...], Any] = {}


def reducer_for(kind: type) -> Callable[[Any], Reduced | None] | None:
    """The function that takes apart a value of exactly the type ``kind``, or None."""
    if kind is memoryview:
        return _reduce_memoryview
    pandas = sys.modules.get("pandas")
    if pandas is None or not kind.__module__.startswith("pandas"):
        return None
    try:
        reducers: dict[type, Callable[[Any], Reduced | None]] = {
            pandas.Series: _reduce_series,
            pandas.RangeIndex: _reduce_range,
            pandas.Index: _reduce_index,
        }
        if _frame_builder() is not None:
            reducers[pandas.DataFrame] = _reduce_frame
    except AttributeError:  # pandas half-imported, or not the pandas we know
        return None
    return reducers.get(kind)


def rebuild(kind: int, state: tuple[Any, ...]) -> Any:
    """The object that the reducer of rebuilder ``kind`` took apart into ``state``."""
    if not 0 <= kind < len(_REBUILDERS) or type(state) is not tuple:
        raise DecodeError(f"no object to rebuild of kind {kind} from {type(state).__name__}")
    return _REBUILDERS[kind](*state)


def _plain(value: Any) -> bool:
    """Whether a frame or series carries nothing beyond its data (``attrs``, ``flags``)."""
    return not value.attrs and value.flags.allows_duplicate_labels


def _reduce_frame(frame: Any) -> Reduced | None:
    if not _plain(frame):
        return None
    numpy = sys.modules["numpy"]
    blocks = []
    for block in frame._mgr.blocks:  # noqa: SLF001 - pickle reads the same blocks
        values = block.values
        if type(values) is not numpy.ndarray or values.dtype.kind not in NUMPY_KINDS:
            return None
        blocks.append((values, block.mgr_locs.as_array))
    return FRAME, (frame.index, frame.columns, tuple(blocks))


def _rebuild_frame(index: Any, columns: Any, blocks: tuple[Any, ...]) -> Any:
    build = _frame_builder()
    if build is None:
        raise DecodeError("a DataFrame sent natively needs pandas 3 or later to rebuild")
    return build(list(blocks), index, columns)


def _frame_builder() -> Callable[..., Any] | None:
    """``pandas.api.internals.create_dataframe_from_blocks``, or None before pandas 3 (frames
    then go to pickle). Kept once found: an import statement costs about 1 µs a frame."""
    global _found_builder  # a cache of one import
    if _found_builder is not None:
        return _found_builder
    try:
        from pandas.api.internals import create_dataframe_from_blocks
    except ImportError:
        return None  # not kept: pandas may be half-imported yet
    _found_builder = create_dataframe_from_blocks
    return _found_builder


_found_builder: Callable[..., Any] | None = None


def _reduce_series(series: Any) -> Reduced | None:
    values = series._values  # noqa: SLF001 - the numpy array itself, as pickle sends it
    if not _plain(series) or type(values) is not sys.modules["numpy"].ndarray:
        return None
    if values.dtype.kind not in NUMPY_KINDS:
        return None
    return SERIES, (values, series.index, series.name)


def _pandas() -> Any:
    """The pandas module, imported on the first record that needs it (see the module
    docstring)."""
    pandas = sys.modules.get("pandas")
    return pandas if pandas is not None else importlib.import_module("pandas")


def _rebuild_series(values: Any, index: Any, name: Hashable) -> Any:
    pandas = _pandas()
    # The dtype is given so that pandas infers nothing (an object array of strings stays one).
    return pandas.Series(values, index=index, name=name, dtype=values.dtype, copy=False)


def _reduce_range(index: Any) -> Reduced:
    return RANGE_INDEX, (index.start, index.stop, index.step, index.name)


def _rebuild_range(start: int, stop: int, step: int, name: Hashable) -> Any:
    return _pandas().RangeIndex(start, stop, step, name=name)


def _reduce_index(index: Any) -> Reduced | None:
    values = index._values  # noqa: SLF001 - the numpy array itself, as pickle sends it
    dtype = index.dtype
    if type(values) is sys.modules["numpy"].ndarray and dtype.kind in INDEX_KINDS:
        return NUMERIC_INDEX, (values, index.name)
    is_object = dtype == object  # noqa: E721 - a dtype compares equal to the type it stands for
    if not is_object and dtype != _default_string_dtype():
        return None
    labels = tuple(values)
    if not all(type(label) is str for label in labels):
        return None
    return STRING_INDEX, (labels, is_object, index.name)


def _rebuild_numeric(values: Any, name: Hashable) -> Any:
    # What Index(values, copy=False) makes of a 1-D numeric array, without its checks and casts
    # (a third of a small frame's rebuilding): the array was an Index's values when sent.
    if values.ndim != 1:
        raise DecodeError(f"an index of {values.ndim} dimensions")
    return _pandas().Index._simple_new(values, name=name)  # noqa: SLF001


def _rebuild_strings(labels: tuple[str, ...], is_object: bool, name: Hashable) -> Any:
    pandas = _pandas()
    dtype = object if is_object else _default_string_dtype()
    if len(labels) > CACHED_LABELS:
        return pandas.Index(labels, dtype=dtype, name=name)
    if name is not None and type(name) is not str:  # 1, 1.0 and True are one key: build it
        return pandas.Index(labels, dtype=dtype, name=name)
    key = (labels, is_object, name)
    index = _cache.get(key)
    if index is None:
        if len(_cache) >= CACHED_INDEXES:
            _cache.clear()
        index = _cache[key] = pandas.Index(labels, dtype=dtype, name=name)
    return index.view()


_string_dtype: list[Any] = []


def _default_string_dtype() -> Any:
    """The dtype pandas gives an index of strings: ``str`` from pandas 3, object before."""
    if not _string_dtype:
        _string_dtype.append(_pandas().Index(["label"]).dtype)
    return _string_dtype[0]


def _reduce_memoryview(view: Any) -> Reduced:
    # (The codec asks only for views of other items than bytes, or not of one dimension.)
    try:
        raw = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
        _cast(raw, view.format, view.shape)  # refused here rather than on arrival
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"cannot send a memoryview of format {view.format!r} and shape {view.shape}: "
            f"memoryview.cast cannot rebuild it ({error}); send the array it views, or "
            "view.tobytes()"
        ) from None
    return MEMORYVIEW, (raw, view.format, view.shape)


def pickle_memoryview(view: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """A memoryview as gilfree's picklers reduce it (pickle refuses every memoryview, and
    cloudpickle sends its bytes alone): its bytes, format and shape, rebuilt into a read-only
    view that indexes as the sent one did, as the codec sends one natively. Refused as
    ``_reduce_memoryview`` refuses."""
    _kind, (raw, format, shape) = _reduce_memoryview(view)
    return memoryview_from_bytes, (raw.tobytes(), format, shape)


def memoryview_from_bytes(data: bytes, format: str, shape: tuple[int, ...]) -> Any:
    """The memoryview ``pickle_memoryview`` took apart."""
    return _cast(memoryview(data), format, shape)


def _cast(raw: Any, format: str, shape: tuple[int, ...]) -> Any:
    """``raw`` (a view of bytes) as a view of ``format`` items in ``shape``."""
    if len(shape) == 1:
        return raw.cast(format)  # the length follows (and may be 0)
    return raw.cast(format, shape)


def _rebuild_memoryview(raw: Any, format: Any, shape: Any) -> Any:
    if type(raw) is not memoryview or type(format) is not str or type(shape) is not tuple:
        raise DecodeError("a memoryview to rebuild from other than bytes, format and shape")
    try:
        return _cast(raw, format, shape)
    except (TypeError, ValueError) as error:
        raise DecodeError(f"a memoryview that cannot be rebuilt: {error}") from None


_REBUILDERS: tuple[Callable[..., Any], ...] = (
    _rebuild_frame,
    _rebuild_series,
    _rebuild_numeric,
    _rebuild_strings,
    _rebuild_range,
    _rebuild_memoryview,
)
