"""``gilfree.Pool``: ``multiprocessing.Pool``'s API and semantics on gilfree's engine.

Same constructor, methods, result objects and exceptions as ``multiprocessing.Pool``; what
differs is underneath (see ``gilfree.executor``): shared-memory rings instead of pipes and three
handler threads, functions sent once per worker and by value when they cannot be imported
(lambdas and closures work), workers forked from the zygote, and ``chunksize=None`` meaning
chunks sized from measured task durations.

Where gilfree does better than the stdlib, on purpose:

* a worker that dies fails only the tasks it was running, with ``WorkerCrashedError``, and is
  replaced (the stdlib's results never become ready);
* ``imap``/``imap_unordered`` read their input only as workers need it and stop reading while
  the caller is a window of chunks behind: an endless generator runs in bounded memory;
* ``terminate()`` fails the results still outstanding with ``CancelledError`` instead of
  leaving them unready forever;
* an exception in a callback is printed and the pool keeps going (it stops the stdlib's result
  thread).
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import CancelledError
from concurrent.futures.process import _RemoteTraceback
from multiprocessing import TimeoutError as MultiprocessingTimeoutError
from multiprocessing.pool import (  # type: ignore[attr-defined]  # not in typeshed
    MaybeEncodingError,
    RemoteTraceback,
)
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from gilfree import _core
from gilfree._engine import mapping as _mapping
from gilfree._engine.aio import AsyncMapIterator
from gilfree._engine.chunking import checked_chunksize
from gilfree._engine.progress import start as start_progress
from gilfree._engine.units import NO_LIMITS, READ_AHEAD_CHUNKS_PER_WORKER, Chunk, MapJob
from gilfree._wire.serialization import is_result_error
from gilfree.errors import SerializationError, UnpicklableExceptionError
from gilfree.executor import (
    ProcessPoolExecutor,
    checked_initargs,
    refuse_process_options,
    resolve_backend,
    resolve_start_method,
    start_method_for_initargs,
    usable_cpu_count,
)

if TYPE_CHECKING:
    from gilfree._engine.engine import Engine
    from gilfree._engine.future import Future

__all__ = [
    "ApplyResult",
    "AsyncResult",
    "IMapIterator",
    "IMapUnorderedIterator",
    "MapResult",
    "Pool",
]

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"


def _pool_error(error: BaseException) -> BaseException:
    """A worker's exception as ``multiprocessing.Pool`` raises it: a result or an exception that
    could not be sent becomes ``MaybeEncodingError``, an argument that could not be sent raises
    pickle's own error (with gilfree's explanation as a note), and the remote traceback is
    multiprocessing's type."""
    if is_result_error(error):  # the value's repr, as the stdlib shows the result itself
        shown = getattr(error, "value_repr", None) or getattr(error, "path", "result")
        encoding_error: BaseException = MaybeEncodingError(error, _AsRepr(str(shown)))
        return encoding_error
    if isinstance(error, UnpicklableExceptionError):  # as the stdlib's pool reports it
        unsent: BaseException = MaybeEncodingError(error.reason, f"{error.type_name}: {error.text}")
        unsent.__cause__ = error.__cause__
        return unsent
    if isinstance(error, SerializationError) and error.__cause__ is not None:
        original = error.__cause__
        original.add_note(str(error))
        return original
    cause = error.__cause__
    if type(cause) is _RemoteTraceback:
        error.__cause__ = RemoteTraceback(cause.tb)
    return error


