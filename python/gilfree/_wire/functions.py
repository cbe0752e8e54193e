"""Sending functions to workers: by reference when the worker can find them, by value
otherwise, once each.

A module-level function of an importable module is pickled by reference (its qualified name):
small, and the worker imports the module. Functions and classes of the parent's ``__main__``
go through ``MainPickler``: by reference when the worker's own main module has them under the
same name, by value into the worker's shared main namespace otherwise (see ``gilfree._wire.main``).
Lambdas, closures and nested functions of other modules go by value (cloudpickle). Each
distinct function gets an id the first time it is sent; a worker receives its body once
(``DEFINE``) and every later call names it by id.
"""

from __future__ import annotations

import collections
import io
import itertools
import os
import pickle
import sys
import threading
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

import cloudpickle
from cloudpickle import cloudpickle as cloudpickle_module

from gilfree._wire import main as _main
from gilfree._wire import reducers
from gilfree._wire.protocol import ONE_OFF, PROTOCOL

_CACHE_SIZE = 1024


def _needs_value(fn: Any) -> bool:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    return (
        module in (None, "__main__", "__mp_main__")
        or "<locals>" in qualname
        or "<lambda>" in qualname
    )


#: Gives the top-level names of the workers' main module, or None when they are not known.
MainNames = Callable[[], "frozenset[str] | None"]


def _no_names() -> frozenset[str] | None:
    return None


def encode_function(fn: Callable[..., Any], main_names: MainNames = _no_names) -> bytes:
    """Pickles ``fn`` by reference if that can work in a fresh interpreter, else with
    ``MainPickler`` (which asks ``main_names`` only for a function of ``__main__``)."""
    if not _needs_value(fn):
        try:
            return pickle.dumps(fn, PROTOCOL)
        except Exception:  # noqa: BLE001 - fall back to by-value pickling
            pass
    main = sys.modules.get("__main__")
    known = (
        main_names() if getattr(fn, "__globals__", None) is getattr(main, "__dict__", 0) else None
    )
    return MainPickler.dumps(fn, known)


def _refuse_file(file: Any) -> Any:
    """Refuses an open file as pickle does (cloudpickle would send a text file open for
    reading as a ``StringIO`` of what it holds: a copy whose writes go nowhere)."""
    kind = type(file)
    raise TypeError(f"cannot pickle '{kind.__module__}.{kind.__qualname__}' object")


class ValuePickler(cloudpickle.Pickler):  # type: ignore[misc] # cloudpickle has no types
    """cloudpickle (functions and classes by value), refusing open files as pickle does, and
    sending a memoryview with its format and shape (``reducers.pickle_memoryview``), as the
    codec does, where cloudpickle would send its bytes alone."""

    # The C pickler reads dispatch_table when it is created, so it is set on the class.
    dispatch_table: ClassVar[collections.ChainMap[Any, Any]] = collections.ChainMap(
        {io.TextIOWrapper: _refuse_file, memoryview: reducers.pickle_memoryview},
        cloudpickle.Pickler.dispatch_table,
    )


#: The token of each ``__main__`` object sent by name and value, by id: (a weak reference to
#: the object, so that an id reused by a later object gets a token of its own; the token).
_tokens: dict[int, tuple[weakref.ref[Any], str]] = {}


def _token(obj: Any) -> str:
    """A name for ``obj`` that the workers tell apart from any other object's, the same each
    time ``obj`` is sent (``_main.prefer_main`` keeps what it made of it), random so that two
    processes (a parent and its forked children) never give one token to two objects."""
    key = id(obj)
    entry = _tokens.get(key)
    if entry is not None and entry[0]() is obj:
        return entry[1]
    token = os.urandom(8).hex()

    def forget(reference: weakref.ref[Any]) -> None:
        if _tokens.get(key, (None, ""))[0] is reference:
            _tokens.pop(key, None)

    try:
        _tokens[key] = (weakref.ref(obj, forget), token)
    except TypeError:  # not weakly referable: a token per send, each send a new definition
        pass
    return token


class _ByValue:
    """Marks an object of ``__main__`` to pickle by value (one per object and pickler, so the
    pickle memo ends recursion: a function that refers to itself, two that call each other)."""

    __slots__ = ("target",)

    def __init__(self, target: Any) -> None:
        self.target = target


