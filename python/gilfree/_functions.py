"""Sending functions to workers: by reference when importable, by value otherwise, once each.

A module-level function of an importable module is pickled by reference (its qualified name):
small, and the worker imports the module. Lambdas, closures, nested functions and anything
defined in ``__main__`` are pickled by value with cloudpickle. Each distinct function gets an id
the first time it is sent; a worker receives its body once (``DEFINE``) and every later call
names it by id.
"""

from __future__ import annotations

import itertools
import pickle
import threading
import types
from collections import OrderedDict
from typing import Any, Callable

import cloudpickle

from gilfree._protocol import ONE_OFF, PROTOCOL

_CACHE_SIZE = 1024


def _needs_value(fn: Any) -> bool:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    return module in (None, "__main__", "__mp_main__") or "<locals>" in qualname or "<lambda>" in qualname


def encode_function(fn: Callable[..., Any]) -> bytes:
    """Pickles ``fn`` by reference if that can work in a fresh interpreter, else by value."""
    if not _needs_value(fn):
        try:
            return pickle.dumps(fn, PROTOCOL)
        except Exception:  # noqa: BLE001 - fall back to by-value pickling
            pass
    return cloudpickle.dumps(fn, PROTOCOL)


class FunctionRegistry:
    """Parent side: gives each distinct function an id and keeps its encoded form.

    Hashable callables are cached (up to 1024, least recently used dropped). Bound methods and
    unhashable callables are not: caching would keep their object alive, so they travel with
    each call under the id ``ONE_OFF`` and the worker drops them after the call.
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._cache: OrderedDict[Any, tuple[int, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, fn: Callable[..., Any]) -> tuple[int, bytes]:
        """Returns ``(function_id, encoded)`` for ``fn``; raises if it cannot be pickled."""
        if isinstance(fn, types.MethodType):
            return ONE_OFF, encode_function(fn)
        try:
            hash(fn)
        except TypeError:
            return ONE_OFF, encode_function(fn)
        with self._lock:
            entry = self._cache.get(fn)
            if entry is not None:
                self._cache.move_to_end(fn)
                return entry
        entry = (next(self._ids), encode_function(fn))
        with self._lock:
            self._cache[fn] = entry
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return entry
