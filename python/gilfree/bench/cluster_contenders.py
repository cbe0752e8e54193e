"""The cluster contenders of issue 14.

* Dask: a ``LocalCluster`` of single-threaded worker processes, run through gilfree's
  ``DaskExecutor`` (``dask_gilfree``) or through Dask's own ``Client.get_executor()``
  (``dask_native``). Each pool is the cluster, its client and the executor; closing it closes
  all three.
* Ray: a local Ray of ``workers`` CPUs (``ray.init(num_cpus=workers)``), run through gilfree's
  ``RayExecutor`` (``ray_gilfree``) or through ``ray.util.multiprocessing.Pool`` (``ray_pool``,
  Ray's own pool of actors, which cuts a map's input into 4 chunks per actor). Closing the pool
  shuts the Ray session down.
"""

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


class RayContender(Contender):
    """A pool over a fresh local Ray of ``workers`` CPUs: gilfree's ``RayExecutor``, or Ray's
    own ``ray.util.multiprocessing.Pool``."""

    def __init__(self, key: str, name: str, *, native: bool) -> None:
        super().__init__(key, name)
        self._native = native

    def create(self, workers: int) -> Any:
        """Start Ray, then the pool on it."""
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        if self._native:
            from ray.util.multiprocessing import Pool

            return Pool(workers)
        from gilfree.ray import RayExecutor

        return RayExecutor(max_workers=workers)

    def call(self, pool: Any, function: Function, argument: object) -> Any:
        """``apply(function, (argument,))`` or ``submit(...).result()``."""
        if self._native:
            return pool.apply(function, (argument,))
        return pool.submit(function, argument).result()

    def map(
        self,
        pool: Any,
        function: Function,
        arguments: Iterable[object],
        chunksize: int | None = None,
    ) -> list[Any]:
        """``pool.map(...)`` (Ray's, a list) or ``list(executor.map(...))``."""
        return list(pool.map(function, arguments, chunksize=chunksize))

    def worker_pids(self, pool: Any) -> list[int]:
        """The processes that run the pool's calls, as far as one round of calls finds them."""
        import os

        return sorted(set(self.map(pool, _pid_of, range(8), chunksize=1)) - {os.getpid()})

    def close(self, pool: Any, *, graceful: bool) -> None:
        """Close the pool, then Ray."""
        import ray

        if self._native:
            pool.terminate()
        else:
            pool.shutdown(wait=graceful)
        ray.shutdown()


def _pid_of(_item: object) -> int:
    """The pid of the process running this call."""
    import os

    return os.getpid()