class _AsRepr:
    """Text that ``repr`` gives as it is (``MaybeEncodingError`` shows its value's repr)."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __repr__(self) -> str:
        return self._text


def _report_callback_error(kind: str) -> None:
    sys.stderr.write(f"Exception in a gilfree.Pool {kind}:\n")
    traceback.print_exc()


_S = TypeVar("_S")
_T = TypeVar("_T")
_P = ParamSpec("_P")
#: ``progress=``, ``total=`` and the input whose length is the total.
_Shown = tuple[Any, "int | None", Any]


class ApplyResult(Generic[_T]):
    """The result of ``apply_async``: ``get``, ``wait``, ``ready``, ``successful``.

    ``callback`` (with the result) or ``error_callback`` (with the exception) runs in the
    thread that collects results, before ``ready()`` turns true.
    """

    def __init__(
        self,
        engine: Engine,
        callback: Callable[[_T], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        self._engine = engine
        self._callback = callback
        self._error_callback = error_callback
        self._event = threading.Event()
        self._success: bool | None = None
        self._value: Any = None

    def _watch(self, future: Future[_T]) -> None:
        future.add_done_callback(self._future_done)

    def _future_done(self, future: concurrent.futures.Future[Any]) -> None:
        if future.cancelled():
            self._set(False, CancelledError("the pool was terminated before the task ran"))
            return
        error = future.exception(timeout=0)
        if error is None:
            self._set(True, future.result(timeout=0))
        else:
            self._set(False, _pool_error(error))

    def _set(self, success: bool, value: Any) -> None:
        self._success, self._value = success, value
        try:
            if success and self._callback is not None:
                self._callback(value)
            elif not success and self._error_callback is not None:
                self._error_callback(value)
        except Exception:  # noqa: BLE001 - a callback's error must not stop the pool
            _report_callback_error("callback" if success else "error_callback")
        finally:
            self._event.set()

    def ready(self) -> bool:
        """Whether the call has completed (its callback has run)."""
        return self._event.is_set()

    def successful(self) -> bool:
        """Whether the call completed without raising; ValueError if it is not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return bool(self._success)

    def wait(self, timeout: float | None = None) -> None:
        """Waits until the result is ready, or ``timeout`` seconds."""
        if not self._event.is_set():
            self._engine.pump_role.wait_until(self._event.is_set, timeout)

    def get(self, timeout: float | None = None) -> _T:
        """The result; raises the call's exception, or ``multiprocessing.TimeoutError`` if it
        is not ready within ``timeout`` seconds."""
        self.wait(timeout)
        if not self.ready():
            raise MultiprocessingTimeoutError
        if self._success:
            return self._value  # type: ignore[no-any-return] # set with the call's result
        raise self._value


AsyncResult = ApplyResult


