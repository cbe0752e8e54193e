"""What runs on a cluster's worker (Dask's): one unit of work, as one task of the cluster.

The cluster sends the function and the payload as it sends anything (cloudpickle), so this
side only runs them and says how it went. A raised exception is returned as a value, with its
traceback as text, so that the caller gets the remote traceback as ``__cause__`` as it does from
gilfree's own worker processes, rather than the cluster's rendering of it.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

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


def raised(error: BaseException) -> Raised:
    """``error`` with its traceback as text."""
    return error, "".join(traceback.format_exception(error))
