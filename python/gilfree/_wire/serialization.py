"""Explaining why a value cannot be sent: where it sits, and what it is.

The codec reports only pickle's own error. When sending fails, ``explain`` walks the value
again (this path is rare, so its cost does not matter), finds the first part that no pickler
accepts, and builds a ``SerializationError`` such as
``args[1]['fh']: cannot send an open file object to another process``.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from typing import Any

from gilfree._wire.values import pickle_value
from gilfree.errors import SerializationError

#: How deep ``explain`` looks into nested containers and captured variables.
MAX_DEPTH = 100
#: The root name of a result that cannot be sent back (``result[2]: cannot send ...``).
RESULT = "result"

_DESCRIPTIONS = {
    "_io.TextIOWrapper": "an open file object",
    "_io.BufferedReader": "an open file object",
    "_io.BufferedWriter": "an open file object",
    "_io.BufferedRandom": "an open file object",
    "_io.FileIO": "an open file object",
    "_thread.lock": "a thread lock",
    "_thread.RLock": "a thread lock",
    "socket.socket": "a socket",
    "builtins.generator": "a generator",
    "builtins.coroutine": "a coroutine",
    "sqlite3.Connection": "a database connection",
}


def describe(value: Any) -> str:
    """Says what ``value`` is, in words a user recognises."""
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}"
    return _DESCRIPTIONS.get(name, f"a {kind.__qualname__} object")


def _children(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    # Only exact builtin containers are opened, and types are compared by identity: a user's
    # value is never compared, truth-tested, measured or hashed here (a numpy array's ``==``
    # and ``bool`` raise), only pickled (and a dict key or set member shown by its repr).
    kind = type(value)
    if kind is list or kind is tuple:
        for index, item in enumerate(value):
            yield f"{path}[{index}]", item
    elif kind is dict:
        for key, item in value.items():
            yield f"{path}[{key!r}]", key
            yield f"{path}[{key!r}]", item
    elif kind is set or kind is frozenset:
        for item in value:
            yield f"{path}{{{item!r}}}", item


def _captured(function: types.FunctionType, path: str) -> Iterator[tuple[str, Any]]:
    """What a function sent by value carries: its closure's variables, and the globals its
    code names (cloudpickle sends those of a ``__main__`` or local function with it)."""
    name = function.__qualname__
    code = function.__code__
    for variable, cell in zip(code.co_freevars, function.__closure__ or ()):
        try:
            yield f"{path} (variable {variable!r} of {name})", cell.cell_contents
        except ValueError:  # a cell not yet filled
            continue
    names: set[str] = set()
    codes = [code]
    while codes:
        current = codes.pop()
        names.update(current.co_names)
        codes.extend(const for const in current.co_consts if isinstance(const, types.CodeType))
    namespace = function.__globals__
    for global_name in sorted(names):
        if global_name in namespace:
            yield f"{path} (global {global_name!r} of {name})", namespace[global_name]


def _locate(
    value: Any, path: str, depth: int = 0, opened: set[int] | None = None
) -> tuple[str, Any, BaseException] | None:
    opened = set() if opened is None else opened
    if type(value) is types.FunctionType:
        # Opened only when pickle refuses it: then what it captures is usually the culprit, not
        # the function. And once: met again (a recursive function names itself), it is the one
        # being looked into.
        if id(value) in opened:
            return None
        opened.add(id(value))
        error = _refusal(value)
        if error is None:
            return None
        for child_path, child in _captured(value, path) if depth <= MAX_DEPTH else ():
            found = _locate(child, child_path, depth + 1, opened)
            if found is not None:
                return found
        return path, value, error
    children = list(_children(value, path))  # a list of gilfree's: its length is safe
    if not children or depth > MAX_DEPTH:
        error = _refusal(value)
        return None if error is None else (path, value, error)
    for child_path, child in children:
        found = _locate(child, child_path, depth + 1, opened)
        if found is not None:
            return found
    return None


def _refusal(value: Any) -> BaseException | None:
    """The error every pickler gives ``value``; None if one accepts it."""
    try:
        pickle_value(value)
    except Exception as error:  # noqa: BLE001 - this is what is being looked for
        return error
    return None


def is_result_error(error: BaseException) -> bool:
    """Whether ``error`` says a worker could not send its result back."""
    return isinstance(error, SerializationError) and error.path.startswith(RESULT)


def number_in_map(error: BaseException, first: int) -> None:
    """Renumbers in place a map chunk's result error, which its worker numbered within the
    chunk (``result[2]['lock']``), by the item's place in the map: ``result[first + 2]...``."""
    if not is_result_error(error) or not first:
        return
    assert isinstance(error, SerializationError)  # is_result_error says so
    path = error.path
    opened, closed = len(RESULT), path.find("]")
    if path[opened : opened + 1] != "[" or not path[opened + 1 : closed].isdigit():
        return
    error.path = f"{RESULT}[{first + int(path[opened + 1 : closed])}]{path[closed + 1 :]}"
    message = str(error)
    if message.startswith(path):
        error.args = (error.path + message[len(path) :], *error.args[1:])


