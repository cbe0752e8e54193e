"""``gilfree.ProcessPoolExecutor``: concurrent.futures' process pool on shared-memory rings.

Same constructor, methods and semantics as ``concurrent.futures.ProcessPoolExecutor``, plus
``start_method`` and ``preload``. What differs is underneath: requests and replies travel through
per-worker shared-memory rings instead of pipes and a manager thread, functions are sent once per
worker (by value when they cannot be imported, so lambdas and closures work), and workers are
forked from a pre-warmed template process.

``backend="thread"`` runs the same front end (futures, map chunking, retries, stats) over
threads of this process instead (``gilfree._transports.thread``): for free-threaded Python,
where threads run Python in parallel, or for work that releases the GIL. Threads share objects
with the caller (nothing is copied; a task that mutates its argument mutates the caller's), all
report this process's pid, and cannot be killed, so the process-only options
(``PROCESS_ONLY_OPTIONS``) are refused. ``backend="auto"`` picks threads only on a
free-threaded build running with the GIL off.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Executor as _StdExecutor
from typing import Any, ParamSpec, Self, TypeVar, TypeVarTuple, overload

from gilfree import _core
from gilfree._engine import mapping as _mapping
from gilfree._engine.aio import AsyncMapIterator, LoopOutcome
from gilfree._engine.chunking import TARGET_SECONDS, ChunkSizer, checked_chunksize
from gilfree._engine.engine import Admission, Engine
from gilfree._engine.future import Future
from gilfree._engine.lifecycle import Lifecycle
from gilfree._engine.progress import start as start_progress
from gilfree._engine.slots import WorkerStats
from gilfree._engine.transport import Transport
from gilfree._engine.units import (
    NO_LIMITS,
    READ_AHEAD_CHUNKS_PER_WORKER,
    Call,
    CallFuture,
    Chunk,
    Limits,
    MapJob,
)
from gilfree._transports.process import ProcessTransport
from gilfree._transports.thread import ThreadTransport
from gilfree._wire import main as _main
from gilfree._wire import protocol
from gilfree._wire.pickling import dumps_for_worker, sendable_to_worker
from gilfree._wire.serialization import explain
from gilfree._workers import launch as _launch
from gilfree._workers.launch import START_METHODS, Launcher, WorkerProcess, default_start_method
from gilfree._workers.worker import ProcessSettings, WorkerSetup

__all__ = ["Executor", "ProcessPoolExecutor"]


class _Default:
    """The type of ``DEFAULT``."""

    def __repr__(self) -> str:
        return "DEFAULT"


#: "The executor's setting", for ``submit_with``'s keyword arguments.
DEFAULT = _Default()

#: Longest ``_processes`` waits for the pids of workers being forked by the zygote.
PID_WAIT_SECONDS = 5.0


def check_timeout(name: str, value: Any) -> float | None:
    """``value`` if it is None or a positive number of seconds; else a clear error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be more than 0 seconds, got {value!r}")
    return float(value)


