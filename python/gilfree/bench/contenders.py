"""The pools the benchmark compares, behind one small interface.

Each contender knows how to create a pool of N workers, make one submit→result call, run a map
with the pool's default arguments (or a given chunksize), list its workers' pids, and close the
pool. The registry at the bottom names each contender's module, which the parent only looks for
(``find_spec``) and the measuring interpreter imports, so one that is missing (gilfree while it
is being built, loky, mpire) only disables its own contender.

A "best chunksize" contender (``ppe_best``, ``loky_best``) is the same executor with a
``chunksize_sweep``: the workloads that honour it (the numpy rows of issue 10) time its map at
each chunksize of the sweep and keep the best, noting which one won.

A joblib contender (``jl_gilfree``, ``jl_loky``, ``jl_threads``, ``jl_seq``; ``--contenders jl``
picks them all) is no pool: it is a joblib backend, which the joblib rows of issue 12
(`gilfree.bench.joblib_workloads`) set with ``joblib.parallel_config`` around the call they time.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import importlib
import importlib.util
import multiprocessing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Function = Callable[..., Any]
#: The chunksizes a "best chunksize" contender's maps are timed at.
CHUNKSIZE_SWEEP = (1, 16, 64, 256)


class Contender:
    """A pool implementation under test; subclasses fill in the four operations.

    ``chunksize_sweep``: the chunksizes a workload that sweeps them times this contender's map
    at, keeping the best (empty: the pool's default chunksize only).
    """

    chunksize_sweep: tuple[int, ...] = ()

    def __init__(self, key: str, name: str) -> None:
        self.key = key
        self.name = name

    def create(self, workers: int) -> Any:
        """Create and return a pool of ``workers`` processes."""
        raise NotImplementedError

    def call(self, pool: Any, function: Function, argument: object) -> Any:
        """Submit one call and wait for its result."""
        raise NotImplementedError

    def map(
        self,
        pool: Any,
        function: Function,
        arguments: Iterable[object],
        chunksize: int | None = None,
    ) -> list[Any]:
        """Map ``function`` over ``arguments`` in order, with ``chunksize`` if given, else with
        the pool's default."""
        raise NotImplementedError

    def worker_pids(self, pool: Any) -> list[int]:
        """The pids of the pool's live workers."""
        raise NotImplementedError

    def close(self, pool: Any, *, graceful: bool) -> None:
        """Shut the pool down: wait for its workers if ``graceful``, else stop it at once."""
        raise NotImplementedError


class ExecutorContender(Contender):
    """A `concurrent.futures.Executor` class, created as ``executor_class(max_workers=N)``."""

    def __init__(self, key: str, name: str, executor_class: Callable[..., Any]) -> None:
        super().__init__(key, name)
        self.executor_class = executor_class

    def create(self, workers: int) -> Any:
        """Create the executor."""
        return self.executor_class(max_workers=workers)

    def call(self, pool: Any, function: Function, argument: object) -> Any:
        """``submit(...).result()``."""
        return pool.submit(function, argument).result()

    def map(
        self,
        pool: Any,
        function: Function,
        arguments: Iterable[object],
        chunksize: int | None = None,
    ) -> list[Any]:
        """``list(executor.map(function, arguments[, chunksize=chunksize]))``."""
        if chunksize is None:
            return list(pool.map(function, arguments))
        return list(pool.map(function, arguments, chunksize=chunksize))

    def worker_pids(self, pool: Any) -> list[int]:
        """The keys of the executor's ``_processes`` (``{pid: process}``; gilfree has it too)."""
        return list(pool._processes or {})  # noqa: SLF001 - the pids are not public elsewhere

    def close(self, pool: Any, *, graceful: bool) -> None:
        """``shutdown``, cancelling pending futures unless ``graceful``."""
        if graceful:
            pool.shutdown(wait=True)
        else:
            pool.shutdown(wait=False, cancel_futures=True)


class MultiprocessingPoolContender(Contender):
    """`multiprocessing.Pool` with the fork start method, or another class with its API."""

    def __init__(self, key: str, name: str, pool_class: Callable[[int], Any] | None = None) -> None:
        super().__init__(key, name)
        self._pool_class = pool_class

    def create(self, workers: int) -> Any:
        """``get_context("fork").Pool(workers)``, or ``pool_class(workers)``."""
        if self._pool_class is not None:
            return self._pool_class(workers)
        return multiprocessing.get_context("fork").Pool(workers)

    def call(self, pool: Any, function: Function, argument: object) -> Any:
        """``apply_async(...).get()``."""
        return pool.apply_async(function, (argument,)).get()

    def map(
        self,
        pool: Any,
        function: Function,
        arguments: Iterable[object],
        chunksize: int | None = None,
    ) -> list[Any]:
        """``pool.map(function, arguments[, chunksize])``."""
        return list(pool.map(function, arguments, chunksize))

    def worker_pids(self, pool: Any) -> list[int]:
        """The pids of ``pool._pool``, the stdlib pool's list of worker processes."""
        return [process.pid for process in pool._pool]  # noqa: SLF001 - not public elsewhere

    def close(self, pool: Any, *, graceful: bool) -> None:
        """``close()`` then ``join()``, or ``terminate()`` unless ``graceful``."""
        if graceful:
            pool.close()
            pool.join()
        else:
            pool.terminate()


class InheritedItemsContender(Contender):
    """Not a pool but a trick users reach for to send nothing: fork after the data exists.
    Each map keeps its items in a global, then forks the stdlib's ``multiprocessing.Pool``
    (inside the timed region: its workers must be forked once the items exist), which maps
    item numbers into that global, one chunk per worker. The items are never sent; the
    workers are forked for each map, the results come back pickled, and the workers have
    exited when the map returns."""

    def create(self, workers: int) -> Any:
        """Nothing to start yet: the pool is the number of workers each map forks."""
        return workers

    def call(self, pool: Any, function: Function, argument: object) -> Any:
        """A map of the one argument (a process forked for it)."""
        return self.map(pool, function, [argument])[0]

    def map(
        self,
        pool: Any,
        function: Function,
        arguments: Iterable[object],
        chunksize: int | None = None,
    ) -> list[Any]:
        """Forks ``pool`` workers that run ``function`` over their share of ``arguments`` in
        place: ``chunksize`` items at a time, else one chunk each."""
        global _inherited  # read by the forked workers: what the trick shares
        items = list(arguments)
        chunksize = chunksize or max(1, -(-len(items) // pool))
        _inherited = (function, items)
        try:
            forked = multiprocessing.get_context("fork").Pool(pool)
            try:
                results = forked.map(_run_inherited, range(len(items)), chunksize)
            except BaseException:
                forked.terminate()
                forked.join()
                raise
            forked.close()
            forked.join()
        finally:
            _inherited = None
        return results

    def worker_pids(self, pool: Any) -> list[int]:
        """None: the workers live for one map."""
        return []

    def close(self, pool: Any, *, graceful: bool) -> None:
        """Nothing left running."""


#: ``(function, items)`` of the map `InheritedItemsContender` is running, for its workers.
_inherited: tuple[Function, list[Any]] | None = None


def _run_inherited(index: int) -> Any:
    """In a worker of `InheritedItemsContender`: the map's function on item ``index``."""
    assert _inherited is not None, "not forked from a map of InheritedItemsContender"
    function, items = _inherited
    return function(items[index])


class MpireContender(Contender):
    """`mpire.WorkerPool`, kept alive between maps so that it is reused like the others."""

    def create(self, workers: int) -> Any:
        """``WorkerPool(n_jobs=workers, keep_alive=True)``."""
        mpire = importlib.import_module("mpire")
        return mpire.WorkerPool(n_jobs=workers, keep_alive=True)

    def call(self, pool: Any, function: Function, argument: object) -> Any:
        """``pool.apply(function, (argument,))``."""
        return pool.apply(function, (argument,))

    def map(
        self,
        pool: Any,
        function: Function,
        arguments: Iterable[object],
        chunksize: int | None = None,
    ) -> list[Any]:
        """``pool.map(function, arguments[, chunk_size=chunksize])``."""
        return list(pool.map(function, arguments, chunk_size=chunksize))

    def close(self, pool: Any, *, graceful: bool) -> None:
        """``stop_and_join()``, or ``terminate()`` unless ``graceful``."""
        if graceful:
            pool.stop_and_join()
        else:
            pool.terminate()


class JoblibContender(Contender):
    """A joblib backend: ``backend`` as ``joblib.parallel_config`` names it, with ``n_jobs`` the
    run's workers, or 1 for a ``sequential`` contender (joblib's sequential backend).

    It creates no pool (the pool operations raise): the joblib rows make their ``Parallel``
    call (or scikit-learn's ``n_jobs`` does) inside `configured`, as a user's script does.
    """

    def __init__(self, key: str, name: str, backend: str, *, sequential: bool = False) -> None:
        super().__init__(key, name)
        self.backend = backend
        self.sequential = sequential

    def n_jobs(self, workers: int) -> int:
        """The ``n_jobs`` to give ``Parallel`` (or an estimator) for a run of ``workers``."""
        return 1 if self.sequential else workers

    def configured(self, workers: int) -> contextlib.AbstractContextManager[Any]:
        """``joblib.parallel_config(backend=..., n_jobs=...)``: a fresh backend for the block
        (gilfree's keeps one executor per block; loky's executor outlives it, reused)."""
        joblib = importlib.import_module("joblib")
        config: contextlib.AbstractContextManager[Any] = joblib.parallel_config(
            backend=self.backend, n_jobs=self.n_jobs(workers)
        )
        return config


def load_joblib(key: str, name: str, backend: str, *, sequential: bool = False) -> Contender:
    """Return a joblib contender; importing ``gilfree.joblib`` registers gilfree's backend (so
    it, and joblib, are imported here, before anything is timed). Raises ImportError without
    joblib."""
    importlib.import_module("joblib")
    if backend == "gilfree":
        importlib.import_module("gilfree.joblib")
    return JoblibContender(key, name, backend, sequential=sequential)


def load_gilfree() -> Contender:
    """Return the gilfree contender; raises if gilfree's executor cannot be imported."""
    gilfree = importlib.import_module("gilfree")
    return ExecutorContender("gilfree", "gilfree", gilfree.ProcessPoolExecutor)


class ProgressContender(ExecutorContender):
    """gilfree's executor whose ``map`` shows a progress bar (``progress=True``: tqdm)."""

    def map(
        self,
        pool: Any,
        function: Function,
        arguments: Iterable[object],
        chunksize: int | None = None,
    ) -> list[Any]:
        """``list(executor.map(function, arguments, chunksize=chunksize, progress=True))``."""
        return list(pool.map(function, arguments, chunksize=chunksize, progress=True))


def load_gilfree_progress() -> Contender:
    """Return gilfree's executor, its maps with a tqdm bar."""
    gilfree = importlib.import_module("gilfree")
    return ProgressContender("gprogress", "gilfree progress=True", gilfree.ProcessPoolExecutor)


def load_dask(native: bool) -> Contender:
    """Return an executor over a local Dask cluster: gilfree's, or Dask's own."""
    from gilfree.bench.cluster_contenders import DaskContender

    if native:
        return DaskContender("dask_native", "Dask get_executor()", native=True)
    return DaskContender("dask_gilfree", "gilfree DaskExecutor", native=False)


def load_ray(native: bool) -> Contender:
    """Return a pool over a local Ray: gilfree's executor, or Ray's own multiprocessing Pool."""
    from gilfree.bench.cluster_contenders import RayContender

    if native:
        return RayContender("ray_pool", "Ray multiprocessing.Pool", native=True)
    return RayContender("ray_gilfree", "gilfree RayExecutor", native=False)


def load_gilfree_threads() -> Contender:
    """Return gilfree's executor on threads (``backend="thread"``)."""
    gilfree = importlib.import_module("gilfree")
    executor_class = functools.partial(gilfree.ProcessPoolExecutor, backend="thread")
    return ExecutorContender("gthread", "gilfree(threads)", executor_class)


def load_thread_pool_executor() -> Contender:
    """Return the stdlib `ThreadPoolExecutor`."""
    return ExecutorContender("tpe", "ThreadPoolExecutor", concurrent.futures.ThreadPoolExecutor)


def load_gilfree_pool() -> Contender:
    """Return ``gilfree.Pool`` driven through multiprocessing.Pool's API."""
    gilfree = importlib.import_module("gilfree")
    return MultiprocessingPoolContender("gpool", "gilfree.Pool", gilfree.Pool)


def load_process_pool_executor() -> Contender:
    """Return the stdlib `ProcessPoolExecutor` contender with its default start method."""
    return ExecutorContender("ppe", "ProcessPoolExecutor", concurrent.futures.ProcessPoolExecutor)


def load_process_pool_executor_with(method: str) -> Contender:
    """Return the stdlib `ProcessPoolExecutor` with the start method ``method``."""
    context = multiprocessing.get_context(method)
    executor_class = functools.partial(concurrent.futures.ProcessPoolExecutor, mp_context=context)
    return ExecutorContender(f"ppe_{method}", f"ProcessPoolExecutor({method})", executor_class)


def load_multiprocessing_pool() -> Contender:
    """Return the `multiprocessing.Pool` (fork) contender."""
    return MultiprocessingPoolContender("pool", "multiprocessing.Pool")


def load_loky() -> Contender:
    """Return the loky contender; raises ImportError when loky is not installed."""
    loky = importlib.import_module("loky")
    return ExecutorContender("loky", "loky", loky.ProcessPoolExecutor)


def load_best_chunksize(load: Callable[[], Contender]) -> Contender:
    """Return the contender ``load`` gives, as its "best chunksize" variant: key ``<key>_best``,
    its maps timed at each chunksize of `CHUNKSIZE_SWEEP` by the workloads that sweep."""
    contender = load()
    contender.key = f"{contender.key}_best"
    contender.name = f"{contender.name}(best chunksize)"
    contender.chunksize_sweep = CHUNKSIZE_SWEEP
    return contender


def load_inherited_items() -> Contender:
    """Return the fork-after-the-data trick (`InheritedItemsContender`)."""
    return InheritedItemsContender("fork_inherit", "fork Pool, items inherited")


def load_mpire() -> Contender:
    """Return the mpire contender; raises ImportError when mpire is not installed."""
    importlib.import_module("mpire")
    return MpireContender("mpire", "mpire")


@dataclass(frozen=True)
class Entry:
    """One contender of the registry: its key, display name, loader and the module it needs.

    ``everywhere``: whether workloads that do not list their contenders run it by default (the
    stdlib executor with each start method runs only in the start-up rows that list it, the
    "best chunksize" ones only in the numpy rows).
    """

    key: str
    name: str
    load: Callable[[], Contender]
    optional: bool
    module: str
    everywhere: bool = True


REGISTRY: tuple[Entry, ...] = (
    Entry("gilfree", "gilfree", load_gilfree, optional=False, module="gilfree"),
    Entry("gpool", "gilfree.Pool", load_gilfree_pool, optional=False, module="gilfree"),
    Entry(
        "gthread",
        "gilfree(threads)",
        load_gilfree_threads,
        optional=False,
        module="gilfree",
        everywhere=False,
    ),
    Entry(
        "gprogress",
        "gilfree progress=True",
        load_gilfree_progress,
        optional=True,
        module="tqdm",
        everywhere=False,
    ),
    *(
        Entry(
            key,
            name,
            functools.partial(load_dask, native),
            optional=True,
            module="distributed",
            everywhere=False,
        )
        for key, name, native in (
            ("dask_gilfree", "gilfree DaskExecutor", False),
            ("dask_native", "Dask get_executor()", True),
        )
    ),
    *(
        Entry(
            key,
            name,
            functools.partial(load_ray, native),
            optional=True,
            module="ray",
            everywhere=False,
        )
        for key, name, native in (
            ("ray_gilfree", "gilfree RayExecutor", False),
            ("ray_pool", "Ray multiprocessing.Pool", True),
        )
    ),
    Entry(
        "tpe",
        "ThreadPoolExecutor",
        load_thread_pool_executor,
        optional=False,
        module="concurrent.futures",
        everywhere=False,
    ),
    Entry(
        "ppe",
        "ProcessPoolExecutor",
        load_process_pool_executor,
        optional=False,
        module="concurrent.futures",
    ),
    *(
        Entry(
            f"ppe_{method}",
            f"ProcessPoolExecutor({method})",
            functools.partial(load_process_pool_executor_with, method),
            optional=False,
            module="concurrent.futures",
            everywhere=False,
        )
        for method in ("fork", "forkserver", "spawn")
    ),
    Entry(
        "pool",
        "multiprocessing.Pool",
        load_multiprocessing_pool,
        optional=False,
        module="multiprocessing",
    ),
    Entry(
        "ppe_best",
        "ProcessPoolExecutor(best chunksize)",
        functools.partial(load_best_chunksize, load_process_pool_executor),
        optional=False,
        module="concurrent.futures",
        everywhere=False,
    ),
    Entry(
        "fork_inherit",
        "fork Pool, items inherited",
        load_inherited_items,
        optional=False,
        module="multiprocessing",
        everywhere=False,
    ),
    Entry("loky", "loky", load_loky, optional=True, module="loky"),
    Entry(
        "loky_best",
        "loky(best chunksize)",
        functools.partial(load_best_chunksize, load_loky),
        optional=True,
        module="loky",
        everywhere=False,
    ),
    Entry("mpire", "mpire", load_mpire, optional=True, module="mpire"),
    *(
        Entry(
            key,
            name,
            functools.partial(load_joblib, key, name, backend, sequential=backend == "sequential"),
            optional=True,
            module="joblib",
            everywhere=False,
        )
        for key, name, backend in (
            ("jl_gilfree", "joblib gilfree", "gilfree"),
            ("jl_loky", "joblib loky", "loky"),
            ("jl_threads", "joblib threading", "threading"),
            ("jl_seq", "joblib n_jobs=1", "sequential"),
        )
    ),
)


def find_entry(key: str) -> Entry:
    """Return the registry entry with this key; raises KeyError."""
    for entry in REGISTRY:
        if entry.key == key:
            return entry
    raise KeyError(key)


def find_entries(text: str) -> list[Entry]:
    """Return the entries whose key or name is ``text`` (case-insensitive; '-' or '_'), or whose
    key starts with it and '_': ``ppe`` picks ProcessPoolExecutor with every start method."""
    wanted = text.strip().lower().replace("-", "_")
    return [
        entry
        for entry in REGISTRY
        if wanted in (entry.key, entry.name.lower()) or entry.key.startswith(wanted + "_")
    ]


def is_available(entry: Entry) -> bool:
    """Whether the module ``entry`` needs can be found (without importing it)."""
    try:
        return importlib.util.find_spec(entry.module) is not None
    except (ImportError, ValueError):
        return False


def available_entries(selected: list[Entry], *, explicit: bool) -> tuple[list[Entry], list[str]]:
    """Keep the selected contenders whose module exists; a note for each one left out.

    Optional contenders are left out silently unless they were ``explicit``ly asked for.
    """
    kept: list[Entry] = []
    notes: list[str] = []
    for entry in selected:
        if is_available(entry):
            kept.append(entry)
        elif explicit or not entry.optional:
            notes.append(f"{entry.name}: not importable (no module {entry.module})")
    return kept, notes
