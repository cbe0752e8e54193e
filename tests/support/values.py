"""Values gilfree must carry without ever comparing, truth-testing, measuring or hashing them.

numpy arrays and pandas objects answer ``==`` with an array and refuse ``bool``; ``Hostile``
raises from every such operation. ``build(name)`` makes the same value in the test and in a
worker, and ``assert_same`` checks what arrived with numpy.testing / pandas.testing (dtype,
shape and memory order included) without applying ``==`` to the values themselves.

What arrives, recorded (``ARRIVING_LAYOUT``): a Fortran-ordered array arrives Fortran-ordered; a
non-contiguous view arrives as an equal, C-contiguous array (as pickle makes it); every array
arrives writeable, from shared memory or not.
"""

from __future__ import annotations

import dataclasses
import traceback

import numpy as np
import pandas as pd

#: Items in each map: enough for several chunks of 3 (3 + 3 + 1).
ITEM_COUNT = 7
#: Bytes past which an array travels in shared memory (``gilfree._core.SHARE_THRESHOLD``).
SHARE_THRESHOLD = 1 << 20


class Touched(Exception):
    """Raised when something applies ``==``, ``bool``, ``len``, ``hash``... to a ``Hostile``."""


class Hostile:
    """A value whose comparison, truth value, length, hash, iteration and containment raise
    (as a numpy array's ``bool`` does); it is pickled like any plain object."""

    def __init__(self, payload: object) -> None:
        self.payload = payload

    def _touched(self, *_: object) -> None:
        raise Touched("a Hostile value was compared, truth-tested, measured or hashed")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _touched  # type: ignore[assignment]
    __bool__ = __len__ = __hash__ = __iter__ = __contains__ = _touched  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Hostile({self.payload!r})"


class ValueCarryingError(Exception):
    """An exception whose ``args[0]`` is a value (an array, a DataFrame, a Hostile)."""


def _object_array() -> np.ndarray:
    array = np.empty(4, dtype=object)
    array[:] = [1, "a", None, (2, 3)]  # element by element: (2, 3) stays one tuple
    return array


_BUILDERS = {
    "ndarray_0d": lambda: np.array(3.5),
    "ndarray_1d": lambda: np.arange(10, dtype=np.int32),
    "ndarray_2d": lambda: np.arange(12.0).reshape(3, 4),
    "ndarray_fortran": lambda: np.asfortranarray(np.arange(24.0).reshape(4, 6)),
    "ndarray_view": lambda: np.arange(60.0).reshape(6, 10)[::2, ::3],
    "ndarray_object": _object_array,
    "ndarray_structured": lambda: np.array(
        [(1, 2.5, b"ab"), (3, 4.5, b"cd")], dtype=[("i", "<i4"), ("f", "<f8"), ("s", "S2")]
    ),
    # Past SHARE_THRESHOLD: these travel in shared memory and are read in place.
    "ndarray_large": lambda: np.arange(160_000.0),
    "ndarray_large_fortran": lambda: np.asfortranarray(np.arange(160_000.0).reshape(400, 400)),
    "ndarray_large_view": lambda: np.arange(900_000.0).reshape(900, 1000)[::2, ::3],
    "dataframe": lambda: pd.DataFrame(
        {"a": [1, 2, 3], "b": [0.5, 1.5, np.nan], "c": ["x", "y", "z"]},
        index=pd.Index([10, 20, 30], name="k"),
    ),
    "series": lambda: pd.Series([1.0, 2.0, 3.0], index=["a", "b", "c"], name="s"),
    "index": lambda: pd.Index(["x", "y", "z"], name="i"),
    "hostile": lambda: Hostile(42),
    # Builtin containers around such values (the codec's own encoding, pickle inside).
    "mixed_list": lambda: [np.arange(3), Hostile("in a list"), {"frame": pd.DataFrame({"a": [1]})}],
}

#: The value names, in a stable order (test ids and keyword names).
NAMES = tuple(_BUILDERS)

#: How each array arrives: "C" or "F" contiguous.
ARRIVING_LAYOUT = {"ndarray_fortran": "F", "ndarray_large_fortran": "F"}


def build(name: str) -> object:
    """A fresh copy of the value called ``name``."""
    return _BUILDERS[name]()


# --- task functions --------------------------------------------------------------------------


def identity(value: object) -> object:
    return value


def echo(*args: object, **kwargs: object) -> tuple[tuple[object, ...], dict[str, object]]:
    return args, kwargs


def build_in_worker(name: str) -> object:
    return build(name)


def pair(index: int, value: object) -> tuple[int, object]:
    return index, value


def build_pair(index: int, name: str) -> tuple[int, object]:
    return index, build(name)


def build_tagged(tagged: tuple[int, str]) -> tuple[int, object]:
    index, name = tagged
    return index, build(name)


