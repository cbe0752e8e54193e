"""A Dask cluster: a cluster transport (``gilfree._transports.cluster``) behind
``gilfree.dask.DaskExecutor``.

Each unit is one Dask task (``client.submit(run_packed, ...)``, with ``pure=False`` and a key of
its own, so identical calls are never merged). Its payload and its reply travel pickled by
gilfree (``gilfree._workers.cluster``), not by Dask's serializers, so values arrive as through
the stdlib's executor (an array writeable, a record array still one). Large values are scattered
once, pickled (``client.scatter``), and passed beside the payload as their Dask futures, which
Dask resolves on the worker; each unit loads a copy of its own, so a task that changes its
argument in place never changes what later units get. A task whose Dask worker died
(``KilledWorker``, once the scheduler has given up on it) ends its lane as a crash, with the
worker's end in the reason. Dask cannot stop a task that is running: cancelling its future
forgets it and lets it run. Where the cluster runs gilfree's ``WorkerPlugin``, a unit with a
timeout runs in the gilfree pool of its Dask worker (``run_in_pool``, itself run on the worker's
dispatch thread the plugin registers, whatever its default executor), which kills the process
running it past the timeout; otherwise ``gilfree.dask`` refuses per-task timeouts, and
``kill_on_cancel`` always.
"""

from __future__ import annotations

import itertools
import pickle
import uuid
from collections.abc import Callable
from concurrent.futures import BrokenExecutor
from typing import TYPE_CHECKING, Any

from gilfree._engine.units import function_name
from gilfree._transports.cluster import ClusterTransport, Lost, Packed
from gilfree._workers.cluster import DISPATCH_EXECUTOR, Placed, dumps, run_in_pool, run_packed

if TYPE_CHECKING:
    import distributed


class BrokenDaskExecutor(BrokenExecutor):
    """The Dask executor cannot run work any more."""


class DaskTransport(ClusterTransport):
    """Runs units as tasks of the Dask cluster of ``client`` (see the module docstring)."""

    name = "dask"
    broken_error: type[BrokenExecutor] = BrokenDaskExecutor
    init_failed_reason = "the initializer raised on a Dask worker"

    def __init__(self, client: distributed.Client, owned: list[Callable[[], object]]) -> None:
        super().__init__(owned)
        self.client = client
        self._token = uuid.uuid4().hex[:12]
        self._keys = itertools.count()

    def pack(self, value: Any, shared: list[Any]) -> Packed:
        """As for every cluster, then pickled; raises if it cannot be."""
        return self.pickled(super().pack(value, shared))

    def place(self, value: Any) -> Placed:
        """Scatters ``value``, pickled: a key for payloads, holding its Dask future."""
        [future] = self.client.scatter([dumps(value)], hash=False)
        return Placed(next(self._keys), future)

    def submit(
        self,
        target: None,
        kind: int,
        fn: Callable[..., Any],
        payload: Packed,
        timeout: float | None,
    ) -> distributed.Future[Any]:
        """One Dask task of its own (never merged with an identical one). A unit with a timeout
        runs in the gilfree pool of the Dask worker (``gilfree.dask.WorkerPlugin``), which
        kills the process running it past its timeout."""
        from dask.base import annotate

        key = f"{function_name(fn)}-gilfree-{self._token}-{next(self._keys)}"
        placed = (payload.keys, *payload.refs)
        if timeout is not None:
            with annotate(executor=DISPATCH_EXECUTOR):
                return self.client.submit(
                    run_in_pool, kind, fn, payload.blob, timeout, *placed, key=key, pure=False
                )
        return self.client.submit(run_packed, kind, fn, payload.blob, *placed, key=key, pure=False)

    def when_done(self, task: distributed.Future[Any], callback: Callable[[], None]) -> None:
        """Dask runs done-callbacks on a thread of the client's."""
        task.add_done_callback(lambda _done: callback())

    def cancel(self, task: distributed.Future[Any]) -> None:
        """Forgets ``task``: one that is running runs on."""
        task.cancel()

    def settle(self, task: distributed.Future[Any]) -> tuple[int, int, Any] | Lost | BaseException:
        from distributed import KilledWorker

        status = task.status
        if status == "finished":
            reply: tuple[int, int, Any] = pickle.loads(task.result())
            return reply
        if status == "cancelled":
            return Lost("the Dask task was cancelled by someone else")
        error: BaseException = task.exception()
        if isinstance(error, KilledWorker):
            return Lost(f"the Dask cluster lost the worker running it ({error})")
        return error
