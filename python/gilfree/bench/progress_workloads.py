"""The progress row of issue 13: what ``progress=True`` costs a map of tiny tasks.

``progress_overhead``: ``list(executor.map(noop, range(PROGRESS_ITEMS)))`` with default
chunking, by gilfree's executor with ``progress=True`` (a tqdm bar, written to the measuring
interpreter's output file) and without; the target is at most 5% more time with the bar.
"""

from __future__ import annotations

import time

from gilfree.bench.contenders import Contender
from gilfree.bench.main_scripts import tasks
from gilfree.bench.workloads import Settings, Target, Workload, WrongResult

PROGRESS_ITEMS = 1_000_000


def measure_progress_map(contender: Contender, pool: object, settings: Settings) -> float:
    """Time the map of ``noop`` over ``PROGRESS_ITEMS`` integers (a tenth with ``--quick``)."""
    count = PROGRESS_ITEMS // 10 if settings.quick else PROGRESS_ITEMS
    noop = tasks().noop
    started = time.perf_counter()
    results = contender.map(pool, noop, range(count))
    elapsed = time.perf_counter() - started
    if len(results) != count:
        raise WrongResult(f"{len(results)} results for {count} items")
    return elapsed


def items_per_second(seconds: float, _reference: float | None, settings: Settings) -> str:
    """Format the map's throughput."""
    count = PROGRESS_ITEMS // 10 if settings.quick else PROGRESS_ITEMS
    return f"{count / seconds / 1e6:.2f} M items/s"


PROGRESS_WORKLOADS: tuple[Workload, ...] = (
    Workload(
        key="progress_overhead",
        title="map(noop, range(1_000_000)) with progress=True",
        measure=measure_progress_map,
        figure=items_per_second,
        targets=(Target("gilfree", 1 / 1.05, "≤1.05× time without progress", issue=13),),
        contenders=("gilfree", "gprogress"),
        references=("gilfree", "gilfree"),
        subject="gprogress",
    ),
)
