"""How the codec pickles what it does not encode natively, and the hooks it is handed.

``pickle_value`` is the codec's fallback: pickle (protocol 5), with large contiguous buffers out
of band. A value that refers to the parent's ``__main__`` (a notebook function passed as an
argument, a joblib batch holding one) is pickled again with ``MainPickler``, as function bodies
are: a worker may have no such name in its own main module (a notebook's cells, names defined
under the guard), so those objects travel by value, and a worker that has the name keeps its
own. This module registers the fallback and the pandas reducers with the codec when imported
(``gilfree/__init__.py`` imports it first, in every process).
"""

from __future__ import annotations

import copyreg
import io
import pickle
from collections.abc import Callable, Mapping
from typing import Any

from gilfree import _core
from gilfree._wire import reducers
from gilfree._wire.protocol import PROTOCOL

#: Out-of-band buffers smaller than this stay inside the pickle.
OUT_OF_BAND_MIN = 4096
#: What a pickle that refers to ``__main__`` contains (the module name, as a string).
MAIN_REFERENCE = b"__main__"

#: Reducers by exact type, as in ``copyreg.dispatch_table``: ``reducer(obj)`` gives
#: ``obj.__reduce__()``'s kind of tuple.
Reducers = Mapping[type, Callable[[Any], Any]]


def pickle_value(
    value: Any, share: bool = False, overrides: Reducers | None = None
) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """How the codec pickles what it does not encode natively: pickle (protocol 5); with
    ``MainPickler`` when the pickle refers to ``__main__`` (see the module docstring); cloudpickle
    (by value) for what pickle refuses, so lambdas and closures can be arguments and results
    too. With ``share``, contiguous out-of-band buffers (numpy arrays and the blocks of pandas
    objects, ``PickleBuffer``) of ``OUT_OF_BAND_MIN`` bytes or more are returned beside the
    pickle: the codec copies each once, into the message (or a shared buffer of its own when
    large), and the receiver reads it in place. ``overrides`` take precedence over the picklers'
    own for their types (``gilfree.joblib`` shares big arrays once per call this way). Raises
    pickle's own error when no pickler manages."""
    buffers: list[pickle.PickleBuffer] = []

    def place(buffer: pickle.PickleBuffer) -> bool:
        try:
            size = buffer.raw().nbytes
        except BufferError:  # not contiguous
            return True
        if size < OUT_OF_BAND_MIN:
            return True  # in-band
        buffers.append(buffer)
        return False

    callback = place if share else None
    try:
        if overrides:
            data = _dump(pickle.Pickler, value, callback, overrides)
        else:
            data = pickle.dumps(value, PROTOCOL, buffer_callback=callback)
    except Exception as error:  # noqa: BLE001 - any refusal: cloudpickle may still manage
        from gilfree._wire.functions import ValuePickler  # cloudpickle: imported when needed

        buffers.clear()
        try:
            return _dump(ValuePickler, value, callback, overrides), buffers
        except Exception:  # noqa: BLE001 - pickle's message is the one to show
            raise error from None
    if MAIN_REFERENCE not in data:
        return data, buffers
    from gilfree._wire.functions import MainPickler  # cloudpickle: imported when first needed

    buffers.clear()
    return _dump(MainPickler, value, callback, overrides), buffers


def _dump(
    pickler: type[pickle.Pickler],
    value: Any,
    callback: Callable[[pickle.PickleBuffer], bool] | None,
    overrides: Reducers | None,
) -> bytes:
    """``value`` pickled by a ``pickler``, with ``overrides`` first if any."""
    file = io.BytesIO()
    if overrides:
        _with_overrides(pickler)(file, callback, overrides).dump(value)
    else:
        pickler(file, PROTOCOL, buffer_callback=callback).dump(value)
    return file.getvalue()


#: ``_with_overrides``'s classes, by base.
_OVERRIDING: dict[type[pickle.Pickler], Callable[..., pickle.Pickler]] = {}


def _with_overrides(base: type[pickle.Pickler]) -> Callable[..., pickle.Pickler]:
    """``base`` taking reducers that override its dispatch table (copyreg's for pickle's)."""
    made = _OVERRIDING.get(base)
    if made is not None:
        return made

    class WithOverrides(base):  # type: ignore[valid-type, misc] # a class made for each base
        def __init__(self, file: Any, callback: Any, overrides: Reducers) -> None:
            own = getattr(base, "dispatch_table", None)  # pickle's: a slot, not a mapping
            below = own if isinstance(own, Mapping) else copyreg.dispatch_table
            # The C pickler reads dispatch_table when it is created, so it is set first; a flat
            # dict, since a ChainMap would cost a Python call per object pickled.
            self.dispatch_table = {**below, **overrides}
            super().__init__(file, PROTOCOL, buffer_callback=callback)

    _OVERRIDING[base] = WithOverrides
    return WithOverrides


# The codec's pickle fallback and the pandas reducers, handed to it once (it never looks them up).
_core.register_hooks(pickle_value, reducers.reducer_for, reducers.rebuild)
