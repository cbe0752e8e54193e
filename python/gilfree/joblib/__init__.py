"""joblib on gilfree: ``with joblib.parallel_config(backend="gilfree"):``.

Importing this module registers the backend (``register()`` does it again, harmlessly). Inside
that block, ``joblib.Parallel`` and scikit-learn's ``n_jobs`` run their batches on a
``gilfree.ProcessPoolExecutor``: workers forked from the zygote (so they start in milliseconds,
with your main script already loaded), lambdas and ``__main__`` functions sent by value, numpy
arrays and pandas frames in gilfree's codec instead of pickle.

The backend follows joblib's contract (checked against joblib 1.4, 1.5 and 1.6):

* ``Parallel`` calls ``submit(func, callback)`` once per batch; joblib sizes the batches itself
  (``AutoBatchingMixin``, capped at ``MAX_AUTO_BATCH`` tasks), and gilfree does not cut them
  again. The callback runs in the thread that collects results, on success and on failure,
  and may submit the next batch from there.
* ``supports_retrieve_callback``: ``return_as="generator"``, ``"generator_unordered"`` and
  ``timeout`` work.
* ``abort_everything`` (a task raised) cancels the batches not started and kills the workers
  running the others; the backend stays usable for the next ``Parallel`` call of the same
  ``with`` block, as scikit-learn's searches need. A worker that dies under a batch fails it
  with ``gilfree.WorkerCrashedError`` (a ``BrokenProcessPool``), not joblib's
  ``TerminatedWorkerError``; its message names the batch by its first task's function.
* ``n_jobs=1`` falls back to joblib's sequential backend; ``n_jobs=-1`` is every CPU.
* Arrays larger than ``max_nbytes`` are shared once per call, and ``np.memmap`` files are
  reopened by name in the workers (``gilfree.joblib.arrays``), with ``mmap_mode`` as joblib
  documents it.
* Workers hold the thread pools of BLAS and OpenMP to ``inner_max_num_threads``, else
  ``cpu_count() // n_jobs`` (``gilfree.joblib.threads``).
* One executor serves the ``Parallel`` calls made with the same backend instance (one
  ``parallel_config`` block) while they ask for the same number of workers; it shuts down when
  the instance is collected, or at exit.
* Importing this module in a script's main process starts gilfree's template process (the
  zygote, which imports the script's modules once, and this module with joblib: every worker
  runs joblib's batches) in the background, so that the first ``Parallel`` call finds it booted
  instead of waiting for those imports, and its workers do not import joblib each.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

try:
    import joblib
    from joblib._parallel_backends import (  # joblib's backend API lives here
        AutoBatchingMixin,
        FallbackToBackend,
        ParallelBackendBase,
        SequentialBackend,
    )
    from joblib.disk import memstr_to_bytes
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "gilfree.joblib needs joblib: pip install joblib (or gilfree[joblib])"
    ) from error

from gilfree._workers import zygote as _zygote

#: What the workers' template process imports besides the main script: this module, and so
#: joblib (about 75 ms that each worker would spend at its first batch).
PRELOAD = (__name__,)
# The workers' template process boots while the script goes on (imports, loading data), so
# the first Parallel call finds it ready; nothing starts in gilfree's or multiprocessing's
# own child processes. Started before this module imports the rest of what it needs, which
# the template does not: the executor is imported by the first ``configure``.
_zygote.prestart(PRELOAD)

from gilfree._wire.serialization import explain  # noqa: E402 - after the template's start
from gilfree.joblib.threads import limit_threads  # noqa: E402 - after the template's start

if TYPE_CHECKING:
    from gilfree.executor import ProcessPoolExecutor
    from gilfree.joblib.arrays import CallArrays

#: The ``mmap_mode`` values joblib documents.
MMAP_MODES = (None, "r", "r+", "w+", "c")

__all__ = ["BACKEND_NAME", "GilfreeBackend", "register"]

#: The name to give ``joblib.parallel_config(backend=...)``.
BACKEND_NAME = "gilfree"
#: Most tasks joblib's auto-batching puts in one batch (a ``batch_size`` given to ``Parallel``
#: is kept as it is). joblib doubles the batches of short tasks until one takes 0.2 s: 16 384
#: calls of ``abs`` at the end of a 100 000-task call. Past a few hundred tasks a batch saves
#: nothing more of gilfree's cost per batch (about 50 µs, joblib's included), but the tasks
#: joblib generates for a batch all live until it is sent: with numpy and pandas loaded, tasks
#: that live that long reach the collector's oldest generation and set off full collections
#: of the parent (20 ms each, three per such call). At 512, tasks are freed young, and those
#: 100 000 calls took 224-226 ms instead of 246-266.
MAX_AUTO_BATCH = 512
#: How long joblib's result loop sleeps when the batch it waits for has not ended.
JOBLIB_POLL_SECONDS = 0.01


class GilfreeBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's ``ParallelBackendBase`` on a gilfree executor (see the module docstring)."""

    supports_retrieve_callback = True
    supports_timeout = True
    supports_inner_max_num_threads = True
    uses_threads = False
    supports_sharedmem = False

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        # joblib 1.4's base class takes no other keyword arguments; 1.5+ keeps them as
        # ``backend_kwargs``, as this does for every version.
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        #: What ``parallel_config`` passed beyond joblib's own arguments.
        self.backend_kwargs: dict[str, Any] = dict(kwargs)
        self._executor: ProcessPoolExecutor | None = None
        #: What the executor was made for: worker count, thread limits, initializer.
        self._made_for: _MadeFor | None = None
        #: The current call's array settings, and its shared arrays once numpy is loaded.
        self._array_settings: tuple[int, str | None] | None = None
        self._arrays: CallArrays | None = None
        self._arrays_lock = threading.Lock()
        #: Set when a batch of the current call ends (see ``retrieval_context``).
        self._batch_ended = threading.Event()
        self._submitted = False

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """How many workers ``n_jobs`` means: -1 every CPU, -2 all but one, and so on."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(int(joblib.cpu_count()) + 1 + n_jobs, 1)
        return int(n_jobs)

    def configure(
        self,
        n_jobs: int | None = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **backend_kwargs: Any,
    ) -> int:
        """Readies an executor of ``n_jobs`` workers for one ``Parallel`` call and reads its
        ``max_nbytes`` and ``mmap_mode``; returns the number of workers. One worker means
        joblib's sequential backend."""
        workers = self.effective_n_jobs(n_jobs)
        if workers == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        settings = {**self.backend_kwargs, **backend_kwargs}  # parallel_config's, Parallel's
        self._array_settings = _array_settings(
            settings.get("max_nbytes", "1M"), settings.get("mmap_mode", "r")
        )
        self.parallel = parallel
        self._batch_ended = threading.Event()
        self._submitted = False
        environment = self._prepare_worker_env(n_jobs=workers)
        initializer = settings.get("initializer")
        initargs = tuple(settings.get("initargs", ()))
        made_for = _MadeFor(workers, tuple(sorted(environment.items())), initializer, initargs)
        if self._executor is None or not made_for.same_as(self._made_for):
            if self._executor is not None:
                # Without waiting: a call of this block may still be running on it (a
                # generator not read to its end). Its batches in flight end there; its next
                # ones go to the new executor. The old workers exit once their work is done.
                self._executor.shutdown(wait=False)
            from gilfree.executor import ProcessPoolExecutor  # the template does without it

            self._executor = ProcessPoolExecutor(
                workers,
                initializer=_start_worker,
                initargs=(environment, initializer, initargs),
                preload=PRELOAD,
            )
            self._made_for = made_for
        return workers

    def compute_batch_size(self) -> int:
        """joblib's auto-batching size, at most ``MAX_AUTO_BATCH`` tasks. The cap is kept as
        the mixin's current size, so it goes on measuring batches of that size (and shrinks
        them, should the tasks get slow)."""
        size = int(super().compute_batch_size())
        if size > MAX_AUTO_BATCH:
            self._effective_batch_size = size = MAX_AUTO_BATCH
        return size

    def submit(self, func: Any, callback: Any = None) -> Any:
        """Runs one joblib batch; ``callback`` (joblib's) gets the future once it is done."""
        assert self._executor is not None, "submit before configure"
        self._submitted = True
        arrays = self._call_arrays()
        # Errors (a crash, a timeout) name the user's function, not the batch runner's.
        label = _batch_label(func)
        future: Any
        if arrays is None:
            # The batch travels as an argument, not as the function: its arrays then go out of
            # band through shared buffers, and the worker does not cache a one-off function.
            future = self._executor._submit_labelled(label, _run_batch, func)  # noqa: SLF001
        else:
            try:
                data, buffers = arrays.dumps(func)
            except Exception as error:  # noqa: BLE001 - the batch's failure, as loky reports it
                future = Future()
                # Named down to the argument: the batch's items are (function, args, kwargs).
                future.set_exception(explain({"batch": getattr(func, "items", func)}, error))
            else:
                future = self._executor._submit_labelled(  # noqa: SLF001 - gilfree's own
                    label, _run_pickled_batch, data, buffers
                )
        if callback is not None:
            future.add_done_callback(callback)
        ended = self._batch_ended
        future.add_done_callback(lambda _: ended.set())  # after joblib's callback
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

    @contextlib.contextmanager
    def retrieval_context(self) -> Iterator[None]:
        """Entered by ``Parallel`` before it collects results: waits until a batch of the call
        has ended. joblib's result loop sleeps 10 ms whenever the batch it waits for has not
        ended, so looking first when one has spares a short call that sleep (a 2-task call
        took 11 ms instead of 1). With a ``timeout``, which joblib counts once its loop runs,
        at most that sleep: waiting the whole timeout here made it fire after twice its time.
        A call that submitted nothing (its iterable empty, or failing at once) has nothing to
        wait for."""
        if self._submitted:
            timeout = getattr(self.parallel, "timeout", None)
            self._batch_ended.wait(None if timeout is None else min(timeout, JOBLIB_POLL_SECONDS))
        yield

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancels the batches not started and kills the workers running the others (their
        futures fail with ``CancelledError``); the executor stays usable."""
        if self._executor is not None:
            self._executor._abort()  # noqa: SLF001 - gilfree's own executor
        self._end_call()

    def terminate(self) -> None:
        """End of a ``Parallel`` call: its shared arrays are released; the executor is kept
        for the next call."""
        self._end_call()
        self.reset_batch_stats()

    def _call_arrays(self) -> CallArrays | None:
        """The call's ``CallArrays``, made when first needed; None while numpy is not loaded
        (no array can be sent) or when sharing is off."""
        if self._arrays is not None or "numpy" not in sys.modules:
            return self._arrays
        from gilfree.joblib.arrays import CallArrays

        with self._arrays_lock:
            if self._arrays is None and self._array_settings is not None:
                self._arrays = CallArrays(*self._array_settings)
        return self._arrays

    def _end_call(self) -> None:
        with self._arrays_lock:
            arrays, self._arrays = self._arrays, None
        if arrays is not None:
            arrays.close()


def _array_settings(max_nbytes: Any, mmap_mode: Any) -> tuple[int, str | None]:
    """``(bytes from which an array is shared, mmap_mode)``, from ``Parallel``'s arguments."""
    if max_nbytes is None:
        limit = sys.maxsize  # sharing off; memmaps are still reopened by name
    elif isinstance(max_nbytes, str):
        try:
            limit = memstr_to_bytes(max_nbytes)
        except (ValueError, KeyError, IndexError):
            raise ValueError(
                f"max_nbytes must be a number of bytes or a size such as '1M', got {max_nbytes!r}"
            ) from None
    elif (
        isinstance(max_nbytes, int | float)
        and not isinstance(max_nbytes, bool)
        and 0 <= max_nbytes < math.inf
    ):
        limit = int(max_nbytes)  # 1e6 too, as loky takes it
    else:
        raise ValueError(
            f"max_nbytes must be a number of bytes (0 or more), a size such as '1M' or None, "
            f"got {max_nbytes!r}"
        )
    if mmap_mode not in MMAP_MODES:
        raise ValueError(
            f"mmap_mode must be one of {', '.join(map(repr, MMAP_MODES))}, got {mmap_mode!r}"
        )
    return limit, mmap_mode


