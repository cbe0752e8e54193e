"""The start-up and memory rows of issue 9: what a user's script pays to start workers.

Each row is measured in a fresh interpreter per contender, started on one of the bench's main
scripts (see `gilfree.bench.main_scripts`), so a worker that does not inherit its parent's memory
(gilfree's template process, spawn, forkserver, loky) loads what the user's main script loads:

* ``cold_start_first`` / ``cold_start_second``: the numpy+pandas main script runs
  ``with Executor(8) as ex: list(ex.map(numpy_pandas, range(32), chunksize=1))``, where each
  task uses numpy and pandas; the first row times the process's first executor (from its
  creation to the end of its shutdown: for gilfree it includes starting the template process,
  for forkserver the fork server), the second a second one in the same interpreter. Both come
  from one interpreter per contender; with more repetitions, the best of as many interpreters.
* ``worker_memory``: same script, 8 workers; once every worker has run a task that used numpy and
  pandas (a barrier: tasks that wait until all 8 pids have checked in, repeated until each of the
  executor's workers answered), the mean PSS of a worker (``Pss`` of /proc/PID/smaps_rollup:
  its private pages plus its share of the pages it shares).
* ``startup_stdlib_main``: the main script imports only ``ProcessPoolExecutor`` (no numpy); the
  median time of create 2 workers + one task + shutdown, after one warm-up cycle (so gilfree's
  template process is running, as for every executor after a process's first).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

from gilfree.bench.contenders import Contender
from gilfree.bench.main_scripts import tasks
from gilfree.bench.workloads import (
    Settings,
    Target,
    Workload,
    WrongResult,
    at_most,
    measure_startup,
    milliseconds_per_start,
)

COLD_START_WORKERS = 8
COLD_START_TASKS = 32
MEMORY_WORKERS = 8
#: How long a barrier task waits for the others, and how many rounds of them may be needed.
CHECK_IN_SECONDS = 2.0
CHECK_IN_ROUNDS = 30
#: Contenders of the start-up rows (loky when installed).
START_CONTENDERS = ("gilfree", "ppe_fork", "ppe_forkserver", "ppe_spawn", "loky")

# Whether this interpreter has created an executor for a cold-start row yet.
_executors_created = 0


def time_executor(contender: Contender) -> float:
    """Time ``with Executor(8) as ex: list(ex.map(numpy_pandas, range(32), chunksize=1))``."""
    global _executors_created
    task = tasks().numpy_pandas
    _executors_created += 1
    started = time.perf_counter()
    pool = contender.create(COLD_START_WORKERS)
    try:
        results = contender.map(pool, task, range(COLD_START_TASKS), chunksize=1)
    except BaseException:
        contender.close(pool, graceful=False)
        raise
    contender.close(pool, graceful=True)
    elapsed = time.perf_counter() - started
    if results != [4950.0 * number for number in range(COLD_START_TASKS)]:
        raise WrongResult("numpy_pandas results differ from the expected ones")
    return elapsed


def measure_cold_start_first(contender: Contender, _pool: object, _settings: Settings) -> float:
    """Time the interpreter's first executor: 8 workers, 32 numpy+pandas tasks, shutdown."""
    if _executors_created:
        raise RuntimeError("not the first executor of this interpreter")
    return time_executor(contender)


def measure_cold_start_second(contender: Contender, _pool: object, _settings: Settings) -> float:
    """Time a second executor of the interpreter (after an untimed first if none ran yet)."""
    if not _executors_created:
        time_executor(contender)
    return time_executor(contender)


