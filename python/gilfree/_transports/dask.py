"""A Dask cluster: the third transport (``gilfree.dask.DaskExecutor``).

A slot is a lane of the cluster, not a process of ours. A lane runs its units one at a time,
each as one Dask task (``client.submit(run_unit, ...)``, with ``pure=False`` and a key of its
own, so identical calls are never merged), and submits the next when one ends. The task's
done-callback, which Dask runs on a thread of the client's, queues the outcome for ``pump``.
Functions and values travel as Dask sends them (cloudpickle): lambdas and ``__main__`` functions
work. An exception raised by a task comes back as a value with its traceback as text
(``gilfree._workers.cluster``), and reaches the caller with the remote traceback as
``__cause__``, as from gilfree's worker processes.

A task whose Dask worker died (``KilledWorker``, once the scheduler has given up on it) ends
its lane as a crash: the engine settles the lane's units as after a worker process's death
(``WorkerCrashedError``, or run again with ``retries=``) and starts a new lane on the slot.
``kill`` cancels a lane's tasks; Dask cannot stop a task that is already running, so per-task
timeouts and ``kill_on_cancel`` are refused by ``gilfree.dask``. Chunks report their progress
when they end (no worker-side sampling).
"""

from __future__ import annotations

import itertools
import signal
import threading
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import BrokenExecutor
from typing import TYPE_CHECKING, Any

from gilfree._engine.units import function_name, with_remote_traceback
from gilfree._transports.queued import OutcomeQueue
from gilfree._wire import protocol
from gilfree._workers.cluster import run_unit

if TYPE_CHECKING:
    import distributed

    from gilfree._engine.units import Call, Chunk, EncodedFunction

#: Units of a Dask transport call ``unit.fn`` themselves: nothing is registered.
NO_FUNCTION: EncodedFunction = (0, b"")


class BrokenDaskExecutor(BrokenExecutor):
    """The Dask executor cannot run work any more."""


class DaskTransport:
    """Runs units as tasks of a Dask cluster (see the module docstring). ``owned``: what this
    transport started (a client, a local cluster) and closes with it."""

    name = "dask"
    encoded = False
    starts_all = False
    spins = False
    broken_error: type[BrokenExecutor] = BrokenDaskExecutor
    init_failed_reason = "the initializer raised on a Dask worker"

    def __init__(self, client: distributed.Client, owned: list[Any]) -> None:
        self.client = client
        self._owned = owned
        self._token = uuid.uuid4().hex[:12]
        self._keys = itertools.count()
        outcomes = OutcomeQueue()
        self.report, self.pump, self.kick = outcomes.report, outcomes.pump, outcomes.kick
        self.on_exit: Callable[[], None] = _nothing

    def function(self, fn: Callable[..., Any]) -> EncodedFunction:
        """Nothing to register: Dask sends ``fn`` with each task."""
        return NO_FUNCTION

    def pack(self, value: Any, shared: list[Any]) -> Any:
        """``value`` itself: Dask serializes it with the task."""
        return value

    def start(self, slot: int, epoch: int) -> DaskLane:
        """A lane for ``slot``: ready at once (the cluster's workers are already running)."""
        self.report((slot, protocol.READY, epoch, 0, 0, None))
        return DaskLane(self, slot, epoch)

    def key(self, fn: Callable[..., Any]) -> str:
        """A key of its own for a task calling ``fn`` (named for the dashboard)."""
        return f"{function_name(fn)}-gilfree-{self._token}-{next(self._keys)}"

    def close(self) -> None:
        """No lane starts any more: closes the client and the cluster this transport started
        (none of a client it was given)."""
        owned, self._owned = self._owned, []
        for resource in owned:
            resource.close()


