"""The cluster rows of issue 14, for each engine: gilfree's executor on it against the
engine's own (``gilfree.bench.cluster_contenders``), with gilfree's local executor beside them
for scale.

Dask (``dask_*`` rows): gilfree's ``DaskExecutor`` against ``Client.get_executor()``, each over
a fresh ``LocalCluster(n_workers=2, threads_per_worker=1)``. Ray (``ray_*`` rows): gilfree's
``RayExecutor`` against ``ray.util.multiprocessing.Pool``, each over a fresh
``ray.init(num_cpus=2)``.

* ``*_setup``: start the pool (the cluster or the Ray session with it), one call of ``noop``,
  shut it all down;
* ``*_round_trip``: ``CLUSTER_TRIPS`` sequential calls of ``noop``, each with its own argument
  (Dask's own executor would otherwise run the first and merge the rest);
* ``*_map``: ``list(map(noop, range(CLUSTER_MAP_ITEMS)))`` with the default chunking. Targets:
  gilfree's at least 10× faster than Dask's own executor (which sends one task per item), and
  at least as fast as Ray's pool (which cuts the input into 4 chunks per actor).
"""

from __future__ import annotations

import time

from gilfree.bench.contenders import Contender
from gilfree.bench.main_scripts import tasks
from gilfree.bench.workloads import Settings, Target, Workload, WrongResult

ISSUE = 14
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


def _rows(engine: str, native: str, target: Target) -> tuple[Workload, ...]:
    """The three rows of one engine: ``{engine}_gilfree`` against ``native``."""
    subject = f"{engine}_gilfree"
    contenders = ("gilfree", subject, native)
    return (
        Workload(
            key=f"{engine}_setup",
            title="2-worker pool: start + 1 call + shutdown",
            measure=measure_setup,
            figure=seconds,
            targets=(),
            uses_pool=False,
            contenders=contenders,
            references=("gilfree", native),
            subject=subject,
        ),
        Workload(
            key=f"{engine}_round_trip",
            title=f"{CLUSTER_TRIPS} sequential submit(noop, i).result()",
            measure=measure_round_trip,
            figure=per_trip,
            targets=(),
            contenders=contenders,
            references=("gilfree", native),
            subject=subject,
        ),
        Workload(
            key=f"{engine}_map",
            title=f"list(map(noop, range({CLUSTER_MAP_ITEMS:_})))",
            measure=measure_map,
            figure=per_second,
            targets=(target,),
            contenders=contenders,
            references=(native, "gilfree"),
            subject=subject,
            peer_repetitions=1,
        ),
    )


CLUSTER_WORKLOADS: tuple[Workload, ...] = (
    *_rows("dask", "dask_native", Target("dask_native", 10.0, "≥10× Dask get_executor()", ISSUE)),
    *_rows("ray", "ray_pool", Target("ray_pool", 1.0, "≥ Ray's multiprocessing.Pool", ISSUE)),
)
