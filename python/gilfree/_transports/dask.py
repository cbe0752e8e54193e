"""A Dask cluster: a cluster transport (``gilfree._transports.cluster``) behind
``gilfree.dask.DaskExecutor``.

Each unit is one Dask task (``client.submit(run_unit, ...)``, with ``pure=False`` and a key of
its own, so identical calls are never merged). Large values are scattered once
(``client.scatter``) and travel as their Dask futures, which Dask resolves to the values on the
worker. A task whose Dask worker died (``KilledWorker``, once the scheduler has given up on it)
ends its lane as a crash, with the worker's end in the reason. Dask cannot stop a task that is
running: cancelling its future forgets it and lets it run. Where the cluster runs gilfree's
``WorkerPlugin``, a unit with a timeout runs in the gilfree pool of its Dask worker
(``run_unit_in_pool``), which kills the process running it past the timeout; otherwise
``gilfree.dask`` refuses per-task timeouts, and ``kill_on_cancel`` always.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from concurrent.futures import BrokenExecutor
from typing import TYPE_CHECKING, Any

from gilfree._engine.units import function_name
from gilfree._transports.cluster import ClusterTransport, Lost
from gilfree._workers.cluster import run_unit, run_unit_in_pool

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

    def place(self, value: Any) -> distributed.Future[Any]:
        """Scatters ``value``: its Dask future, which a task receives as the value."""
        [future] = self.client.scatter([value], hash=False)
        placed: distributed.Future[Any] = future
        return placed

    def submit(
        self, target: None, kind: int, fn: Callable[..., Any], payload: Any, timeout: float | None
    ) -> distributed.Future[Any]:
        """One Dask task of its own (never merged with an identical one). A unit with a timeout
        runs in the gilfree pool of the Dask worker (``gilfree.dask.WorkerPlugin``), which
        kills the process running it past its timeout."""
        key = f"{function_name(fn)}-gilfree-{self._token}-{next(self._keys)}"
        if timeout is not None:
            return self.client.submit(
                run_unit_in_pool, kind, fn, payload, timeout, key=key, pure=False
            )
        return self.client.submit(run_unit, kind, fn, payload, key=key, pure=False)

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
            reply: tuple[int, int, Any] = task.result()
            return reply
        if status == "cancelled":
            return Lost("the Dask task was cancelled by someone else")
        error: BaseException = task.exception()
        if isinstance(error, KilledWorker):
            return Lost(f"the Dask cluster lost the worker running it ({error})")
        return error