def fail_unsendable_results(
    results: list[Any],
    failures: list[tuple[int, Any]],
    check: Callable[[Any], object],
    describe: Callable[[BaseException], Any],
) -> list[tuple[int, Any]]:
    """A map chunk's ``results`` and ``failures`` (``(index, describe(exception))``, by index)
    whose reply could not be encoded: each result that ``check`` refuses becomes its item's
    failure (a ``SerializationError`` naming it by its place in the chunk, ``result[2]...``,
    which the caller renumbers by its place in the map: see ``number_in_map``), in place, and
    the new failures are returned. The other items keep their results: each item fails alone,
    as it would sent one call each."""
    failed = dict(failures)
    for index, value in enumerate(results):
        if index in failed:
            continue
        try:
            check(value)
        except Exception as error:  # noqa: BLE001 - this is what is being looked for
            results[index] = None
            failed[index] = describe(explain({f"{RESULT}[{index}]": value}, error))
    return sorted(failed.items())


def explain(roots: dict[str, Any], error: BaseException) -> SerializationError:
    """The error to raise for ``roots`` (name -> value sent under that name) that failed to
    encode with ``error``."""
    named = name_unsendable(roots)
    if named is not None:
        return named
    fallback = SerializationError(
        f"cannot send the value to another process: {error}", next(iter(roots), "")
    )
    fallback.__cause__ = error
    return fallback


def name_unsendable(roots: dict[str, Any]) -> SerializationError | None:
    """The error naming the first part of ``roots`` (name -> value sent under that name) that no
    pickler accepts, or None if every part pickles (what failed was not the values)."""
    for name, value in roots.items():
        found = _locate(value, name)
        if found is not None:
            path, culprit, cause = found
            message = (
                f"{path}: cannot send {describe(culprit)} to another process "
                f"({type(cause).__name__}: {cause})"
            )
            serialization_error = SerializationError(message, path)
            serialization_error.__cause__ = cause
            serialization_error.value_repr = _bounded_repr(value)
            return serialization_error
    return None


#: How much of a value's repr an error keeps (``SerializationError.value_repr``).
REPR_LIMIT = 300


def _bounded_repr(value: Any) -> str:
    """``repr(value)``, cut to `REPR_LIMIT` characters, or a stand-in where it raises."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a message must not fail on the user's object
        return f"<a {type(value).__qualname__} object>"
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."


def sendable_exception(
    error: BaseException, dumps: Callable[[BaseException], Any], loads: Callable[[Any], Any]
) -> BaseException:
    """``error`` if ``loads(dumps(error))`` works (as the caller will load it), else an
    ``UnpicklableExceptionError`` in its stead, with its type name, text and why: it cannot be
    pickled, or its pickle cannot be loaded (a class whose ``__init__`` takes other arguments
    than it gives ``Exception.__init__``, the most common custom exception bug)."""
    try:
        pickled = dumps(error)
    except Exception as failure:  # noqa: BLE001 - any pickling failure is reported
        reason = str(failure)
    else:
        try:
            loads(pickled)
        except Exception as failure:  # noqa: BLE001 - as the caller would fail
            reason = f"its pickle cannot be loaded: {failure!r}"
        else:
            return error
    from gilfree.errors import UnpicklableExceptionError

    return UnpicklableExceptionError(type(error).__qualname__, _text_of(error), reason)


def _text_of(error: BaseException) -> str:
    """``str(error)``, or a stand-in where that raises."""
    try:
        return str(error)
    except Exception:  # noqa: BLE001 - a message must not fail on the user's object
        return f"<str() of the {type(error).__qualname__} failed>"
