"""``gilfree.ProcessPoolExecutor``: concurrent.futures' process pool on shared-memory rings.

Same constructor, methods and semantics as ``concurrent.futures.ProcessPoolExecutor``, plus
``start_method`` and ``preload``. What differs is underneath: requests and replies travel through
per-worker shared-memory rings instead of pipes and a manager thread, functions are sent once per
worker (by value when they cannot be imported, so lambdas and closures work), and workers are
forked from a pre-warmed template process.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import weakref
from concurrent.futures import Executor as _StdExecutor
from typing import Any, Callable, Iterable, Iterator, Sequence

import cloudpickle

from gilfree import _protocol as protocol
from gilfree._chunking import ChunkSizer
from gilfree._engine import Engine
from gilfree._future import Future
from gilfree._launch import START_METHODS, Launcher, default_start_method
from gilfree._work import Call, MapJob
from gilfree._worker import WorkerSetup

__all__ = ["Executor", "ProcessPoolExecutor"]


def _resolve_start_method(mp_context: Any, start_method: str | None) -> str:
    if start_method is None and mp_context is not None:
        start_method = mp_context if isinstance(mp_context, str) else mp_context.get_start_method()
        if start_method == "forkserver":
            start_method = "zygote"
    if start_method is None:
        return default_start_method()
    if start_method not in START_METHODS:
        raise ValueError(
            f"start_method must be one of {', '.join(map(repr, START_METHODS))}, "
            f"got {start_method!r}"
        )
    return start_method


def _main_path(start_method: str) -> str | None:
    """The parent's main script, for workers that do not inherit it (as multiprocessing does)."""
    if start_method == "fork":
        return None
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name.endswith("__main__"):
        return None  # ``python -m package``: the package's __main__ must not run again
    path = getattr(main, "__file__", None)
    if spec is not None or not path or os.path.basename(path).startswith("ipython"):
        return None
    return os.path.abspath(path)


class ProcessPoolExecutor(_StdExecutor):
    """Runs calls in a pool of worker processes (see the module docstring).

    Args:
        max_workers: number of worker processes; default ``os.cpu_count()``.
        mp_context: accepted for compatibility: a multiprocessing context or a start-method
            name picks the start method (``"forkserver"`` maps to ``"zygote"``).
        initializer: called in each worker with ``*initargs`` before its first task. If it
            raises, the pool is broken: pending futures fail with ``BrokenProcessPool``.
        initargs: arguments for ``initializer``.
        max_tasks_per_child: a worker exits after this many tasks and is replaced.
        start_method: ``"zygote"`` (default where fork exists), ``"spawn"`` or ``"fork"``.
        preload: modules the zygote imports once, so forked workers start with them loaded.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        start_method: str | None = None,
        preload: Iterable[str] = (),
    ) -> None:
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        method = _resolve_start_method(mp_context, start_method)
        preload = tuple(preload)
        setup = WorkerSetup(
            sys_path=list(sys.path) if method != "fork" else [],
            sys_argv=list(sys.argv) if method != "fork" else [],
            cwd=os.getcwd() if method != "fork" else None,
            main_path=_main_path(method),
            initializer=cloudpickle.dumps((initializer, tuple(initargs)), protocol.PROTOCOL),
        )
        self._max_workers = max_workers
        self._engine = Engine(
            max_workers,
            Launcher(method, preload),
            protocol.dumps(setup),
            max_tasks_per_child,
        )
        self._finalizer = weakref.finalize(self, self._engine.lifecycle.shutdown, False, False)

    @property
    def start_method(self) -> str:
        """How this executor starts its workers."""
        return self._engine._launcher.method  # noqa: SLF001 - one engine per executor

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Schedules ``fn(*args, **kwargs)``; returns a Future for its result."""
        future = Future(self._engine)
        try:
            function = self._engine.functions.lookup(fn)
            payload = protocol.dumps((args, kwargs))
        except Exception as error:  # noqa: BLE001 - reported through the future, as the stdlib
            self._engine.lifecycle.check_open()
            future.set_exception(error)
            return future
        self._engine.submit(Call(future, fn, function, payload))
        return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
    ) -> Iterator[Any]:
        """Like the builtin ``map``, run in the workers; results come back in order.

        ``chunksize=None`` (default) sizes chunks from measured task durations (a few ms of
        work per message). ``timeout`` counts from this call; ``next()`` raises TimeoutError
        when a result is not ready by then.
        """
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        deadline = None if timeout is None else time.monotonic() + timeout
        if len(iterables) == 1:
            items, star = _snapshot(iterables[0]), False
        else:
            items, star = list(zip(*iterables)), True
        function = self._engine.functions.lookup(fn)
        job = MapJob(fn, function, items, star, ChunkSizer(chunksize, self._max_workers))
        self._engine.submit_map(job)
        return _map_results(self._engine, job, deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops accepting work; with ``wait``, returns once pending work is done and the
        workers have exited. ``cancel_futures`` cancels what has not started."""
        self._engine.lifecycle.shutdown(wait, cancel_futures)


def _snapshot(iterable: Iterable[Any]) -> Sequence[Any]:
    """The items of ``iterable``, taken now as the stdlib's ``map`` does. Immutable sequences
    are kept as they are: a ``range`` is cut into sub-ranges, so its numbers are never built in
    the parent nor pickled one by one."""
    if type(iterable) in (range, tuple, str, bytes):
        return iterable  # type: ignore[return-value]
    return list(iterable)


def _map_results(engine: Engine, job: MapJob, deadline: float | None) -> Iterator[Any]:
    index = 0
    try:
        while index < len(job.chunks) or not job.exhausted():
            if not (index < len(job.chunks) and job.chunks[index].done):
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                position = index
                ready = lambda: position < len(job.chunks) and job.chunks[position].done  # noqa: E731
                if not engine.wait_until(lambda: ready() or job.failure is not None, timeout):
                    raise TimeoutError()
                if not ready():
                    assert job.failure is not None
                    raise job.failure
            chunk = job.chunks[index]
            results, chunk.results = chunk.results, []
            yield from results
            if chunk.error is not None:
                raise chunk.error
            index += 1
    finally:
        job.stop(_Abandoned())


class _Abandoned(Exception):
    """Stops a map job whose reader went away."""


Executor = ProcessPoolExecutor