class MainPickler(ValuePickler):
    """``ValuePickler``, except for functions and classes of the parent's ``__main__``.

    Each such object whose qualified name leads back to it in ``__main__`` becomes
    ``_main.prefer_main(qualname, <the object by value>, <its token>)``: the worker takes its
    own object of that name if it has one, else its copy of that very object (the token tells a
    redefinition from the same object sent again). By-value functions are rebuilt over the
    worker's main namespace (``_main.make_function`` / ``_main.set_function_state``) instead of
    a private copy of their globals. Used for function bodies, initializers and process objects.

    With ``main_names``, the top-level names the workers' main module is known to have (the
    zygote reports them), nothing the workers have is sent: an object of one of those names
    goes by reference alone (``_main.from_main``), and a by-value function leaves out the
    globals of those names (the worker keeps its own anyway), so a function that reads a large
    array the script built at its top level does not carry a copy of it.
    """

    def __init__(
        self,
        file: Any,
        protocol: int | None = PROTOCOL,
        main_names: frozenset[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(file, protocol, **kwargs)
        main = sys.modules.get("__main__")
        self._main = main
        self._main_globals = getattr(main, "__dict__", None)
        self._main_names = main_names
        self._by_value: dict[int, _ByValue] = {}

    @classmethod
    def dumps(cls, value: Any, main_names: frozenset[str] | None = None) -> bytes:
        """``value`` pickled with this pickler."""
        buffer = io.BytesIO()
        cls(buffer, main_names=main_names).dump(value)
        return buffer.getvalue()

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is _ByValue:
            return self._reduce_by_value(obj.target)
        if self._is_main_object(obj):
            qualname = obj.__qualname__
            if "<" not in qualname and self._lookup(qualname) is obj:
                names = self._main_names
                if names is not None and qualname.split(".", 1)[0] in names:
                    return _main.from_main, (qualname,)
                wrapper = self._by_value.setdefault(id(obj), _ByValue(obj))
                return _main.prefer_main, (qualname, wrapper, _token(obj))
            return self._reduce_by_value(obj)
        return super().reducer_override(obj)

    def _is_main_object(self, obj: Any) -> bool:
        if self._main_globals is None:
            return False
        if type(obj) is types.FunctionType:
            return obj.__globals__ is self._main_globals
        return isinstance(obj, type) and obj.__module__ == self._main_globals.get("__name__")

    def _lookup(self, qualname: str) -> Any:
        found: Any = self._main
        for part in qualname.split("."):
            found = getattr(found, part, None)
        return found

    def _reduce_by_value(self, obj: Any) -> Any:
        reduced = super().reducer_override(obj)
        if (
            type(obj) is types.FunctionType
            and isinstance(reduced, tuple)
            and len(reduced) == 6
            and reduced[0] is cloudpickle_module._make_function  # noqa: SLF001
            and reduced[5] is cloudpickle_module._function_setstate  # noqa: SLF001
        ):
            code, _globals, name, defaults, closure = reduced[1]
            args = (code, name, defaults, closure)
            state = reduced[2]
            if self._main_names:  # the worker has these names: it would keep its own values
                attributes, slots = state
                referred = slots["__globals__"]
                kept = {
                    key: value for key, value in referred.items() if key not in self._main_names
                }
                state = (attributes, {**slots, "__globals__": kept})
            return _main.make_function, args, state, None, None, _main.set_function_state
        return reduced  # another cloudpickle: by value with the function's own globals


class FunctionRegistry:
    """Parent side: gives each distinct function an id and keeps its encoded form.

    Hashable callables are cached (up to 1024, least recently used dropped). Bound methods and
    unhashable callables are not: caching would keep their object alive, so they travel with
    each call under the id ``ONE_OFF`` and the worker drops them after the call.
    """

    def __init__(self, main_names: MainNames = _no_names) -> None:
        self._main_names = main_names
        self._ids = itertools.count(1)
        self._cache: OrderedDict[Any, tuple[int, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, fn: Callable[..., Any]) -> tuple[int, bytes]:
        """Returns ``(function_id, encoded)`` for ``fn``; raises if it cannot be pickled."""
        if isinstance(fn, types.MethodType):
            return ONE_OFF, encode_function(fn, self._main_names)
        try:
            hash(fn)
        except Exception:  # noqa: BLE001 - unhashable, or a __hash__ that raises anything
            return ONE_OFF, encode_function(fn, self._main_names)
        with self._lock:
            entry = self._cache.get(fn)
            if entry is not None:
                self._cache.move_to_end(fn)
                return entry
        entry = (next(self._ids), encode_function(fn, self._main_names))
        with self._lock:
            self._cache[fn] = entry
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return entry
