"""Threads of this process: the second transport.

A worker is a daemon thread with an inbox (``gilfree._core.ThreadQueue``, whose waits spin a
moment before they sleep): it takes units in order, runs them on the objects themselves (nothing
is pickled or copied: arguments and results are shared with the caller, as in
``concurrent.futures.ThreadPoolExecutor``) and puts each outcome on the transport's queue, which
``pump`` reads. Exceptions arrive as the objects raised, with their tracebacks. Every worker
reports the same pid, this process's.

A thread cannot be killed: ``kill`` abandons it (its slot gets a new thread at once, and what the
old one still reports carries an old epoch and is dropped). So timeouts, which kill the worker of
a task running too long, are a process-only option; see ``gilfree.executor`` for the others.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor
from concurrent.futures.thread import BrokenThreadPool
from typing import TYPE_CHECKING, Any

from gilfree._core import ThreadQueue
from gilfree._transports.queued import OutcomeQueue
from gilfree._wire import protocol
from gilfree._workers.progress import ChunkWatch
from gilfree._workers.worker import run_items

if TYPE_CHECKING:
    from gilfree._engine.transport import Outcome
    from gilfree._engine.units import Call, Chunk, EncodedFunction

#: How long a thread waiting for its next unit, or the pumper for an outcome, busy-waits (GIL
#: released) before it sleeps: a hand-off between sleeping threads costs two wake-ups per round
#: trip, tens of microseconds each on a VM (see ``gilfree._core.ThreadQueue``). As long as a
#: process worker spins (``gilfree._workers.worker.SPIN_MICROSECONDS``).
SPIN_MICROSECONDS = 100.0
#: Seconds an idle thread sleeps between looks at whether it was abandoned.
IDLE_SECONDS = 1.0

#: ``Call.function`` and ``Chunk.function`` of thread units: the worker calls ``unit.fn``.
NO_FUNCTION: EncodedFunction = (0, b"")


class ThreadTransport:
    """Runs units on threads of this process (see the module docstring)."""

    name = "thread"
    encoded = False
    starts_all = False
    spins = True  # SPIN_MICROSECONDS
    places_per_call = False
    early_death_breaks = False
    broken_error: type[BrokenExecutor] = BrokenThreadPool
    init_failed_reason = "A thread initializer failed, the thread pool is not usable anymore"

    def __init__(self, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
        self._initializer: tuple[Callable[..., Any] | None, tuple[Any, ...]] = (
            initializer,
            initargs,
        )
        #: Outcomes of every worker: ``report`` from the workers' threads, ``pump`` and
        #: ``kick`` for the engine.
        outcomes = OutcomeQueue(SPIN_MICROSECONDS)
        self.report, self.pump, self.kick = outcomes.report, outcomes.pump, outcomes.kick
        self.on_exit: Callable[[], None] = _nothing

    def function(self, fn: Callable[..., Any]) -> EncodedFunction:
        """Nothing to send: the worker calls the unit's ``fn`` itself."""
        return NO_FUNCTION

    def encoding_wait(self) -> None:
        """Nothing: ``function`` never waits."""

    def pack(self, value: Any, shared: list[Any]) -> Any:
        """``value`` itself: threads share the caller's objects."""
        return value

    def copied(self) -> int:
        """Nothing is copied: 0."""
        return 0

    def start(self, slot: int, epoch: int) -> ThreadWorker:
        """Starts a thread for ``slot``; it runs the initializer first."""
        return ThreadWorker(self, slot, epoch, self._initializer)

    def stopped(self) -> None:
        """Nothing of its own to stop."""

    def close(self) -> None:
        """Drops the initializer and its arguments."""
        self._initializer = (None, ())


