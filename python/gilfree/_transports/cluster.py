"""What the cluster transports share (Dask's, ``gilfree._transports.dask``, and Ray's,
``gilfree._transports.ray``): lanes, and large values placed on the cluster once.

A slot is a lane of the cluster, not a process of ours. A lane runs its units one at a time,
in the order sent, each as one task of the cluster: where the cluster keeps a lane's tasks in
order itself (``in_order``: a Ray actor per lane), a unit is submitted as soon as it is sent, so
the next one waits on the cluster's side, not a round trip away; otherwise (Dask) the lane
submits the next when one ends. A task's completion callback, which the cluster's client runs
on a thread of its own, queues the outcome for ``pump``. Functions and values travel pickled
with cloudpickle (by the cluster, or by the transport): lambdas and ``__main__`` functions
work. An exception raised by a task comes back as a value with its
traceback as text (``gilfree._workers.cluster``), and reaches the caller with the remote
traceback as ``__cause__``, as from gilfree's worker processes.

A task whose worker the cluster lost ends its lane as a crash: the engine settles the lane's
units as after a worker process's death (``WorkerCrashedError``, or run again with
``retries=``) and starts a new lane on the slot. ``kill`` cancels the lane's tasks; whether
that stops one already running is the cluster's to say (``can_kill``: Ray can, Dask cannot).
Chunks report their progress when they end (no worker-side sampling).

A concrete transport says how its cluster does these things: ``open`` and ``shut`` a lane's
own resources (a Ray actor; nothing on Dask), ``place`` a value, ``submit`` a unit as a task,
call back ``when_done``, and ``cancel`` a task; and ``settle`` reads an ended task as ``(reply
kind, busy, value)``, a ``Lost`` worker, or an exception.
"""

from __future__ import annotations

import signal
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import BrokenExecutor
from typing import TYPE_CHECKING, Any

from gilfree._engine.units import Chunk, with_remote_traceback
from gilfree._transports.queued import OutcomeQueue
from gilfree._wire import protocol
from gilfree._wire.serialization import name_unsendable
from gilfree._workers.cluster import Placed, dumps, each_value

if TYPE_CHECKING:
    from gilfree._engine.units import Call, EncodedFunction

#: Units of a cluster transport call ``unit.fn`` themselves: nothing is registered.
NO_FUNCTION: EncodedFunction = (0, b"")
#: Values of this many bytes or more are placed on the cluster once.
PLACE_BYTES = 1 << 20