class MapResult(ApplyResult[list[_T]]):
    """The result of ``map_async``/``starmap_async``: ready when every item has run; the
    result is the list of results in input order, or the first failing item's exception."""

    def __init__(
        self,
        engine: Engine,
        callback: Callable[[list[_T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        super().__init__(engine, callback, error_callback)
        self._job: MapJob | None = None
        self._lock = threading.Lock()
        self._chunks_done = 0
        self._decided = False

    def _start(self, job: MapJob) -> None:
        """Called once ``job`` (made with ``on_progress=self._job_progressed``) is queued, or
        found to have nothing to run."""
        with self._lock:
            self._job = job
        self._job_progressed(None)

    def _job_progressed(self, chunk: Chunk | None) -> None:
        with self._lock:
            if chunk is not None:
                self._chunks_done += 1
            job = self._job
            if job is None:
                return  # chunks may end before _start: it looks again
            cut = len(job.chunks) + len(job.tail_chunks)
            if self._decided or not job.exhausted() or self._chunks_done < cut:
                return
            self._decided = True
        chunks = job.chunks + job.tail_chunks[::-1]  # input order
        for chunk_in_order in chunks:
            failure = chunk_in_order.first_failure()
            if failure is not None:
                self._set(False, _pool_error(failure[1]))
                return
        if job.failure is not None:
            self._set(False, job.failure)
            return
        results: list[Any] = []
        for chunk_in_order in chunks:
            results.extend(chunk_in_order.results)
            chunk_in_order.results = []
        self._set(True, results)


class IMapIterator(Generic[_T]):
    """The iterator ``imap`` returns: results in input order. ``next(timeout)`` raises
    ``multiprocessing.TimeoutError`` if the next result is not ready in time. An item whose call
    raised raises that exception in its turn; iteration then goes on with the next item."""

    #: The job read (set by ``_follow``, before the job is queued).
    _job: MapJob

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._chunk: Chunk | None = None
        self._chunk_index = 0
        self._offset = 0
        self._failures: list[tuple[int, BaseException]] = []
        self._finished = False

    def on_progress(self) -> Callable[[Chunk | None], None] | None:
        """What the job this reader follows calls as its chunks end: nothing, in order."""
        return None

    def _follow(self, job: MapJob) -> None:
        """Reads ``job`` (made with ``on_progress()``), before it is queued."""
        self._job = job

    def __iter__(self) -> IMapIterator[_T]:
        return self

    def next(self, timeout: float | None = None) -> _T:
        """The next result (see the class docstring)."""
        while True:
            if self._finished:
                raise StopIteration
            if self._chunk is None:
                self._take_chunk(timeout)
                continue
            chunk = self._chunk
            if self._failures and self._failures[0][0] == self._offset:
                _, error = self._failures.pop(0)
                if self._offset < len(chunk.results):
                    self._offset += 1  # the failed item's place holder
                raise _pool_error(error)
            if self._offset < len(chunk.results):
                value: _T = chunk.results[self._offset]
                chunk.results[self._offset] = None  # released once taken
                self._offset += 1
                return value
            self._next_chunk()

    __next__ = next  # as the stdlib's: ``it.__next__(timeout)`` works too

    def _take_chunk(self, timeout: float | None) -> None:
        job = self._job
        if job.chunk_count() == self._chunk_index:
            self._finished = True
            return
        try:
            chunk = self._wait(timeout)
        except MultiprocessingTimeoutError:
            raise
        except BaseException:
            self._finished = True  # the input's own error, after the items before it
            raise
        self._chunk, self._offset, self._failures = chunk, 0, list(chunk.failures)

    def _wait(self, timeout: float | None) -> Chunk:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            role = self._engine.pump_role
            return _mapping.wait_for_chunk(role, self._job, self._chunk_index, deadline)
        except TimeoutError:
            raise MultiprocessingTimeoutError from None

    def _next_chunk(self) -> None:
        self._chunk = None
        self._chunk_index += 1
        self._job.consumed = self._chunk_index
        self._engine.resume(self._job)

    def __del__(self) -> None:
        job = getattr(self, "_job", None)
        if job is not None and not self._finished and not job.exhausted():
            job.stop(CancelledError("the imap iterator was dropped"))
            self._engine.resume(job)


class _Completed:
    """The chunks of an ``imap_unordered`` job that ended and were not read yet: what the job
    reports to. The job holds this, never the iterator, so an iterator nobody refers to any
    more (``break`` out of its loop) is freed at once and its ``__del__`` stops the job."""

    __slots__ = ("chunks", "lock")

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.lock = threading.Lock()

    def progressed(self, chunk: Chunk | None) -> None:
        if chunk is not None:
            with self.lock:
                self.chunks.append(chunk)


class IMapUnorderedIterator(IMapIterator[_T]):
    """The iterator ``imap_unordered`` returns: results as they complete (a chunk's results
    together, in their input order)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._completed = _Completed()

    def on_progress(self) -> Callable[[Chunk | None], None] | None:
        """Completed chunks are queued for reading as they end."""
        return self._completed.progressed

    def _wait(self, timeout: float | None) -> Chunk:
        completed = self._completed

        def ready() -> bool:
            return bool(completed.chunks) or (
                self._job.failure is not None and self._job.finished()
            )

        if not self._engine.pump_role.wait_until(ready, timeout):
            raise MultiprocessingTimeoutError
        with completed.lock:
            if completed.chunks:
                return completed.chunks.pop(0)
        assert self._job.failure is not None
        raise self._job.failure


class Pool:
    """A pool of worker processes with ``multiprocessing.Pool``'s API (see the module
    docstring).

    Args:
        processes: number of workers; default the CPUs this process may use, as the stdlib's
            (``os.process_cpu_count()`` from Python 3.13).
        initializer: called in each worker with ``*initargs`` before its first task.
        initargs: arguments for ``initializer``.
        maxtasksperchild: a worker exits after this many tasks and is replaced.
        context: a multiprocessing context (or start-method name) choosing how workers start:
            ``"fork"`` and ``"spawn"`` as in multiprocessing; ``"forkserver"`` and the default
            use gilfree's zygote, so workers do not inherit the parent's memory (pass what
            they need as arguments or ``initargs``).
        backend: ``"process"`` (default), ``"thread"`` (threads of this process, like
            ``multiprocessing.pool.ThreadPool``: no ``maxtasksperchild`` or ``context``) or
            ``"auto"``; see ``gilfree.executor``.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        backend: str = "process",
    ) -> None:
        self._state = RUN  # first: __del__ reads it even if the checks below raise
        if processes is None:
            processes = usable_cpu_count()
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if processes > _core.MAX_WORKERS:
            raise ValueError(
                f"Number of processes must be at most {_core.MAX_WORKERS} (gilfree's limit),"
                f" got {processes}"
            )
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        initargs = checked_initargs(initargs)
        if resolve_backend(backend) == "thread":
            refuse_process_options(maxtasksperchild=maxtasksperchild, context=context)
            method = "thread"
        else:
            method, chosen = resolve_start_method(context, None)
            method = start_method_for_initargs(method, chosen, initializer, initargs)
        self._ctx = context
        executor = ProcessPoolExecutor.__new__(ProcessPoolExecutor)
        executor._start(  # noqa: SLF001 - the executor is Pool's engine room
            processes,
            method,
            initializer,
            initargs,
            maxtasksperchild,
            (),
            eager=True,
        )
        self._adopt(executor, processes)

    def _adopt(self, executor: ProcessPoolExecutor, processes: int) -> None:
        """Runs this pool on ``executor``'s engine (a cluster's pool hands its own)."""
        self._processes = processes
        self._executor = executor
        self._engine: Engine = executor._engine  # noqa: SLF001 - the executor is Pool's engine room
        self._lifecycle = executor._lifecycle  # noqa: SLF001
        self._lifecycle.terminate_at_exit = True  # as multiprocessing's pool finalizer does
        self._engine.fill()

    def __repr__(self) -> str:
        name = f"{type(self).__module__}.{type(self).__qualname__}"
        return f"<{name} state={self._state} pool_size={self._processes}>"

    def _repopulate_pool(self) -> None:
        """multiprocessing's private method: starts workers on empty slots (gilfree does it
        on its own as workers end)."""
        self._engine.fill()

    @property
    def _pool(self) -> list[Any]:
        """multiprocessing's private list of worker processes (some code reads their pids)."""
        return self._engine.worker_handles()

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    # -- single calls -----------------------------------------------------------------------

    def apply(
        self, func: Callable[..., _T], args: Iterable[Any] = (), kwds: dict[str, Any] | None = None
    ) -> _T:
        """``func(*args, **kwds)`` in a worker; waits for and returns its result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., _T],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callable[[_T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> ApplyResult[_T]:
        """Schedules ``func(*args, **kwds)``; returns an ``AsyncResult``."""
        self._check_running()
        result = ApplyResult(self._engine, callback, error_callback)
        kwds = {} if kwds is None else kwds  # never truth-tested: it may be any mapping
        try:
            call = self._executor.submit(func, *args, **kwds)
        except TypeError:
            # ``args`` not iterable or ``kwds`` not a mapping: as the stdlib's worker calling
            # ``func(*args, **kwds)`` fails, the result fails (error_callback and all).
            refused = _call_error(func, args, kwds)
            if refused is None:
                raise
            result._set(False, refused)  # noqa: SLF001
            return result
        result._watch(call)  # noqa: SLF001
        return result

    # -- maps -------------------------------------------------------------------------------

    def _job(
        self,
        func: Callable[..., Any],
        items: Any,
        star: bool,
        chunksize: int | None,
        window: int | None,
        on_progress: Callable[[Chunk | None], None] | None,
        shown: _Shown,
    ) -> MapJob:
        """A map job over ``items`` (``shown``: the ``progress=`` and ``total=`` asked for, and
        the input their total is read from), once every argument is checked."""
        self._check_running()
        chunksize = checked_chunksize(chunksize, "Chunksize must be 1+, not {chunksize:n}")
        function = self._engine.function(func)
        sizer = self._executor._sizer(chunksize)  # noqa: SLF001 - sized as the executor sizes
        progress, total, counted = shown
        counter = start_progress(progress, (counted,), total)
        return MapJob(func, function, items, star, sizer, window, NO_LIMITS, on_progress, counter)

    def _map_async(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Any],
        star: bool,
        chunksize: int | None,
        callback: Callable[[list[_T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        progress: Any = False,
        total: int | None = None,
    ) -> MapResult[_T]:
        self._check_running()
        result = MapResult(self._engine, callback, error_callback)
        ended = result._job_progressed  # noqa: SLF001 - the job reports to its reader
        items = _mapping.snapshot(iterable)
        job = self._job(func, items, star, chunksize, None, ended, (progress, total, items))
        self._executor._submit_job(job)  # noqa: SLF001
        result._start(job)  # noqa: SLF001
        return result

    def map(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        *,
        progress: Any = False,
        total: int | None = None,
    ) -> list[_T]:
        """``[func(x) for x in iterable]``, run in the workers. ``chunksize=None`` sizes chunks
        from measured task durations. ``progress=True`` shows a tqdm bar of the items done (a
        tqdm class, or a callable ``(done, total)``, gets the count instead); ``total`` is the
        bar's total where the input has no ``len()``."""
        return self._map_async(func, iterable, False, chunksize, None, None, progress, total).get()

    def map_async(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        progress: Any = False,
        total: int | None = None,
    ) -> MapResult[_T]:
        """Like ``map``, returning a ``MapResult`` at once."""
        return self._map_async(
            func, iterable, False, chunksize, callback, error_callback, progress, total
        )

    def starmap(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        progress: Any = False,
        total: int | None = None,
    ) -> list[_T]:
        """``[func(*args) for args in iterable]``, run in the workers; ``progress`` and
        ``total`` as in ``map``."""
        return self._map_async(func, iterable, True, chunksize, None, None, progress, total).get()

    def starmap_async(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        progress: Any = False,
        total: int | None = None,
    ) -> MapResult[_T]:
        """Like ``starmap``, returning a ``MapResult`` at once."""
        return self._map_async(
            func, iterable, True, chunksize, callback, error_callback, progress, total
        )

    def _imap(
        self,
        iterator_class: type[IMapIterator[_T]],
        func: Callable[..., _T],
        iterable: Iterable[Any],
        chunksize: int | None,
        shown: _Shown,
    ) -> IMapIterator[_T]:
        self._check_running()
        window = READ_AHEAD_CHUNKS_PER_WORKER * self._processes
        results = iterator_class(self._engine)
        progress, total, _ = shown
        job = self._job(
            func,
            iter(iterable),
            False,
            chunksize,
            window,
            results.on_progress(),
            (progress, total, iterable),
        )
        results._follow(job)  # noqa: SLF001
        self._executor._submit_job(job)  # noqa: SLF001
        return results

    def imap(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        *,
        progress: Any = False,
        total: int | None = None,
    ) -> IMapIterator[_T]:
        """Lazy ``map``: an iterator of results in input order. The input is read as workers
        need it, so it may be endless. ``chunksize=None`` sizes chunks adaptively;
        ``progress`` and ``total`` as in ``map``."""
        return self._imap(IMapIterator, func, iterable, chunksize, (progress, total, iterable))

    def imap_unordered(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        *,
        progress: Any = False,
        total: int | None = None,
    ) -> IMapIterator[_T]:
        """Like ``imap``, but results come in the order they complete."""
        shown = (progress, total, iterable)
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize, shown)

    # -- asyncio ----------------------------------------------------------------------------

    def run(
        self, func: Callable[_P, _T], /, *args: _P.args, **kwds: _P.kwargs
    ) -> Coroutine[Any, Any, _T]:
        """``func(*args, **kwds)`` in a worker, awaited: ``apply`` for coroutines, with its
        errors, never blocking the event loop. Cancelling the awaiting task cancels a call not
        yet started; a running one finishes and its result is dropped (see ``run_with``)."""
        return self.run_with(func, args, kwds)

    def run_with(
        self,
        func: Callable[..., _T],
        /,
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        *,
        kill_on_cancel: bool = False,
    ) -> Coroutine[Any, Any, _T]:
        """``run`` with ``kill_on_cancel``: cancelling the awaiting task while the call runs
        kills its worker (a fresh one replaces it) instead of letting the call finish. Process
        backend only."""
        self._check_running()
        kwds = {} if kwds is None else kwds
        return self._run(self._executor.run_with(func, args, kwds, kill_on_cancel=kill_on_cancel))

    @staticmethod
    async def _run(awaited: Coroutine[Any, Any, _T]) -> _T:
        try:
            return await awaited
        except Exception as error:  # noqa: BLE001 - raised as the blocking API raises it
            raise _pool_error(error)  # noqa: B904 - the same exception, or its pool form

    def amap(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        *,
        ordered: bool = True,
        progress: Any = False,
        total: int | None = None,
    ) -> AsyncMapIterator[_T]:
        """``imap`` (or with ``ordered=False``, ``imap_unordered``) for ``async for``: the input
        is read as workers need it, at most a few chunks per worker ahead of the reader. The
        first failing item raises its exception, as ``imap`` raises it, and ends the
        iteration; leaving the loop early or ``aclose()`` stops the work not yet started.
        ``progress`` and ``total`` as in ``map``."""
        self._check_running()
        reader: AsyncMapIterator[_T] = AsyncMapIterator(self._engine, ordered, _pool_error)
        items, star = _mapping.lazy((iterable,))
        window = READ_AHEAD_CHUNKS_PER_WORKER * self._processes
        shown = (progress, total, iterable)

        def start(reader: AsyncMapIterator[_T]) -> None:
            job = self._job(func, items, star, chunksize, window, reader.on_progress(), shown)
            reader.follow(job)
            self._executor._submit_job(job)  # noqa: SLF001

        reader.begin(start, self._engine.transport.encoding_wait())
        return reader

    async def __aenter__(self) -> Pool:
        self._check_running()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """As ``__exit__``: ``terminate()``, run in a thread."""
        import asyncio

        await asyncio.to_thread(self.terminate)

    async def ashutdown(self) -> None:
        """``close()`` then ``join()``, the waiting done in a thread, never in the event
        loop's: the outstanding work finishes, then the workers exit."""
        import asyncio

        self.close()
        await asyncio.to_thread(self.join)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Accepts no more work; the workers exit once the outstanding work is done."""
        if self._state == RUN:
            self._engine.start_deferred()  # amaps made before: started while the pool runs
            self._state = CLOSE
            self._lifecycle.shutdown(wait=False, cancel_futures=False)

    def terminate(self) -> None:
        """Stops the workers now: outstanding results fail with ``CancelledError``."""
        self._state = TERMINATE
        self._lifecycle.terminate(CancelledError("the pool was terminated"))

    def join(self) -> None:
        """Waits for the workers to exit; call ``close()`` or ``terminate()`` first."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        self._lifecycle.shutdown(wait=True, cancel_futures=False)

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def __reduce__(self) -> Any:
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_state", None) == RUN and hasattr(self, "_engine"):
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)


def _call_error(func: Any, args: Any, kwds: Any) -> TypeError | None:
    """The ``TypeError`` Python raises for ``func(*args, **kwds)`` when ``args`` is not
    iterable or ``kwds`` not a mapping (None when both are fine)."""
    name = _function_str(func)
    try:
        iter(args)
    except TypeError:
        return TypeError(f"{name} argument after * must be an iterable, not {type(args).__name__}")
    if not (hasattr(kwds, "keys") and hasattr(kwds, "__getitem__")):
        return TypeError(f"{name} argument after ** must be a mapping, not {type(kwds).__name__}")
    return None


def _function_str(func: Any) -> str:
    """How Python's call errors name ``func``: ``module.qualname()`` (``qualname()`` for
    builtins), or ``str(func)`` for a callable without a qualified name."""
    try:
        qualname = func.__qualname__
    except AttributeError:
        return str(func)
    module = getattr(func, "__module__", None)
    if isinstance(module, str) and module != "builtins":
        return f"{module}.{qualname}()"
    return f"{qualname}()"