def check_retries(name: str, value: Any) -> int:
    """``value`` if it is an int of at least 0; else a clear error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be 0 or more, got {value}")
    return value


#: What runs the tasks: ``backend=`` of the executor and Pool.
BACKENDS = ("process", "thread", "auto")

#: Options only worker processes can honour (a thread has no start method, cannot be recycled
#: or measured apart, and cannot be killed on a timeout).
PROCESS_ONLY_OPTIONS = (
    "mp_context",
    "start_method",
    "preload",
    "max_tasks_per_child",
    "max_memory_per_child",
    "task_timeout",
)


def resolve_backend(backend: Any) -> str:
    """``"process"`` or ``"thread"``: ``"auto"`` is threads only where they run Python in
    parallel (a free-threaded build with the GIL off now)."""
    if backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}"
        )
    if backend == "auto":
        gil_enabled = getattr(sys, "_is_gil_enabled", None)
        return "thread" if gil_enabled is not None and not gil_enabled() else "process"
    return str(backend)


def usable_cpu_count() -> int:
    """The CPUs this process may use, as the stdlib's pools count them by default:
    ``os.process_cpu_count()`` (Python 3.13 on: the affinity mask), else ``os.cpu_count()``."""
    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return int(count or 1)


def refuse_process_options(**given: Any) -> None:
    """Raises ValueError naming the process-only options given (not None, not empty) to a
    thread backend."""
    named = [name for name, value in given.items() if value is not None and value != ()]
    if named:
        raise ValueError(
            f"{', '.join(named)}: process-only option{'s' if len(named) > 1 else ''}, but"
            " backend='thread' runs tasks on threads of this process (no start method, no"
            " recycling, no kill on timeout). Leave it out, or use backend='process'."
        )


def checked_initargs(initargs: Any) -> tuple[Any, ...]:
    """``initargs`` as a tuple; a ``TypeError`` that names it where it is not iterable (the
    stdlib's workers die of it later, and its pool breaks or starts workers for ever)."""
    try:
        return tuple(initargs)
    except TypeError:
        raise TypeError(
            f"initargs must be a tuple of the initializer's arguments, got {initargs!r:.80}; "
            "for a single argument, write initargs=(value,)"
        ) from None


def resolve_start_method(mp_context: Any, start_method: str | None) -> tuple[str, bool]:
    """``(method, chosen)``: the start method ``mp_context`` (a context or a method's name;
    ``"forkserver"`` means the zygote) or ``start_method`` names (both may be given only if
    they agree), else the one the script set for itself (see ``script_start_method``), else
    the default (``chosen`` False)."""
    if mp_context is not None:
        method = mp_context if isinstance(mp_context, str) else mp_context.get_start_method()
        method = "zygote" if method == "forkserver" else method
        if start_method is not None and start_method != method:
            raise ValueError(
                f"mp_context picks the start method {method!r} and start_method asks for "
                f"{start_method!r}: give only one of them"
            )
        start_method = method
    if start_method is None:
        set_by_script = _launch.script_start_method
        if set_by_script is not None:
            return set_by_script, True
        return default_start_method(), False
    if start_method not in START_METHODS:
        raise ValueError(
            f"start_method must be one of {', '.join(map(repr, START_METHODS))}, "
            f"got {start_method!r}"
        )
    return start_method, True


def start_method_for_initargs(
    method: str, chosen: bool, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]
) -> str:
    """``method``, or ``"fork"`` where it is the default (not ``chosen``) and ``initargs`` can
    reach only a forked worker: a ``Lock`` or ``Value`` of the default context, a thread lock,
    as the stdlib's default start method (fork, on Linux) carries them, and as
    ``gilfree.Process`` falls back. Tries to pickle them once to know (a large argument costs
    that copy once)."""
    if chosen or method != "zygote" or not initargs or not hasattr(os, "fork"):
        return method
    return method if sendable_to_worker((initializer, initargs)) else "fork"


def parent_setup(method: str) -> WorkerSetup:
    """What a worker started with ``method`` must take from this process (nothing but the
    authkey when it is forked from it)."""
    from multiprocessing import util

    inherits = method == "fork"
    logger = util._logger  # type: ignore[attr-defined]  # noqa: SLF001 - as spawn reads it
    return WorkerSetup(
        inherits=inherits,
        sys_path=[] if inherits else list(sys.path),
        sys_argv=[] if inherits else list(sys.argv),
        cwd=None if inherits else os.getcwd(),
        settings=None if inherits else ProcessSettings.current(),
        environment=None if inherits else dict(os.environ),
        main_path=None if inherits else _main.parent_main_path(),
        before_main=[] if inherits else list(_main.before_main),
        authkey=bytes(multiprocessing.current_process().authkey),
        parent_pid=os.getpid(),
        parent_name=multiprocessing.current_process().name,
        log_to_stderr=not inherits and bool(util._log_to_stderr),  # type: ignore[attr-defined]  # noqa: SLF001
        log_level=None if inherits or logger is None else logger.getEffectiveLevel(),
    )


def next_process_number() -> int:
    """The next number of multiprocessing's counter of the processes this one starts (a
    stdlib worker's ``_identity``), so gilfree's workers and the stdlib's are numbered in one
    sequence."""
    from multiprocessing import process

    counter: Iterator[int] = process._process_counter  # type: ignore[attr-defined]  # noqa: SLF001
    return next(counter)


_P = ParamSpec("_P")
_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