class ThreadWorker:
    """One thread serving a slot, for one epoch."""

    def __init__(
        self,
        transport: ThreadTransport,
        slot: int,
        epoch: int,
        initializer: tuple[Callable[..., Any] | None, tuple[Any, ...]],
    ) -> None:
        self._transport = transport
        self._slot = slot
        self._epoch = epoch
        #: ``(task id, kind, function, payload)`` to run, and None: end.
        self._inbox = ThreadQueue()
        self._exit_code: int | None = None
        self._abandoned = False
        self.thread = threading.Thread(
            target=self._serve, args=initializer, name=f"gilfree-thread-{slot}", daemon=True
        )
        self.thread.start()

    @property
    def pid(self) -> int:
        """This process's pid: the thread runs here."""
        return os.getpid()

    @property
    def handle(self) -> threading.Thread:
        """The thread, as ``multiprocessing.pool.ThreadPool._pool`` shows its workers."""
        return self.thread

    #: A process's or a thread's end is told by its exit code.
    end_reason: str | None = None

    def send(self, task_id: int, unit: Call | Chunk) -> None:
        """Queues what the thread needs of ``unit``, taken now: once sent, the unit belongs to
        the engine again (it may fail, or its payload go, while this thread has yet to run
        it)."""
        self._inbox.put((task_id, unit.kind, unit.fn, unit.payload))

    def release(self, task_id: int) -> None:
        """Nothing is held: outcomes are the values themselves."""

    def retire(self) -> None:
        """The thread ends once it has run what it was sent."""
        self._inbox.put(None)

    def kill(self) -> None:
        """Abandons the thread: it is ended for the engine now, and stops after its current
        unit; what it still reports is dropped (an old epoch)."""
        if self._exit_code is None:
            self._abandoned = True
            self._exit_code = -signal.SIGKILL
            self._inbox.put(None)
            self._transport.on_exit()

    def poll(self) -> int | None:
        """0 once the thread has ended (after ``retire``), -SIGKILL once abandoned."""
        return self._exit_code

    def ended(self) -> None:
        """Nothing to free."""

    def _serve(self, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
        report, slot, epoch = self._transport.report, self._slot, self._epoch
        try:
            if initializer is not None:
                initializer(*initargs)
        except BaseException as error:
            import logging

            logging.getLogger("concurrent.futures").critical(
                "Exception in initializer:", exc_info=True
            )
            report((slot, protocol.INIT_FAILED, epoch, 0, 0, error))
            self._end(3)
            return
        report((slot, protocol.READY, epoch, 0, 0, None))
        code = 1  # the loop itself failed: the engine settles the units as after a crash
        try:
            self._loop(report)
            code = 0
        finally:
            self._end(code)

    def _loop(self, report: Callable[[Outcome], None]) -> None:
        inbox, slot, epoch = self._inbox, self._slot, self._epoch
        watch = ChunkWatch(
            lambda task_id, done: report((slot, protocol.PROGRESS, epoch, task_id, done, None))
        )
        while not self._abandoned:
            taken: list[_Task | None] = inbox.take(IDLE_SECONDS, SPIN_MICROSECONDS, 1)
            if not taken:
                continue
            task = taken.pop()
            if task is None:
                return
            started = time.perf_counter_ns()
            task_id, kind, fn, payload = task
            del task
            results: list[Any] = []
            watched = kind & protocol.WATCH_FLAG
            if watched:
                watch.begin(task_id, results)
            kind, value = _run(kind & ~protocol.WATCH_FLAG, fn, payload, results)
            if watched:
                watch.end()  # before the outcome: no PROGRESS after it
            del fn, payload, results  # release the arguments now, not at the next task
            report((slot, kind, epoch, task_id, time.perf_counter_ns() - started, value))
            value = None

    def _end(self, code: int) -> None:
        if self._exit_code is None:
            self._exit_code = code
            self._transport.on_exit()


#: What a thread takes of a unit: ``(task id, kind, function, payload)``.
_Task = tuple[int, int, Callable[..., Any], Any]


def _run(kind: int, fn: Callable[..., Any], payload: Any, results: list[Any]) -> tuple[int, Any]:
    """Runs a CALL or a CHUNK (its results into ``results``): ``(RESULT, value)``, ``(ERROR,
    exception)``, or ``(CHUNK_RESULT, (results, [(index, exception)]))``."""
    if kind == protocol.CHUNK:
        items, star = payload
        return protocol.CHUNK_RESULT, run_items(fn, items, star, _same, results)
    args, kwargs = payload
    try:
        return protocol.RESULT, fn(*args, **kwargs)
    except BaseException as error:  # noqa: BLE001 - the task's own, for its future
        return protocol.ERROR, error


def _same(error: BaseException) -> BaseException:
    """A failed item's exception, as it is (``run_items`` encodes it for processes)."""
    return error


def _nothing() -> None:
    """The default of ``on_exit`` until the engine installs its own."""
