"""joblib on gilfree: ``with joblib.parallel_config(backend="gilfree"):``.

Importing this module registers the backend (``register()`` does it again, harmlessly). Inside
that block, ``joblib.Parallel`` and scikit-learn's ``n_jobs`` run their batches on a
``gilfree.ProcessPoolExecutor``: workers forked from the zygote (so they start in milliseconds,
with your main script already loaded), lambdas and ``__main__`` functions sent by value, numpy
arrays and pandas frames in gilfree's codec instead of pickle.

The backend follows joblib's contract (checked against joblib 1.5 and 1.6):

* ``Parallel`` calls ``submit(func, callback)`` once per batch; joblib sizes the batches itself
  (``AutoBatchingMixin``), and gilfree does not cut them again. The callback runs in the thread
  that collects results, on success and on failure, and may submit the next batch from there.
* ``supports_retrieve_callback``: ``return_as="generator"``, ``"generator_unordered"`` and
  ``timeout`` work.
* ``abort_everything`` (a task raised) cancels the batches not started and kills the workers
  running the others; the backend stays usable for the next ``Parallel`` call of the same
  ``with`` block, as scikit-learn's searches need.
* ``n_jobs=1`` falls back to joblib's sequential backend; ``n_jobs=-1`` is every CPU.
* One executor serves every ``Parallel`` call made with the same backend instance (one
  ``parallel_config`` block), and grows when a call asks for more workers; it shuts down when
  the instance is collected, or at exit.

Not yet: sharing arrays of ``max_nbytes`` or more once per call (they travel with each batch,
through gilfree's shared buffers), and limiting the workers' BLAS threads.
"""

from __future__ import annotations

import os
from typing import Any

try:
    import joblib
    from joblib._parallel_backends import (
        AutoBatchingMixin,
        FallbackToBackend,
        ParallelBackendBase,
        SequentialBackend,
    )
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "gilfree.joblib needs joblib: pip install joblib (or gilfree[joblib])"
    ) from error

from gilfree.executor import ProcessPoolExecutor

__all__ = ["BACKEND_NAME", "GilfreeBackend", "register"]

#: The name to give ``joblib.parallel_config(backend=...)``.
BACKEND_NAME = "gilfree"


class GilfreeBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's ``ParallelBackendBase`` on a gilfree executor (see the module docstring)."""

    supports_retrieve_callback = True
    supports_timeout = True
    uses_threads = False
    supports_sharedmem = False

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads, **kwargs
        )
        self._executor: ProcessPoolExecutor | None = None
        self._workers = 0

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """How many workers ``n_jobs`` means: -1 every CPU, -2 all but one, and so on."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max((os.cpu_count() or 1) + 1 + n_jobs, 1)
        return int(n_jobs)

    def configure(
        self,
        n_jobs: int | None = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **backend_kwargs: Any,
    ) -> int:
        """Readies an executor of ``n_jobs`` workers for one ``Parallel`` call; returns the
        number of workers. One worker means joblib's sequential backend."""
        workers = self.effective_n_jobs(n_jobs)
        if workers == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        if self._executor is None or self._workers < workers:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._executor = ProcessPoolExecutor(workers)
            self._workers = workers
        return workers

    def submit(self, func: Any, callback: Any = None) -> Any:
        """Runs one joblib batch; ``callback`` (joblib's) gets the future once it is done."""
        assert self._executor is not None, "submit before configure"
        # The batch travels as an argument, not as the function: its arrays then go out of band
        # through shared buffers, and the worker does not cache a one-off function.
        future = self._executor.submit(_run_batch, func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def apply_async(self, func: Any, callback: Any = None) -> Any:
        """joblib before 1.5 calls this instead of ``submit``."""
        return self.submit(func, callback)

    def retrieve_result_callback(self, out: Any) -> Any:
        """The batch's results (or its exception, raised), from the future ``submit`` gave."""
        return out.result()

    def retrieve_result(self, out: Any, timeout: float | None = None) -> Any:
        """The batch's results, waiting at most ``timeout`` seconds (joblib before 1.5)."""
        return out.result(timeout)

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancels the batches not started and kills the workers running the others (their
        futures fail with ``CancelledError``); the executor stays usable."""
        if self._executor is not None:
            self._executor._abort()  # noqa: SLF001 - gilfree's own executor

    def terminate(self) -> None:
        """End of a ``Parallel`` call: the executor is kept for the next one."""
        self.reset_batch_stats()


def _run_batch(batch: Any) -> Any:
    """Runs one joblib batch (a ``BatchedCalls``) in a worker."""
    return batch()


def register() -> None:
    """Registers the backend as ``"gilfree"`` with joblib (again, if already done)."""
    joblib.register_parallel_backend(BACKEND_NAME, GilfreeBackend)


register()