class Lost:
    """``settle``'s answer for a task that did not end by itself: the worker running it was
    lost, or someone else cancelled it (``reason``, in words)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class ClusterTransport:
    """Runs units as tasks of a cluster (see the module docstring). ``owned``: how to close
    what this transport started (a client, a local cluster, a Ray session), called at
    ``close``."""

    name = "cluster"
    encoded = False
    starts_all = False
    spins = False
    places_per_call = True
    early_death_breaks = False
    broken_error: type[BrokenExecutor] = BrokenExecutor
    init_failed_reason = "the initializer raised on a worker of the cluster"
    #: ``kill`` stops a task that is running (its worker process is killed).
    can_kill = False
    #: The cluster runs a lane's tasks one at a time in the order submitted (see the module
    #: docstring).
    in_order = False

    def __init__(self, owned: list[Callable[[], object]]) -> None:
        self._owned = owned
        #: Guards ``_placements``; reentrant: see ``_placed``.
        self._lock = threading.RLock()
        #: Values placed on the cluster, by ``id``, while units that use them are out.
        self._placements: dict[int, _Placed] = {}
        outcomes = OutcomeQueue()
        self.report, self.pump, self.kick = outcomes.report, outcomes.pump, outcomes.kick
        self.on_exit: Callable[[], None] = _nothing

    # --- what each cluster says --------------------------------------------------------

    def open(self) -> Any:
        """What a new lane's tasks run on (a Ray actor), or None."""
        return None

    def shut(self, target: Any) -> None:
        """A lane has ended: frees what ``open`` made (killing what runs there)."""

    def wind_up(self, target: Any) -> None:
        """A lane retires: what ``open`` made ends once the units sent to it have run."""

    def place(self, value: Any) -> Any:
        """Puts ``value`` on the cluster; returns what a payload carries in its stead."""
        raise NotImplementedError

    def submit(
        self, target: Any, kind: int, fn: Callable[..., Any], payload: Any, timeout: float | None
    ) -> Any:
        """Submits one unit as a task (on ``target``, what ``open`` made; ``timeout``: the
        seconds it may run, for a cluster whose workers stop it themselves); returns the
        cluster's handle of it."""
        raise NotImplementedError

    def when_done(self, task: Any, callback: Callable[[], None]) -> None:
        """Calls ``callback`` (on any thread) once ``task`` has ended, however it ended."""
        raise NotImplementedError

    def cancel(self, task: Any) -> None:
        """Cancels ``task`` (on a lane that is ending: ``shut`` follows)."""
        raise NotImplementedError

    def settle(self, task: Any) -> tuple[int, int, Any] | Lost | BaseException:
        """How the ended ``task`` went: ``run_unit``'s reply, a lost worker, or the
        exception the cluster raised instead of running it."""
        raise NotImplementedError

    # --- the transport -----------------------------------------------------------------

    def function(self, fn: Callable[..., Any]) -> EncodedFunction:
        """Nothing to register: the cluster sends ``fn`` with each task."""
        return NO_FUNCTION

    def encoding_wait(self) -> None:
        """Nothing: ``function`` never waits."""

    def copied(self) -> int:
        """Nothing is copied into memory of this process's making (values are placed on the
        cluster, once per map): 0."""
        return 0

    def pack(self, value: Any, shared: list[Any]) -> Any:
        """``value`` (a call's ``(args, kwargs)``, a chunk's ``(items, star)``) as the cluster
        sends it, with each large top-level value (``PLACE_BYTES`` or more: an argument, an
        item, an item's argument) placed on the cluster once and replaced by what ``place``
        returned. A value is placed once for as long as a unit that uses it is out: the units
        keep a ``Placement`` in ``shared``."""
        return each_value(value, lambda item: self._placed(item, shared))

    def _placed(self, value: Any, shared: list[Any]) -> Any:
        """``value``, or what stands for its placed copy if it is large (see ``pack``).

        Placing happens outside ``_lock``: it allocates, so it may collect garbage, and a unit
        collected then runs ``unplace`` in this very thread (``_lock`` is reentrant for that).
        Two threads placing one value at once may place it twice; one copy is kept."""
        if _nbytes(value) < PLACE_BYTES:
            return value
        key = id(value)
        with self._lock:
            entry = self._placements.get(key)
            fresh = entry is None or entry.value is not value
        if fresh:
            stand_in = self.place(value)
            with self._lock:
                entry = self._placements.get(key)
                if entry is None or entry.value is not value:
                    entry = self._placements[key] = _Placed(value, stand_in)
        with self._lock:
            assert entry is not None
            entry.users += 1
        shared.append(Placement(self, key))
        return entry.stand_in

    def pickled(self, packed: Any) -> Packed:
        """What ``pack`` made, pickled (for ``run_packed``), with the keys and references of
        the values it placed."""
        placed: dict[int, Any] = {}

        def note(item: Any) -> None:
            if type(item) is Placed:
                placed[item.key] = item.ref

        each_value(packed, note)
        return Packed(dumps(packed), tuple(placed), tuple(placed.values()))

    def unplace(self, key: int) -> None:
        """A unit that used the placed value ``key`` has ended."""
        with self._lock:
            entry = self._placements.get(key)
            if entry is not None:
                entry.users -= 1
                if entry.users <= 0:
                    del self._placements[key]  # the cluster frees it with its last reference

    def start(self, slot: int, epoch: int) -> Lane:
        """A lane for ``slot``: ready at once (the cluster's workers are already running)."""
        self.report((slot, protocol.READY, epoch, 0, 0, None))
        return Lane(self, slot, epoch)

    def close(self) -> None:
        """No lane starts any more (the cluster stays until ``stopped``)."""

    def stopped(self) -> None:
        """The lanes have ended: closes what this transport started (nothing it was given)."""
        owned, self._owned = self._owned, []
        for close in owned:
            close()