def proportional_set_size(pid: int) -> int:
    """The PSS of process ``pid`` in bytes: the ``Pss:`` line of /proc/PID/smaps_rollup."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Pss line in /proc/{pid}/smaps_rollup")


def run_on_every_worker(contender: Contender, pool: Any, workers: int) -> list[int]:
    """Make every worker of ``pool`` run `check_in` (which uses numpy and pandas); their pids.

    Each round maps ``workers`` barrier tasks, one per item: each waits until ``workers``
    distinct pids have checked in (or ``CHECK_IN_SECONDS``), so no worker can take them all.
    Rounds repeat until the pids that answered are exactly the pool's ``workers`` workers.
    """
    check_in = tasks().check_in
    answered: set[int] = set()
    for _ in range(CHECK_IN_ROUNDS):
        with tempfile.TemporaryDirectory(prefix="gilfree-bench-") as folder:
            request = (folder, workers, CHECK_IN_SECONDS)
            answered.update(contender.map(pool, check_in, [request] * workers, chunksize=1))
        pids = set(contender.worker_pids(pool))
        if len(pids) == workers and pids <= answered:
            return sorted(pids)
    raise RuntimeError(
        f"after {CHECK_IN_ROUNDS} rounds, workers {sorted(pids)} but answers from "
        f"{sorted(answered)}"
    )


def measure_worker_memory(contender: Contender, _pool: object, _settings: Settings) -> float:
    """Return the mean PSS of 8 workers, in bytes, once each has run a numpy+pandas task."""
    pool = contender.create(MEMORY_WORKERS)
    try:
        pids = run_on_every_worker(contender, pool, MEMORY_WORKERS)
        sizes = [proportional_set_size(pid) for pid in pids]
    except BaseException:
        contender.close(pool, graceful=False)
        raise
    contender.close(pool, graceful=True)
    return statistics.mean(sizes)


def milliseconds_per_task(seconds: float, _baseline: float | None, _settings: Settings) -> str:
    """Format a cold start's figure: the executor's time per task."""
    return f"{seconds / COLD_START_TASKS * 1e3:.1f} ms/task"


def mebibytes_in_all(size: float, _baseline: float | None, _settings: Settings) -> str:
    """Format the memory figure: the 8 workers' PSS together."""
    return f"{size * MEMORY_WORKERS / 2**20:.0f} MiB for {MEMORY_WORKERS} workers"


COLD_REFERENCES = ("ppe_fork", "ppe_forkserver")


def cold_start_workload(key: str, title: str, measure: Any, target: Any) -> Workload:
    """A cold-start row: both are timed in one fresh interpreter per contender."""
    return Workload(
        key=key,
        title=title,
        measure=measure,
        figure=milliseconds_per_task,
        targets=(target,),
        uses_pool=False,
        contenders=START_CONTENDERS,
        session="cold_start",
        fresh=True,
        references=COLD_REFERENCES,
        shareable=False,
    )


START_WORKLOADS: tuple[Workload, ...] = (
    cold_start_workload(
        "cold_start_first",
        "cold start: 1st executor, 8 workers, 32 numpy+pandas tasks",
        measure_cold_start_first,
        at_most("ppe_forkserver", 0.4, "≤0.4× PPE(forkserver) time", issue=9),
    ),
    cold_start_workload(
        "cold_start_second",
        "cold start: 2nd executor, same interpreter",
        measure_cold_start_second,
        at_most("ppe_fork", 1.5, "≤1.5× PPE(fork) time", issue=9),
    ),
    Workload(
        key="worker_memory",
        title="memory per worker (PSS), 8 workers, numpy+pandas main",
        measure=measure_worker_memory,
        figure=mebibytes_in_all,
        targets=(at_most("ppe_fork", 1.5, "≤1.5× PPE(fork) memory", issue=9),),
        uses_pool=False,
        contenders=START_CONTENDERS,
        unit="B",
        repetitions=1,
        references=COLD_REFERENCES,
        shareable=False,
    ),
    Workload(
        key="startup_stdlib_main",
        title="startup (create+1 task+shutdown), main imports only the stdlib executor",
        measure=measure_startup,
        figure=milliseconds_per_start,
        targets=(Target("pool", 1.0, "≤ Pool(fork) time", issue=9),),
        uses_pool=False,
        contenders=("gilfree", "pool", "ppe_fork"),
        script="stdlib",
        references=("ppe_fork", "pool"),
        shareable=False,
    ),
)