@dataclass(frozen=True)
class _MadeFor:
    """What an executor's workers were started with."""

    workers: int
    environment: tuple[tuple[str, str], ...]
    initializer: Any
    initargs: tuple[Any, ...]

    def same_as(self, other: _MadeFor | None) -> bool:
        """Whether ``other`` starts workers the same way. The initializer and its arguments
        are compared by identity: a user's objects may not compare, or compare equal while
        different."""
        return (
            other is not None
            and (self.workers, self.environment) == (other.workers, other.environment)
            and self.initializer is other.initializer
            and len(self.initargs) == len(other.initargs)
            and all(mine is theirs for mine, theirs in zip(self.initargs, other.initargs))
        )


def _start_worker(environment: dict[str, str], initializer: Any, initargs: tuple[Any, ...]) -> None:
    """A worker's initializer: joblib's thread limits, functions of the main script sent by
    value by a nested call (``_main_by_value``), then the user's initializer if any
    (``parallel_config(initializer=..., initargs=...)`` or ``Parallel``'s)."""
    limit_threads(environment)
    _main_by_value()
    if initializer is not None:
        initializer(*initargs)


def _main_by_value() -> None:
    """Has joblib's cloudpickle send the functions and classes of the main script by value, as
    it does from the main process. Here the script is ``__mp_main__``, which cloudpickle sends
    by name, and a nested ``Parallel`` on loky starts processes where that name is loky's own
    entry module: ``Can't get attribute 'f' on <module ...popen_loky_posix>``."""
    main = sys.modules.get("__mp_main__")
    if main is None:
        return
    import cloudpickle  # joblib's from 1.6; before, joblib.externals had its own copy

    picklers = [cloudpickle]
    with contextlib.suppress(ImportError):
        from joblib.externals import cloudpickle as vendored

        picklers.append(vendored)
    for pickler in picklers:
        pickler.register_pickle_by_value(main)


