"""How many threads the native thread pools of a joblib worker may start.

N workers each running BLAS or OpenMP with one thread per core would start N × cores threads and
slow each other down. As loky does, each worker gets ``inner_max_num_threads`` threads per pool
if the user gave it, else what the environment variable says if the user set it, else
``cpu_count() // n_jobs`` (joblib's ``_prepare_worker_env`` decides, per variable). The worker
sets those variables, for libraries it loads later, and applies them with ``threadpoolctl`` to
the libraries already loaded: a zygote worker inherits numpy's BLAS, loaded by the main script
with one thread (see ``gilfree._workers.zygote``).
"""

from __future__ import annotations

import os

#: The variables that give each threadpoolctl API's limit (the first one set wins).
_VARIABLES_OF_API = {
    "openmp": ("OMP_NUM_THREADS",),
    "blas": ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"),
}


def limit_threads(environment: dict[str, str]) -> None:
    """A worker's initializer: applies ``environment`` (joblib's thread-limit variables) to this
    process, and to the thread pools already loaded when threadpoolctl is installed."""
    os.environ.update(environment)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return
    limits = {}
    for api, variables in _VARIABLES_OF_API.items():
        values = [environment.get(variable, "") for variable in variables]
        limit = next((int(value) for value in values if value.isdigit()), None)
        if limit is not None:
            limits[api] = limit
    # Kept for the worker's whole life: the limits hold until restored, which never happens.
    threadpool_limits(limits=limits)