def is_one_object(value: object, holder: list[object]) -> bool:
    """Whether ``value`` and ``holder[0]`` arrived as one object (sent as the same one)."""
    return value is holder[0]


def twice(name: str) -> tuple[object, list[object]]:
    """``build(name)`` made once and returned twice, as ``is_one_object``'s arguments."""
    value = build(name)
    return value, [value]


def raise_with(name: str) -> None:
    raise ValueCarryingError(build(name))


#: What ``remember`` was given in this worker (as initargs).
_remembered: tuple[object, ...] = ()


def remember(*given: object) -> None:
    """An initializer: keeps ``given`` (one value per name of ``NAMES``, in order)."""
    global _remembered
    _remembered = given


def recall(name: str) -> object:
    """The value ``remember`` was given for ``name``."""
    return _remembered[NAMES.index(name)]


def unsendable() -> list[object]:
    """An array, a Hostile and a lock: only the lock cannot be sent."""
    import threading

    return [build("ndarray_2d"), Hostile(1), {"lock": threading.Lock()}]


# --- checks ----------------------------------------------------------------------------------


def assert_same(received: object, expected: object, layout: str | None = "C") -> None:
    """Fails unless ``received`` equals ``expected`` in type, dtype, shape, values and (arrays)
    memory ``layout`` ("C", "F", or None: the same as ``expected``, for a value that was not
    pickled); never applies ``==`` to a numpy, pandas or Hostile value."""
    assert type(received) is type(expected), f"{type(received)} arrived for {type(expected)}"
    if isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(received, expected, strict=True)
        assert received.flags.writeable, "the array arrived read-only"
        if layout is None:
            assert received.flags.c_contiguous == expected.flags.c_contiguous
            assert received.flags.f_contiguous == expected.flags.f_contiguous
        elif layout == "F":
            assert received.flags.f_contiguous, f"not Fortran-ordered:\n{received.flags}"
        else:
            assert received.flags.c_contiguous, f"not C-contiguous:\n{received.flags}"
    elif isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(received, expected, check_exact=True)
    elif isinstance(expected, pd.Series):
        pd.testing.assert_series_equal(received, expected, check_exact=True)
    elif isinstance(expected, pd.Index):
        pd.testing.assert_index_equal(received, expected, exact=True, check_exact=True)
    elif isinstance(expected, Hostile):
        assert_same(received.payload, expected.payload)
    elif isinstance(expected, (list, tuple)):
        assert len(received) == len(expected)
        for received_item, expected_item in zip(received, expected):
            assert_same(received_item, expected_item)
    elif isinstance(expected, dict):
        assert list(received) == list(expected)
        for key in expected:
            assert_same(received[key], expected[key])
    else:
        assert received == expected


def check(name: str, received: object, pickled: bool = True) -> None:
    """``assert_same`` against a fresh ``build(name)``; an array that was not ``pickled`` (a
    forked child's argument) keeps its layout."""
    assert_same(received, build(name), ARRIVING_LAYOUT.get(name, "C") if pickled else None)


def check_in_child(connection: object, pickled: bool, *values: object, **named: object) -> None:
    """The target of a Process: checks ``values`` (in ``NAMES`` order) and ``named`` (by name),
    sends ``{"args[i]" or "kwargs[name]": None or the failure's traceback}`` and exits with 1 if
    any check failed. ``pickled``: whether the arguments were pickled on the way (not by a
    plain fork)."""
    report: dict[str, str | None] = {}
    checks = [(f"args[{i}]", name, value) for i, (name, value) in enumerate(zip(NAMES, values))]
    checks += [(f"kwargs[{name}]", name, value) for name, value in named.items()]
    for where, name, value in checks:
        try:
            check(name, value, pickled)
        except BaseException:
            report[where] = traceback.format_exc()
        else:
            report[where] = None
    connection.send(report)  # type: ignore[attr-defined]
    connection.close()  # type: ignore[attr-defined]
    if any(failure is not None for failure in report.values()):
        raise SystemExit(1)


@dataclasses.dataclass
class Holder:
    """An object holding another: two holders of one list share it (pickle keeps it one)."""

    data: object


def shared_through_holders() -> list[object]:
    """``[Holder(shared), Holder(shared), shared, Holder(holder)]``: a list held by two objects
    and listed beside them, and an object held by another."""
    shared = [1, 2, 3]
    first = Holder(shared)
    return [first, Holder(shared), shared, Holder(first)]


def sharing_kept(value: list[object]) -> bool:
    """Whether ``value`` (as `shared_through_holders` makes it) still shares what it shared."""
    first, second, shared, outer = value
    return first.data is second.data is shared and outer.data is first  # type: ignore[attr-defined]
