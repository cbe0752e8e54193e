"""``gilfree.dask.DaskExecutor``: the executor's API and semantics on a Dask cluster.

The same front end as ``gilfree.ProcessPoolExecutor`` (futures, ``map`` cut into chunks sized
from measured durations, retries, ``shutdown(cancel_futures=True)``, ``run``/``amap``,
progress), over a transport that runs each unit as a Dask task (``gilfree._transports.dask``).
Where ``Client.get_executor()`` differs from concurrent.futures, this executor does not:

* every call runs (tasks are submitted with ``pure=False``: identical calls are not merged);
* ``map`` cuts its input into chunks (aiming at 0.2 s of work each, so Dask's
  per-task cost of a few milliseconds is hidden), reads it lazily with at most 4 chunks per
  worker ahead of the reader (generators, even endless ones, work), and keeps the order;
* ``shutdown(cancel_futures=True)`` cancels what has not started; ``cancel()`` of a running
  call returns False; ``running()`` is true while it runs;
* an exception arrives with its own type and the remote traceback as ``__cause__``; a call
  whose Dask worker was lost fails with ``WorkerCrashedError``, and ``retries=`` runs it again.

What a cluster cannot do: Dask cannot stop a task that is running, so ``run_with(
kill_on_cancel=True)`` is refused, and so are per-task timeouts (``task_timeout=``,
``submit_with(timeout=)``) unless the cluster runs gilfree's ``WorkerPlugin``: then a call with a
timeout runs in the gilfree pool of its Dask worker, which kills the process running it past its
timeout (``TaskTimeoutError``). ``executor._processes`` is empty (the workers are the
cluster's). ``initializer`` is not
offered: a Dask worker plugin is the cluster's way to prepare its workers.

The executor closes only what it started: given nothing, it starts a ``LocalCluster`` and
closes it at shutdown; given an address, it closes the client it opened; given a
``distributed.Client``, it closes nothing. ``pip install gilfree[dask]`` installs Dask;
``import gilfree`` never imports it.

``WorkerPlugin`` goes the other way: it makes gilfree the process pool inside each Dask worker,
for the tasks annotated ``dask.annotate(executor="gilfree")`` (or all of them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import distributed
except ImportError as missing:  # pragma: no cover - the extra is what brings it
    raise ImportError("gilfree.dask needs Dask: pip install gilfree[dask]") from missing

from gilfree._cluster import ClusterExecutor, ClusterPool
from gilfree._transports.dask import BrokenDaskExecutor, DaskTransport
from gilfree.executor import ProcessPoolExecutor

__all__ = ["BrokenDaskExecutor", "DaskExecutor", "Pool", "WorkerPlugin"]


class DaskExecutor(ClusterExecutor):
    """Runs calls on a Dask cluster with ``concurrent.futures``' semantics (see the module
    docstring).

    Args:
        client: a ``distributed.Client``, a scheduler address (``"tcp://host:8786"``), or
            None to start a ``LocalCluster`` of one single-threaded worker process per core.
        max_workers: how many units run at once; default: the cluster's threads, counted now.
        task_timeout: seconds a call may run before the process running it is killed and the
            call fails with ``TaskTimeoutError`` (default None: no limit). Needs gilfree's
            ``WorkerPlugin`` on the cluster, whose pools run such calls and kill them.
        retries: times a call whose Dask worker was lost is run again before it fails with
            ``WorkerCrashedError`` (default 0).
    """

    _cluster_name = "Dask"

    def __init__(
        self,
        client: Any = None,
        *,
        max_workers: int | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
    ) -> None:
        limits = self._cluster_limits(max_workers, task_timeout, retries)
        self._pools_seen = False
        owned: list[Callable[[], object]] = []
        if client is None:
            import dask

            # A task whose worker dies is not handed to another worker by the scheduler:
            # retries= decides whether it runs again (Dask's default gives it 3 more workers
            # to kill).
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                cluster = distributed.LocalCluster(
                    threads_per_worker=1, processes=True, dashboard_address=":0"
                )
            client = distributed.Client(cluster)
            owned = [client.close, cluster.close]
        elif isinstance(client, str):
            client = distributed.Client(client)
            owned = [client.close]
        elif not isinstance(client, distributed.Client):
            raise TypeError(
                "client must be a distributed.Client, a scheduler address, or None (a"
                f" LocalCluster is started), got {client!r}"
            )
        self.client: distributed.Client = client
        try:
            if limits.timeout is not None:
                self._check_can_kill("task_timeout")
            if max_workers is None:
                max_workers = max(1, sum(client.nthreads().values()))
        except BaseException:
            for close in owned:
                close()
            raise
        self._run_on_cluster(DaskTransport(client, owned), max_workers, limits)

    def _stops_on_timeout(self) -> bool:
        """Whether every worker of the cluster has a gilfree pool (``WorkerPlugin``), asked
        until it is seen once."""
        if not self._pools_seen:
            pools = self.client.run(_has_gilfree_pool)
            self._pools_seen = bool(pools) and all(pools.values())
        return self._pools_seen

    def _cannot_stop_advice(self, option: str) -> str:
        if option == "kill_on_cancel":
            return "offers no kill on cancel. Leave kill_on_cancel out."
        return (
            f"keeps {option} only where the cluster runs gilfree's pools: register"
            " gilfree.dask.WorkerPlugin() on it (client.register_plugin(WorkerPlugin())),"
            f" or leave {option} out."
        )

    def __repr__(self) -> str:
        return f"<gilfree.dask.DaskExecutor client={self.client!r} max_workers={self._max_workers}>"


class Pool(ClusterPool):
    """``multiprocessing.Pool``'s API on a Dask cluster: ``gilfree.Pool``'s methods and result
    objects (``map``, ``imap``, ``apply_async``, ``run``, ``amap``, ``terminate``...) over a
    ``DaskExecutor`` (see the module docstring for what a cluster does and refuses).

    Args:
        client: as for ``DaskExecutor``: a ``distributed.Client``, an address, or None.
        processes: how many units run at once; default: the cluster's threads.
        retries: times a call whose Dask worker was lost is run again (default 0).
    """

    def __init__(
        self, client: Any = None, processes: int | None = None, *, retries: int = 0
    ) -> None:
        self._run_on_executor(lambda: DaskExecutor(client, max_workers=processes, retries=retries))


def _has_gilfree_pool(dask_worker: distributed.Worker) -> bool:
    """Whether this Dask worker has the pool of a ``WorkerPlugin`` (run by ``client.run``)."""
    return "gilfree" in dask_worker.executors


class WorkerPlugin(distributed.WorkerPlugin):
    """Makes gilfree the process pool inside each Dask worker.

    ``client.register_plugin(WorkerPlugin(max_workers=2))`` gives every worker (those that join
    later too) a ``gilfree.ProcessPoolExecutor`` registered as the worker's executor
    ``"gilfree"``: tasks submitted under ``dask.annotate(executor="gilfree")`` run in its
    worker processes, and with ``default=True`` every task does. They get gilfree's crash
    isolation (a task that kills its process fails with ``WorkerCrashedError``; the Dask
    worker, and the data it holds, stay), lambdas and ``__main__`` functions, and per-task
    timeouts (``task_timeout=``, given to the executor with any of its other options; a
    ``DaskExecutor``'s calls with a timeout run in these pools too). It works
    with Dask's default daemon workers: gilfree's workers are not multiprocessing children. The
    pool is shut down when the worker closes, so no gilfree process outlives the cluster.
    """

    name = "gilfree"

    def __init__(
        self, max_workers: int | None = None, *, default: bool = False, **options: Any
    ) -> None:
        self._max_workers = max_workers
        self._default = default
        self._options = options
        self._executor: ProcessPoolExecutor | None = None

    def setup(self, worker: distributed.Worker) -> None:
        """Starts the pool and registers it with ``worker``."""
        from gilfree._workers.cluster import DISPATCH_EXECUTOR

        executor = ProcessPoolExecutor(self._max_workers, **self._options)
        self._executor = executor
        # A DaskExecutor's units with a timeout are handed to the pool from a thread of the
        # worker (its own default executor, kept under this name when the pool replaces it).
        worker.executors.setdefault(DISPATCH_EXECUTOR, worker.executors["default"])
        worker.executors["gilfree"] = executor
        if self._default:
            worker.executors["default"] = executor

    def teardown(self, worker: distributed.Worker) -> None:
        """Gives the worker its own executors back (unregistering the plugin left a pool shut
        down as its ``"gilfree"``, and with ``default=True`` as its default: every later task
        failed), then shuts the pool down: what it has not started is cancelled, its workers
        exit."""
        from gilfree._workers.cluster import DISPATCH_EXECUTOR

        executor, self._executor = self._executor, None
        own = worker.executors.pop(DISPATCH_EXECUTOR, None)
        if executor is not None and worker.executors.get("gilfree") is executor:
            del worker.executors["gilfree"]
        if executor is not None and worker.executors.get("default") is executor and own:
            worker.executors["default"] = own
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
