"""The whole suite, in table order: the pool workloads, the data workloads, the numpy and pandas
rows, the joblib rows, the asyncio and progress rows, the cluster rows, the start-up rows."""

from __future__ import annotations

from gilfree.bench.asyncio_workloads import ASYNCIO_WORKLOADS
from gilfree.bench.cluster_workloads import CLUSTER_WORKLOADS
from gilfree.bench.data_workloads import DATA_WORKLOADS
from gilfree.bench.joblib_workloads import JOBLIB_WORKLOADS
from gilfree.bench.numeric_workloads import NUMERIC_WORKLOADS
from gilfree.bench.progress_workloads import PROGRESS_WORKLOADS
from gilfree.bench.start_workloads import START_WORKLOADS
from gilfree.bench.workloads import WORKLOADS, Workload

SUITE: tuple[Workload, ...] = (
    *WORKLOADS,
    *DATA_WORKLOADS,
    *NUMERIC_WORKLOADS,
    *JOBLIB_WORKLOADS,
    *ASYNCIO_WORKLOADS,
    *PROGRESS_WORKLOADS,
    *CLUSTER_WORKLOADS,
    *START_WORKLOADS,
)


def find_workload(key: str) -> Workload:
    """The workload with this key; raises KeyError."""
    for workload in SUITE:
        if workload.key == key:
            return workload
    raise KeyError(key)
