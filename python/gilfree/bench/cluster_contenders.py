"""The Dask contenders of issue 14: a ``LocalCluster`` of single-threaded worker processes,
run through gilfree's ``DaskExecutor`` (``dask_gilfree``) or through Dask's own
``Client.get_executor()`` (``dask_native``). Each pool is the cluster, its client and the
executor; closing it closes all three."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gilfree.bench.contenders import Contender, Function


@dataclass
class ClusterPool:
    """A cluster with its client and the executor under test."""

    cluster: Any
    client: Any
    executor: Any


class DaskContender(Contender):
    """An executor over a fresh ``LocalCluster(n_workers=workers, threads_per_worker=1)``."""

    def __init__(self, key: str, name: str, *, native: bool) -> None:
        super().__init__(key, name)
        self._native = native

    def create(self, workers: int) -> ClusterPool:
        """Start the cluster, its client and the executor."""
        import distributed

        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        client = distributed.Client(cluster)
        if self._native:
            executor = client.get_executor()
        else:
            from gilfree.dask import DaskExecutor

            executor = DaskExecutor(client)
        return ClusterPool(cluster, client, executor)

    def call(self, pool: Any, function: Function, argument: object) -> Any:
        """``submit(...).result()``."""
        return pool.executor.submit(function, argument).result()

    def map(
        self,
        pool: Any,
        function: Function,
        arguments: Iterable[object],
        chunksize: int | None = None,
    ) -> list[Any]:
        """``list(executor.map(...))`` (Dask's own executor ignores ``chunksize``)."""
        if chunksize is None:
            return list(pool.executor.map(function, arguments))
        return list(pool.executor.map(function, arguments, chunksize=chunksize))

    def worker_pids(self, pool: Any) -> list[int]:
        """The cluster's worker processes."""
        import os

        return list(pool.client.run(os.getpid).values())

    def close(self, pool: Any, *, graceful: bool) -> None:
        """Shut the executor down (Dask's own takes ``wait`` only), then the client and the
        cluster."""
        pool.executor.shutdown(wait=graceful)
        pool.client.close()
        pool.cluster.close()
