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
from typing import Any, Callable, Iterable, Iterator

from gilfree import _mapping
from gilfree import _protocol as protocol
from gilfree._chunking import ChunkSizer
from gilfree._engine import Engine
from gilfree._future import Future
from gilfree._launch import START_METHODS, Launcher, WorkerProcess, default_start_method
from gilfree._pickling import dumps_for_worker
from gilfree._serialization import explain
from gilfree._work import Call, MapJob
from gilfree._worker import WorkerSetup

__all__ = ["Executor", "ProcessPoolExecutor"]


def resolve_start_method(mp_context: Any, start_method: str | None) -> str:
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


def parent_setup(method: str) -> WorkerSetup:
    """What a worker started with ``method`` must take from this process (nothing but the
    authkey when it is forked from it)."""
    inherits = method == "fork"
    return WorkerSetup(
        sys_path=[] if inherits else list(sys.path),
        sys_argv=[] if inherits else list(sys.argv),
        cwd=None if inherits else os.getcwd(),
        main_path=_main_path(method),
        authkey=bytes(multiprocessing.current_process().authkey),
    )


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
        method = resolve_start_method(mp_context, start_method)
        if method == "fork" and max_tasks_per_child is not None:
            raise ValueError(
                "max_tasks_per_child is incompatible with the 'fork' multiprocessing start"
                " method; supply a different mp_context."
            )
        self._start(max_workers, method, initializer, tuple(initargs), max_tasks_per_child, preload)

    def _start(
        self,
        max_workers: int,
        method: str,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        max_tasks_per_child: int | None,
        preload: Iterable[str],
    ) -> None:
        """Builds the engine from checked arguments (``gilfree.Pool`` calls this directly:
        unlike this executor, multiprocessing.Pool allows recycling forked workers)."""
        initializer_and_args = (initializer, initargs)
        inherits = method == "fork"  # a forked worker has the initializer in its memory
        setup = parent_setup(method)

        def make_setup() -> bytes:
            if not inherits:
                setup.initializer = dumps_for_worker(initializer_and_args)
            return protocol.dumps(setup)

        self._max_workers = max_workers
        self._engine = Engine(
            max_workers,
            Launcher(method, tuple(preload), initializer_and_args if inherits else (None, ())),
            make_setup,
            max_tasks_per_child,
        )
        self._finalizer = weakref.finalize(self, self._engine.lifecycle.shutdown, False, False)

    @property
    def _broken(self) -> str | bool:
        """concurrent.futures' private flag: False, or why the pool is broken."""
        return self._engine.broken or False

    @property
    def _processes(self) -> dict[int, WorkerProcess]:
        """concurrent.futures' private ``{pid: process}`` of the live workers (some code and
        tests poke at it); each value has ``pid``, ``exitcode``, ``is_alive()``, ``join()``,
        ``terminate()`` and ``kill()``."""
        return {process.pid: process for process in self._engine.worker_processes()}

    @property
    def start_method(self) -> str:
        """How this executor starts its workers."""
        return self._engine._launcher.method  # noqa: SLF001 - one engine per executor

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Schedules ``fn(*args, **kwargs)``; returns a Future for its result."""
        future = Future(self._engine)
        try:
            function = self._engine.functions.lookup(fn)
        except Exception as error:  # noqa: BLE001 - reported through the future, as the stdlib
            self._engine.lifecycle.check_open()
            future.set_exception(explain({"fn": fn}, error))
            return future
        shared: list[Any] = []
        try:
            payload = protocol.dumps((args, kwargs), shared)
        except Exception as error:  # noqa: BLE001 - reported through the future, as the stdlib
            self._engine.lifecycle.check_open()
            future.set_exception(explain({"args": args, "kwargs": kwargs}, error))
            return future
        self._engine.submit(Call(future, fn, function, payload, shared))
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
            items, star = _mapping.snapshot(iterables[0]), False
        else:
            items, star = list(zip(*iterables)), True
        function = self._engine.functions.lookup(fn)
        job = MapJob(fn, function, items, star, ChunkSizer(chunksize, self._max_workers))
        self._engine.submit(job)
        return _mapping.results(self._engine, job, deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops accepting work; with ``wait``, returns once pending work is done and the
        workers have exited. ``cancel_futures`` cancels what has not started."""
        self._engine.lifecycle.shutdown(wait, cancel_futures)


Executor = ProcessPoolExecutor