def _batch_label(batch: Any) -> Callable[[], str] | None:
    """What error messages call ``batch``, made only when one needs it (see
    ``_describe_batch``); None for a batch not made of joblib's ``(function, args, kwargs)``."""
    items = getattr(batch, "items", None)
    if type(items) is not list or not items or type(items[0]) is not tuple or not items[0]:
        return None
    return functools.partial(_describe_batch, items[0][0], len(items))


def _describe_batch(first: Any, count: int) -> str:
    """``a joblib batch of 1 task: __main__.f``, or ``of 12 tasks starting with`` it."""
    from gilfree._engine.units import function_name

    if count == 1:
        return f"a joblib batch of 1 task: {function_name(first)}"
    return f"a joblib batch of {count} tasks starting with {function_name(first)}"


def _run_batch(batch: Any) -> Any:
    """Runs one joblib batch (a ``BatchedCalls``) in a worker."""
    return batch()


def _run_pickled_batch(data: bytes, buffers: list[Any]) -> Any:
    """Runs a batch that ``CallArrays.dumps`` pickled, in a worker."""
    from gilfree.joblib.arrays import loads

    return loads(data, buffers)()


def register() -> None:
    """Registers the backend as ``"gilfree"`` with joblib (again, if already done)."""
    joblib.register_parallel_backend(BACKEND_NAME, GilfreeBackend)


register()
