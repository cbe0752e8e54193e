"""What runs on a cluster's worker (Dask's, Ray's): one unit of work, as one task of the cluster.

The cluster sends the function and the payload as it sends anything (cloudpickle), so this
side only runs them and says how it went. A raised exception is returned as a value, with its
traceback as text, so that the caller gets the remote traceback as ``__cause__`` as it does from
gilfree's own worker processes, rather than the cluster's rendering of it.
"""

from __future__ import annotations

import copy
import pickle
import time
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle

from gilfree._wire import protocol
from gilfree._workers.worker import run_items

#: An exception raised by a task, and its traceback as text.
Raised = tuple[BaseException, str]


def run_unit(kind: int, fn: Callable[..., Any], payload: Any) -> tuple[int, int, Any]:
    """Runs a CALL (``payload``: ``(args, kwargs)``) or a CHUNK (``(items, star)``):
    ``(reply kind, busy nanoseconds, value)``, the value a RESULT's return value, an ERROR's
    ``Raised``, or a CHUNK_RESULT's ``(results, [(index, Raised)])``."""
    started = time.perf_counter_ns()
    if kind == protocol.CHUNK:
        items, star = payload
        value = run_items(fn, items, star, raised)
        return protocol.CHUNK_RESULT, time.perf_counter_ns() - started, value
    args, kwargs = payload
    try:
        result = fn(*args, **kwargs)
    except BaseException as error:  # noqa: BLE001 - the task's own, for its caller
        return protocol.ERROR, time.perf_counter_ns() - started, raised(error)
    return protocol.RESULT, time.perf_counter_ns() - started, result


def run_unit_in_pool(
    kind: int, fn: Callable[..., Any], payload: Any, timeout: float
) -> tuple[int, int, Any]:
    """``run_unit`` on a Dask worker, in the gilfree pool its ``gilfree.dask.WorkerPlugin``
    gave it, which kills the process running the unit past ``timeout`` seconds (a
    ``TaskTimeoutError``, raised here for the caller)."""
    from distributed import get_worker

    submit_with = getattr(get_worker().executors.get("gilfree"), "submit_with", None)
    if submit_with is None:
        raise RuntimeError(
            "this Dask worker has no gilfree pool: register gilfree.dask.WorkerPlugin() on the"
            " cluster for per-task timeouts"
        )
    reply: tuple[int, int, Any] = submit_with(
        run_unit, (kind, fn, payload), timeout=timeout
    ).result()
    return reply


def raised(error: BaseException) -> Raised:
    """``error`` with its traceback as text."""
    return error, "".join(traceback.format_exception(error))


def each_value(payload: Any, change: Callable[[Any], Any]) -> Any:
    """``payload`` (a CALL's ``(args, kwargs)`` or a CHUNK's ``(items, star)``) with
    ``change`` applied to each top-level value: an argument, an item, an item's argument.
    These are the values a cluster transport may place on the cluster once."""
    first, second = payload
    if isinstance(second, bool):  # a chunk: (items, star)
        if second:
            return [tuple(change(arg) for arg in item) for item in first], second
        return [change(item) for item in first], second
    return tuple(change(arg) for arg in first), {name: change(arg) for name, arg in second.items()}


class Placed:
    """A large value placed on the cluster once, carried in a payload by its ``key`` (Ray's:
    the task receives the values beside the payload, Ray's ``ObjectRef`` for each resolved by
    Ray itself). ``ref`` stays with the sender: it is never pickled."""

    __slots__ = ("key", "ref")

    def __init__(self, key: int, ref: Any = None) -> None:
        self.key = key
        self.ref = ref

    def __reduce__(self) -> tuple[type[Placed], tuple[int]]:
        return Placed, (self.key,)


def writeable_copy(value: Any) -> Any:
    """A copy of ``value`` with buffers of its own, writeable (an array's, a frame's blocks):
    ``copy.deepcopy``, which copies each buffer once. (A round trip through pickle would keep
    a read-only buffer read-only.)"""
    return copy.deepcopy(value)


class UnitRunner:
    """What a Ray actor serving one lane runs: its units, one at a time, in order.

    The function and the payload arrive pickled by the sender (cloudpickle), and the reply
    goes back pickled the same way: values arrive as they were sent, with arrays writeable,
    rather than as Ray's read-only views of its object store. Placed values (``keys``, their
    ``values`` resolved by Ray, read-only views) are copied once per unit, so that a task gets
    them writeable too, as from pickle.
    """

    def run(
        self, kind: int, function: bytes, payload: bytes, keys: tuple[int, ...], *values: Any
    ) -> bytes:
        """``run_unit``, its reply pickled."""
        fn = pickle.loads(function)
        unpacked = pickle.loads(payload)
        if keys:
            by_key = {key: writeable_copy(value) for key, value in zip(keys, values, strict=True)}
            unpacked = each_value(
                unpacked, lambda value: by_key[value.key] if type(value) is Placed else value
            )
        reply = run_unit(kind, fn, unpacked)
        return bytes(cloudpickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))

    def stop(self) -> None:
        """Ends the actor, and its process (after the calls queued before this one)."""
        import ray

        ray.actor.exit_actor()
