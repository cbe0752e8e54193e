"""The cluster rows of issue 14: gilfree's ``DaskExecutor`` against Dask's own
``Client.get_executor()``, each over a fresh ``LocalCluster(n_workers=2,
threads_per_worker=1)`` (``gilfree.bench.cluster_contenders``), with gilfree's local executor
beside them for scale:

* ``cluster_setup``: start the pool (for the Dask contenders: the cluster, its client and the
  executor), one call of ``noop``, shut it all down;
* ``cluster_round_trip``: ``CLUSTER_TRIPS`` sequential ``submit(noop, i).result()``, each call
  its own argument (Dask's own executor would otherwise run the first and merge the rest);
* ``cluster_map``: ``list(executor.map(noop, range(CLUSTER_MAP_ITEMS)))`` with the default
  chunking (Dask's own executor sends one task per item); the target: gilfree's at least 10×
  faster than Dask's own.
"""

from __future__ import annotations

import time

from gilfree.bench.contenders import Contender
from gilfree.bench.main_scripts import tasks
from gilfree.bench.workloads import Settings, Target, Workload, WrongResult

ISSUE = 14
CONTENDERS = ("gilfree", "dask_gilfree", "dask_native")
CLUSTER_TRIPS = 100
CLUSTER_MAP_ITEMS = 10_000


def measure_setup(contender: Contender, _pool: object, settings: Settings) -> float:
    """Time starting a pool, one call of ``noop`` and shutting it down."""
    started = time.perf_counter()
    pool = contender.create(settings.workers)
    try:
        contender.call(pool, tasks().noop, None)
    finally:
        contender.close(pool, graceful=True)
    return time.perf_counter() - started


def measure_round_trip(contender: Contender, pool: object, _settings: Settings) -> float:
    """Time ``CLUSTER_TRIPS`` sequential calls of ``noop``, each with an argument of its own
    (identical calls would be merged by Dask's own executor: one would run)."""
    noop = tasks().noop
    started = time.perf_counter()
    for index in range(CLUSTER_TRIPS):
        contender.call(pool, noop, index)
    return time.perf_counter() - started


def measure_map(contender: Contender, pool: object, _settings: Settings) -> float:
    """Time a default map of ``noop`` over ``CLUSTER_MAP_ITEMS`` integers."""
    started = time.perf_counter()
    results = contender.map(pool, tasks().noop, range(CLUSTER_MAP_ITEMS))
    elapsed = time.perf_counter() - started
    if len(results) != CLUSTER_MAP_ITEMS:
        raise WrongResult(f"{len(results)} results for {CLUSTER_MAP_ITEMS} items")
    return elapsed


def seconds(value: float, _reference: float | None, _settings: Settings) -> str:
    """Format a duration."""
    return f"{value * 1e3:.0f} ms" if value >= 0.01 else f"{value * 1e3:.2f} ms"


def per_trip(value: float, _reference: float | None, _settings: Settings) -> str:
    """Format a round trip."""
    return f"{value / CLUSTER_TRIPS * 1e3:.2f} ms/trip"


def per_second(value: float, _reference: float | None, _settings: Settings) -> str:
    """Format the map's throughput."""
    return f"{CLUSTER_MAP_ITEMS / value:,.0f} items/s"


CLUSTER_WORKLOADS: tuple[Workload, ...] = (
    Workload(
        key="cluster_setup",
        title="2-worker pool: start + 1 call + shutdown",
        measure=measure_setup,
        figure=seconds,
        targets=(),
        uses_pool=False,
        contenders=CONTENDERS,
        references=("gilfree", "dask_native"),
        subject="dask_gilfree",
    ),
    Workload(
        key="cluster_round_trip",
        title=f"{CLUSTER_TRIPS} sequential submit(noop, i).result()",
        measure=measure_round_trip,
        figure=per_trip,
        targets=(),
        contenders=CONTENDERS,
        references=("gilfree", "dask_native"),
        subject="dask_gilfree",
    ),
    Workload(
        key="cluster_map",
        title=f"list(map(noop, range({CLUSTER_MAP_ITEMS:_})))",
        measure=measure_map,
        figure=per_second,
        targets=(Target("dask_native", 10.0, "≥10× Dask get_executor()", issue=ISSUE),),
        contenders=CONTENDERS,
        references=("dask_native", "gilfree"),
        subject="dask_gilfree",
        peer_repetitions=1,
    ),
)
