"""The front end of the cluster executors (``gilfree.dask``, ``gilfree.ray``): the executor's
API over a cluster transport (``gilfree._transports.cluster``), and ``multiprocessing.Pool``'s
over that executor.

What differs from the local executor is what a cluster changes: ``map`` reads its input lazily
(at most 4 chunks per worker ahead of the reader, so generators, even endless ones, work) and
aims at ``CHUNK_SECONDS`` of work per chunk, enough to hide a cluster's per-task cost of a few
milliseconds; a per-task timeout or kill is offered only where the cluster can stop a running
task (``_can_kill``); ``initializer`` is not offered (a cluster prepares its workers its own
way); ``executor._processes`` is empty (the workers are the cluster's).
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from gilfree._engine import mapping as _mapping
from gilfree._engine.units import Limits
from gilfree._transports.cluster import ClusterTransport
from gilfree.executor import ProcessPoolExecutor, check_retries, check_timeout
from gilfree.pool import RUN
from gilfree.pool import Pool as _Pool

_T = TypeVar("_T")

#: Seconds of work a ``map`` aims to put in each task of a cluster.
CHUNK_SECONDS = 0.2
#: Items measured that let a map cut its tail into chunks of no less than a tenth of
#: ``CHUNK_SECONDS`` of work, however cheap they were: a task of a cluster costs milliseconds.
TRUST_ITEMS = 256


class ClusterExecutor(ProcessPoolExecutor):
    """A ``ProcessPoolExecutor`` whose workers are a cluster's (see the module docstring)."""

    _CHUNK_SECONDS = CHUNK_SECONDS
    _TRUST_ITEMS = TRUST_ITEMS
    #: The cluster, in words, for messages: "Dask", "Ray".
    _cluster_name = "the cluster"
    #: The cluster can stop a running task: per-task timeouts and ``kill_on_cancel`` work.
    _can_kill = False

    def _cluster_limits(
        self, max_workers: int | None, task_timeout: float | None, retries: int
    ) -> Limits:
        """The constructor's arguments checked, before anything is started or connected (the
        subclass checks that a ``task_timeout`` can be kept: ``_check_can_kill``)."""
        if max_workers is not None and (
            isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers <= 0
        ):
            raise ValueError(f"max_workers must be a positive int or None, got {max_workers!r}")
        return Limits(
            check_timeout("task_timeout", task_timeout), check_retries("retries", retries)
        )

    def _check_can_kill(self, option: str) -> None:
        """Refuses ``option`` (``"timeout"``, ``"task_timeout"``, ``"kill_on_cancel"``) unless
        the cluster can stop a running task: always (``_can_kill``), or past a timeout only
        (``_stops_on_timeout``)."""
        if self._can_kill or (option != "kill_on_cancel" and self._stops_on_timeout()):
            return
        raise ValueError(
            f"{option}: {self._cluster_name} cannot stop a task that is running (cancelling it"
            f" forgets it and lets it run), so {type(self).__module__}.{type(self).__qualname__}"
            f" {self._cannot_stop_advice(option)}"
        )

    def _stops_on_timeout(self) -> bool:
        """Whether the cluster's workers stop a task past its timeout themselves."""
        return False

    def _cannot_stop_advice(self, option: str) -> str:
        """What to do when ``option`` is refused (the end of the message)."""
        return f"offers no per-task timeout or kill. Leave {option} out, or bound the task's work."

    def _run_on_cluster(
        self, transport: ClusterTransport, max_workers: int, limits: Limits
    ) -> None:
        """Builds the front end over ``transport``, and has it shut down at exit before the
        cluster's engine closes (see ``_shut_at_exit``)."""
        self._run_on(transport, max_workers, transport.name, limits)
        with contextlib.suppress(RuntimeError):  # the interpreter is exiting already
            threading._register_atexit(_shut_at_exit(weakref.ref(self)))  # type: ignore[attr-defined]  # noqa: SLF001

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        progress: Any = False,
        total: int | None = None,
    ) -> Iterator[_T]:
        """Like the builtin ``map``, run on the cluster; results come back in order. The input
        is read lazily, at most 4 chunks per worker ahead of the reader. ``timeout`` counts
        from this call; ``progress`` and ``total`` as in ``ProcessPoolExecutor.map``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self._lazy_job(fn, iterables, chunksize, progress, total, None)
        self._submit_job(job)
        return _mapping.results(self._engine.pump_role, job, deadline, self._engine.resume)


def _shut_at_exit(executor: weakref.ref[ClusterExecutor]) -> Callable[[], None]:
    """What interpreter exit calls to shut ``executor`` down, waiting for its calls, while the
    cluster's client still works: among ``threading``'s exit calls (as ``concurrent.futures``
    registers its own), registered after the thread pools' own, so before them, and before
    every ``atexit`` handler (Dask's and Ray's close a local cluster, end the Ray session).
    gilfree's own handler ran too late: the clients' callback threads refused work by then,
    and calls still out never ended (it waited for ever)."""

    def shut() -> None:
        alive = executor()
        if alive is not None:
            alive.shutdown(wait=True)

    return shut


class ClusterPool(_Pool):
    """``multiprocessing.Pool``'s API over a cluster executor: ``gilfree.Pool``'s methods and
    result objects (``map``, ``imap``, ``apply_async``, ``run``, ``amap``, ``terminate``...)."""

    def _run_on_executor(self, make: Callable[[], ClusterExecutor]) -> None:
        """Runs this pool on the executor ``make`` returns."""
        self._state = RUN  # first: __del__ reads it even if the executor cannot start
        self._ctx = None
        executor = make()
        self._adopt(executor, executor._max_workers)  # noqa: SLF001 - its own executor