class ProcessPoolExecutor(_StdExecutor):
    """Runs calls in a pool of worker processes (see the module docstring).

    Args:
        max_workers: number of worker processes; default the CPUs this process may use
            (``os.process_cpu_count()`` from Python 3.13, ``os.cpu_count()`` before), as the
            stdlib's.
        mp_context: accepted for compatibility: a multiprocessing context or a start-method
            name picks the start method (``"forkserver"`` maps to ``"zygote"``).
        initializer: called in each worker with ``*initargs`` before its first task. If it
            raises, the pool is broken: pending futures fail with ``BrokenProcessPool``.
        initargs: arguments for ``initializer``.
        max_tasks_per_child: a worker exits after this many tasks and is replaced.
        start_method: ``"zygote"`` (default where fork exists), ``"spawn"`` or ``"fork"``.
        preload: modules the zygote imports once, so forked workers start with them loaded.
        task_timeout: seconds a task may run; past that its worker is killed (and replaced)
            and its future fails with ``TaskTimeoutError``. In ``map`` each item may take this
            long. None (default): no limit. ``submit_with`` overrides it per call.
        retries: times a task whose worker died under it is run again on a fresh worker
            before it fails with ``WorkerCrashedError`` (default 0). ``submit_with`` overrides
            it per call.
        max_memory_per_child: resident bytes past which a worker is replaced once its current
            task is done (read from ``/proc/self/statm`` on Linux; elsewhere the peak resident
            size, which can only overstate it).
        backend: ``"process"`` (default): worker processes; ``"thread"``: threads of this
            process, which take none of the process-only options (see the module docstring);
            ``"auto"``: threads on a free-threaded build running with the GIL off, else
            processes.
    """

    # As typeshed types the stdlib's: ``initargs`` are what ``initializer`` takes.
    @overload
    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[[], object] | None = None,
        initargs: tuple[()] = (),
        *,
        max_tasks_per_child: int | None = None,
        start_method: str | None = None,
        preload: Iterable[str] = (),
        task_timeout: float | None = None,
        retries: int = 0,
        max_memory_per_child: int | None = None,
        backend: str = "process",
    ) -> None: ...
    @overload
    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        *,
        initializer: Callable[[*_Ts], object],
        initargs: tuple[*_Ts],
        max_tasks_per_child: int | None = None,
        start_method: str | None = None,
        preload: Iterable[str] = (),
        task_timeout: float | None = None,
        retries: int = 0,
        max_memory_per_child: int | None = None,
        backend: str = "process",
    ) -> None: ...
    @overload
    def __init__(
        self,
        max_workers: int | None,
        mp_context: Any,
        initializer: Callable[[*_Ts], object],
        initargs: tuple[*_Ts],
        *,
        max_tasks_per_child: int | None = None,
        start_method: str | None = None,
        preload: Iterable[str] = (),
        task_timeout: float | None = None,
        retries: int = 0,
        max_memory_per_child: int | None = None,
        backend: str = "process",
    ) -> None: ...
    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        start_method: str | None = None,
        preload: Iterable[str] = (),
        task_timeout: float | None = None,
        retries: int = 0,
        max_memory_per_child: int | None = None,
        backend: str = "process",
    ) -> None:
        if max_workers is None:
            max_workers = usable_cpu_count()
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        elif max_workers > _core.MAX_WORKERS:
            raise ValueError(
                f"max_workers must be at most {_core.MAX_WORKERS} (gilfree's limit), got"
                f" {max_workers}"
            )
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        initargs = checked_initargs(initargs)
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        limits = Limits(
            check_timeout("task_timeout", task_timeout), check_retries("retries", retries)
        )
        if max_memory_per_child is not None and (
            isinstance(max_memory_per_child, bool)
            or not isinstance(max_memory_per_child, int)
            or max_memory_per_child <= 0
        ):
            raise ValueError(
                f"max_memory_per_child must be a positive number of bytes or None, got"
                f" {max_memory_per_child!r}"
            )
        if resolve_backend(backend) == "thread":
            refuse_process_options(
                mp_context=mp_context,
                start_method=start_method,
                preload=tuple(preload),
                max_tasks_per_child=max_tasks_per_child,
                max_memory_per_child=max_memory_per_child,
                task_timeout=task_timeout,
            )
            method = "thread"
        else:
            method, chosen = resolve_start_method(mp_context, start_method)
            if max_tasks_per_child is None:  # refused with fork (below): the zygote then
                method = start_method_for_initargs(method, chosen, initializer, initargs)
            elif mp_context is None and start_method is None and method == "fork":
                method = default_start_method()  # as the stdlib takes spawn then, not fork
        if method == "fork" and max_tasks_per_child is not None:
            raise ValueError(
                "max_tasks_per_child is incompatible with the 'fork' multiprocessing start"
                " method; supply a different mp_context."
            )
        self._start(
            max_workers,
            method,
            initializer,
            initargs,
            max_tasks_per_child,
            preload,
            limits,
            max_memory_per_child,
        )

    def _start(
        self,
        max_workers: int,
        method: str,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        max_tasks_per_child: int | None,
        preload: Iterable[str],
        limits: Limits = NO_LIMITS,
        max_memory: int | None = None,
        eager: bool = False,
    ) -> None:
        """Builds the engine from checked arguments (``gilfree.Pool`` calls this directly:
        unlike this executor, multiprocessing.Pool allows recycling forked workers, and starts
        every worker at once and keeps them all running: ``eager``). ``method`` is a start
        method, or ``"thread"`` for the thread backend."""
        transport: Transport
        if method == "thread":
            transport = ThreadTransport(initializer, initargs)
        else:
            transport = _process_transport(
                max_workers, method, initializer, initargs, preload, max_memory
            )
        self._run_on(transport, max_workers, method, limits, max_tasks_per_child, eager)

    def _run_on(
        self,
        transport: Transport,
        max_workers: int,
        method: str,
        limits: Limits = NO_LIMITS,
        max_tasks_per_child: int | None = None,
        eager: bool = False,
    ) -> None:
        """Builds the front end over ``transport`` (the cluster executors call this too)."""
        self._limits = limits
        self._max_workers = max_workers
        self._start_method = method
        self._engine = Engine(transport, max_workers, max_tasks_per_child, eager)
        #: The collector thread and shutdown.
        self._lifecycle = Lifecycle(self._engine)
        self._finalizer = weakref.finalize(self, self._lifecycle.shutdown, False, False)

    @property
    def _broken(self) -> str | bool:
        """concurrent.futures' private flag: False, or why the pool is broken."""
        return self._engine.broken or False

    @property
    def _processes(self) -> dict[int, WorkerProcess]:
        """concurrent.futures' private ``{pid: process}`` of the live workers (some code and
        tests poke at it); each value has ``pid``, ``exitcode``, ``is_alive()``, ``join()``,
        ``terminate()`` and ``kill()``. As in the stdlib, the workers a ``submit`` started are
        there as soon as it returns: a zygote worker's pid arrives a moment after it is asked
        for, so this waits for those pids (at most ``PID_WAIT_SECONDS`` in all)."""
        deadline = time.monotonic() + PID_WAIT_SECONDS
        processes: dict[int, WorkerProcess] = {}
        for process in self._engine.worker_handles():
            if not isinstance(process, WorkerProcess):
                continue  # a thread (backend="thread"): no process of its own
            pid = process.wait_for_pid(max(0.0, deadline - time.monotonic()))
            if pid:
                processes[pid] = process
        return processes

    @property
    def start_method(self) -> str:
        """How this executor starts its workers: ``"zygote"``, ``"spawn"`` or ``"fork"``, or
        ``"thread"`` for the thread backend."""
        return self._start_method

    @property
    def backend(self) -> str:
        """What runs the tasks: ``"process"`` or ``"thread"`` (``"auto"`` resolved)."""
        return self._engine.transport.name

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Schedules ``fn(*args, **kwargs)``; returns a Future for its result."""
        return self._submit(fn, args, kwargs, self._limits)

    def submit_with(
        self,
        fn: Callable[..., _T],
        /,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | _Default | None = DEFAULT,
        retries: int | _Default = DEFAULT,
    ) -> Future[_T]:
        """Schedules ``fn(*args, **kwargs)`` with its own ``timeout`` (seconds it may run, or
        None for no limit) and ``retries`` (runs again after its worker crashed); each left
        out takes the executor's ``task_timeout`` / ``retries``. ``fn``'s own keyword arguments
        go in ``kwargs``, so none of its names is taken."""
        limits = self._limits_with(timeout, retries)
        return self._submit(fn, tuple(args), {} if kwargs is None else dict(kwargs), limits)

    def _limits_with(self, timeout: float | _Default | None, retries: int | _Default) -> Limits:
        """The executor's limits with ``submit_with``'s overrides, checked."""
        limits = Limits(
            self._limits.timeout if timeout is DEFAULT else check_timeout("timeout", timeout),
            self._limits.retries if retries is DEFAULT else check_retries("retries", retries),
        )
        if limits.timeout is not None:
            self._check_can_kill("timeout")
        return limits

    def _check_can_kill(self, option: str) -> None:
        """Refuses ``option``, which kills a worker in the middle of a task, where workers
        cannot be killed (threads; a cluster's tasks)."""
        if self.backend == "thread":
            refuse_process_options(**{option: True})

    def _submit(
        self,
        fn: Callable[..., _T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        limits: Limits,
        label: Callable[[], str] | None = None,
    ) -> Future[_T]:
        future: Future[_T] = Future(self._engine.pump_role)
        self._submit_to(future, fn, args, kwargs, limits, label)
        return future

    def _submit_labelled(
        self, label: Callable[[], str] | None, fn: Callable[..., _T], /, *args: Any
    ) -> Future[_T]:
        """``submit(fn, *args)`` whose errors (its worker crashed, it was cancelled while it
        ran, ran past its timeout, or its result cannot be read) call it ``label()`` rather
        than by ``fn``'s name: ``gilfree.joblib`` runs every batch through one function of its
        own, and names the user's function instead. ``label`` is called only for a message;
        None names ``fn``."""
        return self._submit(fn, args, {}, self._limits, label)

    def _submit_to(
        self,
        future: CallFuture,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        limits: Limits,
        label: Callable[[], str] | None = None,
        admission: Admission | None = None,
    ) -> None:
        """Queues ``fn(*args, **kwargs)`` to complete ``future`` (``label``: see
        ``_submit_labelled``; ``admission``: the call was admitted earlier, see
        ``Engine.admit``); an error of encoding fails it (after the checks that raise, as
        concurrent.futures does)."""
        try:
            function = self._engine.function(fn)
        except Exception as error:  # noqa: BLE001 - reported through the future, as the stdlib
            if admission is None:
                self._engine.check_open()
            future.set_exception(explain({"fn": fn}, error))
            self._engine.note_unsent_submit()
            return
        shared: list[Any] = []
        try:
            payload = self._engine.pack((args, kwargs), shared)
        except Exception as error:  # noqa: BLE001 - reported through the future, as the stdlib
            if admission is None:
                self._engine.check_open()
            future.set_exception(explain({"args": args, "kwargs": kwargs}, error))
            self._engine.note_unsent_submit()
            return
        call = Call(future, fn, function, payload, shared, limits, label, (args, kwargs))
        self._engine.submit(call, admission)

    # -- asyncio ----------------------------------------------------------------------------

    def run(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Coroutine[Any, Any, _T]:
        """``fn(*args, **kwargs)`` run in a worker, awaited: ``await executor.run(f, x)``.

        Same semantics and errors as ``submit(...).result()``, without blocking the event loop;
        nothing is submitted until it is awaited. If the awaiting task is cancelled before the
        call starts, the call is cancelled; once it runs, it runs to its end and its result is
        dropped (``run_with(..., kill_on_cancel=True)`` kills its worker instead).
        """
        return self._run(fn, args, kwargs, self._limits, kill=False)

    def run_with(
        self,
        fn: Callable[..., _T],
        /,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | _Default | None = DEFAULT,
        retries: int | _Default = DEFAULT,
        kill_on_cancel: bool = False,
    ) -> Coroutine[Any, Any, _T]:
        """``run`` with ``submit_with``'s per-call ``timeout`` and ``retries``, and
        ``kill_on_cancel``: cancelling the awaiting task while the call runs kills its worker
        (within milliseconds; a fresh one replaces it, the executor stays usable) instead of
        letting the call finish. Process backend only. ``fn``'s own keyword arguments go in
        ``kwargs``, so none of its names is taken. The options are checked at once."""
        if not isinstance(kill_on_cancel, bool):
            raise TypeError(f"kill_on_cancel must be True or False, got {kill_on_cancel!r}")
        if kill_on_cancel:
            self._check_can_kill("kill_on_cancel")
        limits = self._limits_with(timeout, retries)
        kwargs_dict = {} if kwargs is None else dict(kwargs)
        return self._run(fn, tuple(args), kwargs_dict, limits, kill=kill_on_cancel)

    async def _run(
        self,
        fn: Callable[..., _T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        limits: Limits,
        kill: bool,
    ) -> _T:
        # One coroutine per awaited call, and a LoopOutcome rather than a Future (see aio).
        outcome = LoopOutcome.in_running_loop()
        wait = self._engine.transport.encoding_wait()
        if wait is None:
            self._submit_to(outcome, fn, args, kwargs, limits)
        else:  # the first calls, while the template runs the main script
            import asyncio

            # Admitted now, queued after the wait: a shutdown meanwhile waits for it.
            admission = self._engine.admit()
            try:
                await asyncio.to_thread(wait)
                self._submit_to(outcome, fn, args, kwargs, limits, admission=admission)
            finally:
                self._engine.withdraw(admission)  # nothing if it was queued
        try:
            result: _T = await outcome.waiter
        except BaseException:
            if outcome.waiter.cancelled():  # the awaiting task was cancelled (or the call)
                self._engine.give_up(outcome, kill)
            raise
        return result

    def amap(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        ordered: bool = True,
        progress: Any = False,
        total: int | None = None,
    ) -> AsyncMapIterator[_T]:
        """``map`` for ``async for``: ``async for y in executor.amap(f, xs)``.

        The input is read lazily, as workers need it, and at most a few chunks per worker run
        ahead of the reader, so an endless generator works in bounded memory. Results come in
        input order, or with ``ordered=False`` as chunks complete. The first failing item
        raises its exception (remote traceback as ``__cause__``) and ends the iteration.
        ``chunksize=None`` sizes chunks from measured task durations. Leaving the loop early,
        or ``aclose()``, stops the work not yet started. ``progress`` and ``total`` as in
        ``map``.
        """
        reader: AsyncMapIterator[_T] = AsyncMapIterator(self._engine, ordered)
        checked_chunksize(chunksize, "chunksize must be >= 1.")
        self._engine.check_open()

        def start(reader: AsyncMapIterator[_T]) -> None:
            job = self._lazy_job(fn, iterables, chunksize, progress, total, reader.on_progress())
            reader.follow(job)
            self._submit_job(job)

        reader.begin(start, self._engine.transport.encoding_wait())
        return reader

    def _lazy_job(
        self,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        chunksize: int | None,
        progress: Any,
        total: int | None,
        on_progress: Callable[[Chunk | None], None] | None,
    ) -> MapJob:
        """A map job that reads ``iterables`` lazily, at most ``READ_AHEAD_CHUNKS_PER_WORKER``
        chunks per worker ahead of its reader (``amap``; a cluster executor's ``map``), its
        arguments checked; not queued yet."""
        chunksize = checked_chunksize(chunksize, "chunksize must be >= 1.")
        self._engine.check_open()
        items, star = _mapping.lazy(iterables)
        function = self._engine.function(fn)
        window = READ_AHEAD_CHUNKS_PER_WORKER * self._max_workers
        counter = start_progress(progress, iterables, total)
        sizer = self._sizer(chunksize)
        return MapJob(fn, function, items, star, sizer, window, self._limits, on_progress, counter)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._engine.interrupt()
        await self.ashutdown(wait=True)

    async def ashutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """``shutdown`` for coroutines: the waiting happens in a thread, never in the event
        loop's."""
        import asyncio

        await asyncio.to_thread(self.shutdown, wait, cancel_futures=cancel_futures)

    def stats(self) -> list[WorkerStats]:
        """Per-worker counters, one ``WorkerStats`` per worker slot: tasks done, crashes,
        timeouts, restarts, busy seconds, and the current worker's pid."""
        return self._engine.stats()

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        progress: Any = False,
        total: int | None = None,
    ) -> Iterator[_T]:
        """Like the builtin ``map``, run in the workers; results come back in order.

        ``chunksize=None`` (default) sizes chunks from measured task durations (a few ms of
        work per message). ``timeout`` counts from this call; ``next()`` raises TimeoutError
        when a result is not ready by then. ``progress=True`` shows a tqdm bar of the items
        done (``tqdm.auto``: a widget in notebooks); a tqdm class, or a callable ``(done,
        total)``, gets the count instead (see ``gilfree._engine.progress``). ``total`` is the
        bar's total where the input has no ``len()``.
        """
        chunksize = checked_chunksize(chunksize, "chunksize must be >= 1.")
        if self._submit_overridden() and not progress:
            # concurrent.futures builds map on submit: code that wraps submit sees every item
            # go through it (tqdm's process_map counts its bar's items that way).
            return _StdExecutor.map(self, fn, *iterables, timeout=timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        if len(iterables) == 1:
            items, star = _mapping.snapshot(iterables[0]), False
        else:
            items, star = list(zip(*iterables)), True
        function = self._engine.function(fn)
        sizer = self._sizer(chunksize)
        counter = start_progress(progress, (items,), total)
        job = MapJob(fn, function, items, star, sizer, limits=self._limits, progress=counter)
        self._submit_job(job)
        return _mapping.results(self._engine.pump_role, job, deadline)

    def _sizer(self, chunksize: int | None) -> ChunkSizer:
        """The chunk sizes of one map: ``chunksize``, or adaptive, aiming at
        ``_CHUNK_SECONDS`` of work per message."""
        return ChunkSizer(chunksize, self._max_workers, self._CHUNK_SECONDS, self._TRUST_ITEMS)

    #: Seconds of work a map aims to put in each message (see ``gilfree._engine.chunking``).
    _CHUNK_SECONDS = TARGET_SECONDS
    #: Items measured that make the chunk floor trusted however cheap they were (None: only
    #: measured seconds do; see ``gilfree._engine.chunking``).
    _TRUST_ITEMS: int | None = None

    def _submit_overridden(self) -> bool:
        """Whether ``submit`` was replaced on this executor, or by a subclass."""
        return "submit" in vars(self) or type(self).submit is not ProcessPoolExecutor.submit

    def _submit_job(self, job: MapJob) -> None:
        """Queues ``job``; its progress display is closed if it cannot be."""
        try:
            self._engine.submit(job)
        except BaseException:
            if job.progress is not None:
                job.progress.close()
            raise

    def _abort(self) -> None:
        """Cancels what has not started and kills the workers running the rest (their futures
        fail with ``CancelledError``), as Ctrl-C does; the executor stays usable (workers start
        again for new work). For ``gilfree.joblib``'s ``abort_everything``."""
        self._engine.interrupt("stopped: a joblib Parallel call in this backend was aborted")

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool | None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._engine.interrupt()  # Ctrl-C: do not wait for the running tasks
        return super().__exit__(exc_type, exc_val, exc_tb)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops accepting work; with ``wait``, returns once pending work is done and the
        workers have exited. ``cancel_futures`` cancels what has not started."""
        self._lifecycle.shutdown(wait, cancel_futures)


Executor = ProcessPoolExecutor


def _process_transport(
    max_workers: int,
    method: str,
    initializer: Callable[..., Any] | None,
    initargs: tuple[Any, ...],
    preload: Iterable[str],
    max_memory: int | None,
) -> ProcessTransport:
    """The shared-memory process transport, with each worker's setup."""
    initializer_and_args = (initializer, initargs)
    inherits = method == "fork"  # a forked worker has the initializer in its memory
    setup = parent_setup(method)
    setup.max_memory = max_memory

    def make_setup() -> bytes:
        if not inherits:
            setup.initializer = dumps_for_worker(initializer_and_args)
        setup.identity = (next_process_number(),)
        return protocol.dumps(setup)

    launcher = Launcher(method, tuple(preload), initializer_and_args if inherits else (None, ()))
    return ProcessTransport(max_workers, launcher, make_setup)
