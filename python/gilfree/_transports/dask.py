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
import weakref
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
#: Values of this many bytes or more are placed on the cluster once (``client.scatter``).
PLACE_BYTES = 1 << 20


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
        self._lock = threading.Lock()
        #: Values placed on the cluster, by ``id``, while units that use them are out.
        self._placements: dict[int, _Placed] = {}
        outcomes = OutcomeQueue()
        self.report, self.pump, self.kick = outcomes.report, outcomes.pump, outcomes.kick
        self.on_exit: Callable[[], None] = _nothing

    def function(self, fn: Callable[..., Any]) -> EncodedFunction:
        """Nothing to register: Dask sends ``fn`` with each task."""
        return NO_FUNCTION

    def pack(self, value: Any, shared: list[Any]) -> Any:
        """``value`` (a call's ``(args, kwargs)``, a chunk's ``(items, star)``) as Dask sends
        it, with each large top-level value (``PLACE_BYTES`` or more: an argument, an item, an
        item's argument) placed on the cluster once (``client.scatter``) and replaced by its
        Dask future, which the task receives as the value. A value is placed once for as long
        as a unit that uses it is out: the units keep a ``Placement`` in ``shared``."""
        first, second = value
        if isinstance(second, bool):  # a chunk: (items, star)
            items = [
                tuple(self._placed(arg, shared) for arg in item)
                if second
                else self._placed(item, shared)
                for item in first
            ]
            return items, second
        args = tuple(self._placed(arg, shared) for arg in first)
        kwargs = {name: self._placed(arg, shared) for name, arg in second.items()}
        return args, kwargs

    def _placed(self, value: Any, shared: list[Any]) -> Any:
        """``value``, or the future of its placed copy if it is large (see ``pack``)."""
        if _nbytes(value) < PLACE_BYTES:
            return value
        with self._lock:
            entry = self._placements.get(id(value))
            if entry is None or entry.value is not value:
                [future] = self.client.scatter([value], hash=False)
                entry = self._placements[id(value)] = _Placed(value, future)
            entry.users += 1
        shared.append(Placement(self, id(value)))
        return entry.future

    def unplace(self, key: int) -> None:
        """A unit that used the placed value ``key`` has ended."""
        with self._lock:
            entry = self._placements.get(key)
            if entry is not None:
                entry.users -= 1
                if entry.users <= 0:
                    del self._placements[key]  # Dask releases the data with its future

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


class _Placed:
    """A value placed on the cluster: the value (so its id stays its own), its Dask future, and
    how many units that use it are out."""

    __slots__ = ("future", "users", "value")

    def __init__(self, value: Any, future: Any) -> None:
        self.value = value
        self.future = future
        self.users = 0


class Placement:
    """Held in a unit's ``shared`` list: when the unit drops the list, the placed value loses
    a user."""

    __slots__ = ("__weakref__",)

    def __init__(self, transport: DaskTransport, key: int) -> None:
        weakref.finalize(self, transport.unplace, key)


def _nbytes(value: Any) -> int:
    """The bytes ``value`` holds, for the large kinds users pass (arrays, frames, bytes); 0
    for anything else. Never compares or truth-tests the value."""
    kind = type(value)
    if kind is bytes or kind is bytearray:
        return len(value)
    nbytes = getattr(value, "nbytes", None)  # numpy arrays, pandas Series and Index, Arrow
    if isinstance(nbytes, int):
        return nbytes
    usage = getattr(value, "memory_usage", None)  # a pandas DataFrame
    if kind.__name__ == "DataFrame" and callable(usage):
        return int(usage(index=True, deep=False).sum())
    return 0


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
