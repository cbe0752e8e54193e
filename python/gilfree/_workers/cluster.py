"""What runs on a cluster's worker (Dask's, Ray's): one unit of work, as one task of the cluster.

The transport pickles the payload itself (cloudpickle, at the stdlib's default protocol), and
``run_packed`` pickles the reply the same way: values arrive as they would through the stdlib's
executor, whatever the cluster's own serialization does (it would keep a read-only array
read-only, turn a record array into a plain one, a bytearray into bytes). Large values placed on
the cluster once arrive beside the payload (``Placed`` keys, the cluster resolving their
references) and are copied for each unit, writeable, as from pickle: a task changing its
argument in place changes its own copy, never the stored one later units get.

A raised exception is returned as a value, with its traceback as text, so that the caller gets
the remote traceback as ``__cause__`` as it does from gilfree's own worker processes, rather
than the cluster's rendering of it. One that cannot be pickled, or whose pickle cannot be loaded,
is replaced by an ``UnpicklableExceptionError``, and a result that cannot be pickled fails its
unit with a ``SerializationError`` naming where it sits, as on one machine.
"""

from __future__ import annotations

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
#: The pickle protocol of payloads and replies: the stdlib executor's (``ForkingPickler``'s
#: default), so an array arrives writeable as it does there (protocol 5 would keep a
#: read-only one read-only).
PICKLE_PROTOCOL = pickle.DEFAULT_PROTOCOL


def dumps(value: Any) -> bytes:
    """``value`` pickled for the other side (see ``PICKLE_PROTOCOL``)."""
    return bytes(cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL))


def run_packed(
    kind: int, fn: Callable[..., Any], payload: bytes, keys: tuple[int, ...], *values: Any
) -> bytes:
    """``run_unit`` on a payload the sender pickled, its placed values (``keys``, their
    ``values`` resolved by the cluster) copied for this unit; the reply pickled (see the
    module docstring)."""
    unpacked = pickle.loads(payload)
    if keys:
        unpacked = _with_placed(unpacked, dict(zip(keys, values, strict=True)))
    return dump_reply(run_unit(kind, fn, unpacked))


def _with_placed(payload: Any, blobs: dict[int, bytes]) -> Any:
    """``payload`` with each ``Placed`` key replaced by a copy of its value, loaded from its
    pickle: one per call, and one per item of a chunk, as the stdlib's executor pickles each
    call (and, at its default chunksize, each item) apart: ``f(x, x)`` gets one object twice,
    ``map(f, [x] * 4)`` four objects."""

    def loader() -> Callable[[Any], Any]:
        loaded: dict[int, Any] = {}

        def load(value: Any) -> Any:
            if type(value) is not Placed:
                return value
            if value.key not in loaded:
                loaded[value.key] = pickle.loads(blobs[value.key])
            return loaded[value.key]

        return load

    first, second = payload
    if isinstance(second, bool):  # a chunk: (items, star)
        items = []
        for item in first:
            load = loader()
            items.append(tuple(load(arg) for arg in item) if second else load(item))
        return items, second
    load = loader()
    return tuple(load(arg) for arg in first), {name: load(arg) for name, arg in second.items()}


def dump_reply(reply: tuple[int, int, Any]) -> bytes:
    """``run_unit``'s reply pickled; one whose value cannot be is an ERROR with the
    ``SerializationError`` naming the part that cannot (``result[2]``), as on one machine."""
    try:
        return dumps(reply)
    except Exception as error:  # noqa: BLE001 - reported to the caller
        from gilfree._wire.serialization import RESULT, explain, fail_unsendable_results

        kind, busy, value = reply
        if kind == protocol.CHUNK_RESULT:  # only the items whose results cannot be sent fail
            results, failures = value
            failures = fail_unsendable_results(results, failures, dumps, raised)
            try:
                return dumps((kind, busy, (results, failures)))
            except Exception:  # noqa: BLE001 - the chunk as a whole, as below
                pass
        results = value[0] if kind == protocol.CHUNK_RESULT else value  # numbered by the caller
        return dumps((protocol.ERROR, busy, raised(explain({RESULT: results}, error))))


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


#: The Dask worker's executor ``run_in_pool`` runs on (``gilfree.dask.WorkerPlugin`` registers
#: it: a thread, whatever executor is the worker's default).
DISPATCH_EXECUTOR = "gilfree-dispatch"


def run_in_pool(
    kind: int,
    fn: Callable[..., Any],
    payload: bytes,
    timeout: float,
    keys: tuple[int, ...],
    *values: Any,
) -> bytes:
    """``run_packed`` on a Dask worker, in the gilfree pool its ``gilfree.dask.WorkerPlugin``
    gave it, which kills the process running the unit past ``timeout`` seconds (a
    ``TaskTimeoutError``, raised here for the caller)."""
    from distributed import get_worker

    submit_with = getattr(get_worker().executors.get("gilfree"), "submit_with", None)
    if submit_with is None:
        raise RuntimeError(
            "this Dask worker has no gilfree pool: register gilfree.dask.WorkerPlugin() on the"
            " cluster for per-task timeouts"
        )
    reply: bytes = submit_with(
        run_packed, (kind, fn, payload, keys, *values), timeout=timeout
    ).result()
    return reply


def raised(error: BaseException) -> Raised:
    """``error`` with its traceback as text; an ``UnpicklableExceptionError`` in its stead if
    it cannot be pickled, or its pickle cannot be loaded (checked here: exceptions are rare)."""
    from gilfree._wire.serialization import sendable_exception

    text = "".join(traceback.format_exception(error))
    return sendable_exception(error, dumps, pickle.loads), text


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
    """A large value placed on the cluster once (pickled), carried in a payload by its ``key``:
    the task receives the placed values beside the payload, the cluster resolving their
    references (Ray's ``ObjectRef``, Dask's future). ``ref`` stays with the sender: it is never
    pickled."""

    __slots__ = ("key", "ref")

    def __init__(self, key: int, ref: Any = None) -> None:
        self.key = key
        self.ref = ref

    def __reduce__(self) -> tuple[type[Placed], tuple[int]]:
        return Placed, (self.key,)


class UnitRunner:
    """What a Ray actor serving one lane runs: its units, one at a time, in order
    (``run_packed``; the function arrives pickled by the sender too, rather than as Ray's
    read-only views of its object store)."""

    def run(
        self, kind: int, function: bytes, payload: bytes, keys: tuple[int, ...], *values: Any
    ) -> bytes:
        """``run_packed``, the function unpickled first."""
        return run_packed(kind, pickle.loads(function), payload, keys, *values)

    def stop(self) -> None:
        """Ends the actor, and its process (after the calls queued before this one)."""
        import ray

        ray.actor.exit_actor()