class DaskLane:
    """One lane of the cluster serving a slot, for one epoch: its units run one at a time."""

    #: No process of ours: the tasks run in the cluster's workers.
    pid = 0

    def __init__(self, transport: DaskTransport, slot: int, epoch: int) -> None:
        self._transport = transport
        self._slot = slot
        self._epoch = epoch
        self._lock = threading.Lock()
        #: ``(task id, the Dask future)`` of the unit running, if any.
        self._running: tuple[int, distributed.Future[Any]] | None = None
        #: ``(task id, unit kind, fn, payload)`` sent behind it.
        self._waiting: deque[tuple[int, int, Callable[..., Any], Any]] = deque()
        self._retiring = False
        self._exit_code: int | None = None
        #: Why the lane ended, when the cluster lost the worker running its unit.
        self.end_reason: str | None = None

    @property
    def handle(self) -> DaskLane:
        """What ``executor._processes`` would show: no process, so nothing (not a process)."""
        return self

    def send(self, task_id: int, unit: Call | Chunk) -> None:
        """Runs ``unit`` now, or once the unit before it has ended."""
        kind = unit.kind & ~protocol.WATCH_FLAG
        with self._lock:
            if self._exit_code is not None:
                return  # ended: the engine settles what it sent
            if self._running is None:
                self._submit(task_id, kind, unit.fn, unit.payload)
            else:
                self._waiting.append((task_id, kind, unit.fn, unit.payload))

    def _submit(self, task_id: int, kind: int, fn: Callable[..., Any], payload: Any) -> None:
        """Submits one unit as a task (under ``_lock``)."""
        transport = self._transport
        future = transport.client.submit(
            run_unit, kind, fn, payload, key=transport.key(fn), pure=False
        )
        self._running = (task_id, future)
        future.add_done_callback(lambda done: self._ended(task_id, done))

    def _ended(self, task_id: int, future: distributed.Future[Any]) -> None:
        """The task of ``task_id`` ended (on a thread of the client's)."""
        from distributed import KilledWorker

        with self._lock:
            if self._running is None or self._running[0] != task_id:
                return  # killed meanwhile: the engine settled it
            self._running = None
        status = future.status
        if status == "finished":
            kind, busy, value = future.result()
            self._transport.report(
                (self._slot, kind, self._epoch, task_id, busy, _local(kind, value))
            )
        elif status == "cancelled":
            self._lose(f"the Dask task of lane {self._slot} was cancelled by someone else")
            return
        else:
            error = future.exception()
            if isinstance(error, KilledWorker):
                self._lose(f"the Dask cluster lost the worker running it ({error})")
                return
            self._transport.report((self._slot, protocol.ERROR, self._epoch, task_id, 0, error))
        with self._lock:
            if self._waiting:
                self._submit(*self._waiting.popleft())
            elif self._retiring:
                self._end(0)

    def _lose(self, reason: str) -> None:
        """The lane ends as a crash: the engine settles its units (the one that was running
        first) and starts a new lane."""
        with self._lock:
            if self._exit_code is not None:
                return
            self.end_reason = reason
            self._waiting.clear()
            self._end(-signal.SIGKILL)

    def _end(self, code: int) -> None:
        """(Under ``_lock``.)"""
        self._exit_code = code
        self._transport.on_exit()

    def release(self, task_id: int) -> None:
        """Nothing is held."""

    def retire(self) -> None:
        """The lane ends once its units have run."""
        with self._lock:
            self._retiring = True
            if self._running is None and self._exit_code is None:
                self._end(0)

    def kill(self) -> None:
        """Cancels the lane's tasks (Dask forgets a running one, but cannot stop it)."""
        with self._lock:
            if self._exit_code is not None:
                return
            running, self._running = self._running, None
            self._waiting.clear()
            self._end(-signal.SIGKILL)
        if running is not None:
            running[1].cancel()

    def poll(self) -> int | None:
        """0 once retired and done, -SIGKILL once killed or lost; else None."""
        return self._exit_code

    def ended(self) -> None:
        """Nothing to free."""


def _local(kind: int, value: Any) -> Any:
    """A task's reply as the engine takes it: exceptions with their remote tracebacks."""
    if kind == protocol.ERROR:
        return with_remote_traceback(*value)
    if kind == protocol.CHUNK_RESULT:
        results, failures = value
        return results, [(index, with_remote_traceback(*raised)) for index, raised in failures]
    return value


def _nothing() -> None:
    """The default of ``on_exit`` until the engine installs its own."""