class Lane:
    """One lane of the cluster serving a slot, for one epoch: its units run one at a time, in
    the order sent."""

    #: No process of ours: the tasks run in the cluster's workers.
    pid = 0

    def __init__(self, transport: ClusterTransport, slot: int, epoch: int) -> None:
        self._transport = transport
        self._slot = slot
        self._epoch = epoch
        self._lock = threading.Lock()
        #: What the lane's tasks run on (``ClusterTransport.open``).
        self._target = transport.open()
        #: The units sent and not ended, in order: the first runs (or is about to); a later
        #: one is submitted already where the cluster keeps them in order, else not yet.
        self._sent: deque[_Sent] = deque()
        #: Units the lane had out when it ended, their tasks to cancel (``_free``).
        self._dropped: list[_Sent] = []
        self._retiring = False
        self._exit_code: int | None = None
        #: Why the lane ended, when the cluster lost the worker running its unit.
        self.end_reason: str | None = None

    @property
    def handle(self) -> Lane:
        """What ``executor._processes`` would show: no process, so nothing (not a process)."""
        return self

    def send(self, task_id: int, unit: Call | Chunk) -> None:
        """Runs ``unit`` once the units sent before it have ended."""
        sent = _Sent(task_id, unit.kind & ~protocol.WATCH_FLAG, unit.fn, unit.payload)
        sent.timeout = unit.timeout
        if isinstance(unit, Chunk):
            sent.first_item = unit.start
        with self._lock:
            if self._exit_code is not None:
                return  # ended: the engine settles what it sent
            self._sent.append(sent)
            if not (self._transport.in_order or len(self._sent) == 1):
                return
            submitted = self._submit(sent)
        if submitted:
            self._watch(sent)

    def _submit(self, sent: _Sent) -> bool:
        """Submits one unit as a task (under ``_lock``; ``_watch`` follows, outside it).
        False if the cluster refused it (a function or an argument it cannot send): the unit
        fails, and the lane goes on. It fails with a ``SerializationError`` naming what does not
        pickle (``args[0]``, ``map item 7``), as on one machine, if something does; else with
        the cluster's own error."""
        assert sent.fn is not None  # not submitted yet
        try:
            task = self._transport.submit(
                self._target, sent.kind, sent.fn, sent.payload, sent.timeout
            )
        except Exception as error:  # noqa: BLE001 - the unit's own failure, for its caller
            self._sent.remove(sent)
            failure = _name_refused(sent) or error
            self._transport.report(
                (self._slot, protocol.ERROR, self._epoch, sent.task_id, 0, failure)
            )
            return False
        sent.task, sent.fn, sent.payload = task, None, None
        return True

    def _watch(self, sent: _Sent) -> None:
        """Calls ``_ended`` once the task of ``sent`` has ended: maybe at once, in this thread
        (a task that ended already), so never under ``_lock``."""
        self._transport.when_done(sent.task, lambda: self._ended(sent))

    def _ended(self, sent: _Sent) -> None:
        """The task of ``sent`` ended (on a thread of the cluster client's, or in ``_watch``)."""
        with self._lock:
            if not any(entry is sent for entry in self._sent):
                return  # killed meanwhile: the engine settled it
            self._sent.remove(sent)
        transport = self._transport
        try:
            outcome = transport.settle(sent.task)
        except Exception as error:  # noqa: BLE001 - on a client's thread: the unit fails alone
            outcome = _unreadable(error)
        if isinstance(outcome, Lost):
            self._lose(outcome.reason)
            return
        if isinstance(outcome, BaseException):
            transport.report((self._slot, protocol.ERROR, self._epoch, sent.task_id, 0, outcome))
        else:
            kind, busy, value = outcome
            reply = (self._slot, kind, self._epoch, sent.task_id, busy, _local(kind, value))
            transport.report(reply)
        with self._lock:
            following = None
            while self._sent and self._sent[0].task is None and self._exit_code is None:
                if self._submit(self._sent[0]):  # a refused one is gone: try the next
                    following = self._sent[0]
                    break
            done = following is None and not self._sent and self._exit_code is None
            if done and self._retiring:
                self._end(0)
        if following is not None:
            self._watch(following)

    def _lose(self, reason: str) -> None:
        """The lane ends as a crash: the engine settles its units (the one that was running
        first) and starts a new lane."""
        with self._lock:
            if self._exit_code is not None:
                return
            self.end_reason = reason
            self._end(-signal.SIGKILL)

    def _end(self, code: int) -> None:
        """The lane is over (under ``_lock``, on any thread). What it still has out, and what
        it runs on, are freed by ``_free``, never here: a cluster's client may not take calls
        from its own callback threads."""
        self._exit_code = code
        self._dropped.extend(self._sent)
        self._sent.clear()
        self._transport.on_exit()

    def _free(self) -> None:
        """Cancels the tasks the lane still had out, and frees what it runs on (once; on the
        engine's threads, never a client callback's)."""
        with self._lock:
            dropped, self._dropped = self._dropped, []
            target, self._target = self._target, None
        for entry in dropped:
            if entry.task is not None:
                self._transport.cancel(entry.task)
        if target is not None:
            self._transport.shut(target)

    def release(self, task_id: int) -> None:
        """Nothing is held."""

    def retire(self) -> None:
        """The lane ends once its units have run (and so does what it runs on)."""
        with self._lock:
            self._retiring = True
            target = self._target
            if not self._sent and self._exit_code is None:
                self._end(0)
        if target is not None:
            self._transport.wind_up(target)

    def kill(self) -> None:
        """Ends the lane now (see ``ClusterTransport.can_kill`` for a unit that is running)."""
        with self._lock:
            if self._exit_code is None:
                self._end(-signal.SIGKILL)
        self._free()

    def poll(self) -> int | None:
        """0 once retired and done, -SIGKILL once killed or lost; else None."""
        return self._exit_code

    def ended(self) -> None:
        """The engine has settled the lane's end: what it had out and ran on is freed."""
        self._free()


class Packed:
    """A unit's payload pickled by the sender, with the keys and references of its placed
    values (``ClusterTransport.pickled``)."""

    __slots__ = ("blob", "keys", "refs")

    def __init__(self, blob: bytes, keys: tuple[int, ...], refs: tuple[Any, ...]) -> None:
        self.blob = blob
        self.keys = keys
        self.refs = refs


class _Sent:
    """A unit sent to a lane: its task id, what the task runs (until submitted), and the
    cluster's task (once submitted)."""

    __slots__ = ("first_item", "fn", "kind", "payload", "task", "task_id", "timeout")

    def __init__(self, task_id: int, kind: int, fn: Callable[..., Any], payload: Any) -> None:
        self.task_id = task_id
        self.kind = kind
        self.fn: Callable[..., Any] | None = fn
        self.payload = payload
        self.task: Any = None
        self.timeout: float | None = None
        #: A chunk's first item's index in its map (for error messages: ``map item 7``).
        self.first_item = 0


def _name_refused(sent: _Sent) -> Exception | None:
    """The ``SerializationError`` naming the part of a refused unit that does not pickle: its
    function, an argument (``args[0]``) or a map item (``map item 7``); None if all of it
    pickles (the cluster refused it for another reason)."""
    if sent.kind == protocol.CHUNK:
        items, _star = sent.payload
        first = sent.first_item
        roots = {f"map item {first + index}": item for index, item in enumerate(items)}
    else:
        args, kwargs = sent.payload
        roots = {"args": args, "kwargs": kwargs}
    return name_unsendable({"fn": sent.fn, **roots})


class _Placed:
    """A value placed on the cluster: the value (so its id stays its own), what payloads carry
    in its stead, and how many units that use it are out."""

    __slots__ = ("stand_in", "users", "value")

    def __init__(self, value: Any, stand_in: Any) -> None:
        self.value = value
        self.stand_in = stand_in
        self.users = 0


class Placement:
    """Held in a unit's ``shared`` list: when the unit drops the list, the placed value loses
    a user."""

    __slots__ = ("__weakref__",)

    def __init__(self, transport: ClusterTransport, key: int) -> None:
        weakref.finalize(self, transport.unplace, key)


def _nbytes(value: Any) -> int:
    """The bytes ``value`` holds, for the large kinds users pass (arrays, frames, bytes); 0
    for anything else, and for a value whose attributes raise (a proxy: it travels as it is).
    Never compares or truth-tests the value."""
    kind = type(value)
    if kind is bytes or kind is bytearray:
        return len(value)
    try:
        nbytes = getattr(value, "nbytes", None)  # numpy arrays, pandas Series and Index, Arrow
        if isinstance(nbytes, int):
            return nbytes
        usage = getattr(value, "memory_usage", None)  # a pandas DataFrame
        if kind.__name__ == "DataFrame" and callable(usage):
            return int(usage(index=True, deep=False).sum())
    except Exception:  # noqa: BLE001 - the user's object: not a kind placed once
        return 0
    return 0


def _unreadable(error: Exception) -> Exception:
    """The failure of a unit whose reply could not be read here (a value whose class this
    process cannot rebuild): a ``SerializationError`` of its result, chained to ``error``. Raised
    on the client's callback thread, it left the unit's future waiting for ever."""
    from gilfree.errors import SerializationError

    failure = SerializationError(
        f"result: the reply from the cluster could not be read here: {error!r}", "result"
    )
    failure.__cause__ = error
    return failure


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
