"""The engine behind an executor: scheduling, result collection and worker lifecycle.

```
submit(fn, *args) -> Call ──> pending ──dispatch──> slot i: transport worker i ──┐
map(fn, items)    -> MapJob ─┘   (cut into chunks as slots free up)              │
future.result() / map iterator ──pump──< transport.pump() (outcomes) <───────────┘
                                 (or the collector thread, when nobody waits)
```

The engine is the front end: it knows units, slots and outcomes, and reaches the workers only
through a ``Transport`` (``transport``: processes on shared-memory rings, or threads).

Dispatch puts at most one or two units in flight per worker (two while its messages are short),
so long tasks go to whichever worker frees up first and pending futures stay cancellable.

Collection has one "pumper" at a time (see ``waiting``): a thread that collects the transport's
outcomes (GIL released while it waits), completes futures and refills the workers.

Locks: ``_lock`` guards the scheduling state (pending, slots); ``pump_role.progress`` guards the
pumper role. Never take ``_lock`` while holding ``pump_role.progress``.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Any, Protocol

from gilfree import _core, _trace
from gilfree._engine.backlog import Backlog
from gilfree._engine.recovery import Ending, settle
from gilfree._engine.slots import Slot, WorkerStats
from gilfree._engine.transport import Outcome, Transport
from gilfree._engine.units import (
    Call,
    CallFuture,
    Chunk,
    EncodedFunction,
    MapJob,
    decode_reply,
    rebuild_exception,
)
from gilfree._engine.waiting import SLICE_SECONDS, PumpRole
from gilfree._wire import protocol
from gilfree._wire.serialization import explain
from gilfree.errors import WorkerCrashedError

#: Workers dying one after another before they are ready that break the pool: their
#: initializer (or the main script) ends them. What they were sent goes to the next worker
#: until then.
STARTUP_DEATHS_THAT_BREAK = 3
#: The same for deaths by SIGKILL, which come from outside (a user's ``kill``, the OOM killer)
#: more often than from what the worker runs: more of them are taken, so that kills at random
#: while workers start do not break the pool, and an initializer the OOM killer ends each
#: time still does.
STARTUP_KILLS_THAT_BREAK = 10


class DeferredStart(Protocol):
    """A map job accepted whose start waits for what its encoding needs (a cold ``amap``:
    see ``Transport.encoding_wait``); ``run`` starts it, once, whoever calls first."""

    def run(self) -> None:
        """Waits for what encoding needs, then makes and queues the job (once)."""

    def refuse(self, error: BaseException) -> None:
        """Gives the job up unstarted: its reader raises ``error`` (unless it ran)."""


class Engine:
    """Schedules work onto ``worker_count`` workers and collects the results."""

    def __init__(
        self,
        transport: Transport,
        worker_count: int,
        max_tasks_per_child: int | None,
        eager: bool = False,
    ) -> None:
        #: Starts the workers, sends them units, reports their outcomes.
        self.transport = transport
        transport.on_exit = self.on_worker_exit
        self._max_tasks_per_child = max_tasks_per_child
        #: Keep a worker on every slot (multiprocessing.Pool), rather than starting them as
        #: work arrives (concurrent.futures).
        self._eager = eager
        #: No worker starts any more (shutdown or terminate).
        self._final = False
        self._task_ids = itertools.count(1)
        #: Where every unit of work is: pending, to resend, parked or in flight.
        self._backlog = Backlog(worker_count)
        self._slots = [Slot(index, self._backlog.inflight(index)) for index in range(worker_count)]
        self._broken: str | None = None
        #: What broke it (the initializer's error...): the cause of every later refusal too.
        self._broken_cause: BaseException | None = None
        self._lock = threading.RLock()
        #: A dispatch is under way (on the thread holding ``_lock``): see ``_dispatch``.
        self._dispatching = False
        self.pump_role = PumpRole(self.pump_once, transport.kick, self.interrupt)
        self._last_check = 0.0
        self._exits_unchecked = False
        #: Whether submits are refused (shutdown began).
        self._closed = False
        #: The process this engine serves. A child forked from it (``os.fork()`` by the user)
        #: inherits the engine but not its threads, and its workers answer the owner only: the
        #: child is refused, and leaves the engine alone at its exit.
        self.owner = os.getpid()
        #: Calls admitted and not queued yet (see ``admit``), and ``cancel_pending``'s calls so
        #: far: an admitted call queued after one is cancelled.
        self._admitted = 0
        self._cancels = 0
        #: Map jobs accepted whose start was put off (``defer_start``), held weakly: one whose
        #: reader is gone has nothing to start.
        self._deferred_starts: weakref.WeakSet[DeferredStart] = weakref.WeakSet()
        #: Workers that died before they were ready since one last was (see _forget_worker):
        #: by SIGKILL, and otherwise.
        self._startup_kills = 0
        self._startup_deaths = 0
        #: Called after work was queued, outside the lock: the collector's ``note_submit``
        #: (``Lifecycle`` installs it; the engine knows nothing of the collector).
        self.on_work: Callable[[], None] = _nothing

    # -- submitting -------------------------------------------------------------------------

    def submit(self, work: Call | MapJob, admission: Admission | None = None) -> None:
        """Queues a call, or a map job (cut into chunks as workers free up), and hands work to
        the workers that are free. A call ``admit``ted earlier is queued even though shutdown
        began since (it was accepted before), unless pending work was cancelled meanwhile:
        then it is cancelled too."""
        self._check_owner()  # before the lock, which a thread of the parent may have held
        if isinstance(work, MapJob) and work.exhausted():
            return  # an empty input, or one whose first item failed: nothing to run
        with self._lock:
            if admission is None:
                self._check_usable()
            else:
                self._settle_admission(admission)
                if self._broken is not None:
                    raise self.transport.broken_error(self._broken) from self._broken_cause
                if admission.cancels != self._cancels and isinstance(work, Call):
                    work.future.cancel()
                    return
            if self.transport.starts_all:
                self._start_all()
            self._backlog.submit(work)
            self._dispatch()
        self.on_work()

    def admit(self) -> Admission:
        """Accepts a call that is queued later, once what encoding it needs is ready (a
        coroutine's call while the template still runs the main script: see
        ``Transport.encoding_wait``). Refused as a submit is once shutdown began; from then
        on outstanding, so that ``shutdown(wait=True)`` waits for it, until ``submit`` queues
        it or ``withdraw`` gives it up."""
        self._check_owner()
        with self._lock:
            self._check_usable()
            self._admitted += 1
            return Admission(self._cancels)

    def withdraw(self, admission: Admission) -> None:
        """Gives up an admitted call that will not be queued (its wait or its encoding
        failed); nothing if ``submit`` queued it."""
        with self._lock:
            self._settle_admission(admission)

    def defer_start(self, deferred: DeferredStart) -> None:
        """Accepts a map job whose start waits for what encoding needs: started by its reader,
        or by ``start_deferred`` before shutdown refuses work, as a job started at once is
        queued before. Refused as a submit is once shutdown began."""
        self._check_owner()
        with self._lock:
            self._check_usable()
            self._deferred_starts.add(deferred)

    def start_deferred(self, refused: BaseException | None = None) -> None:
        """Starts every map job ``defer_start`` accepted and nobody started yet (waiting for
        what encoding needs; without the lock, which the starts take), or with ``refused``
        gives them up with that error (terminate)."""
        with self._lock:
            deferred = list(self._deferred_starts)
            self._deferred_starts.clear()
        for start in deferred:
            if refused is None:
                start.run()
            else:
                start.refuse(refused)

    def _settle_admission(self, admission: Admission) -> None:
        if not admission.settled:
            admission.settled = True
            self._admitted -= 1

    def note_unsent_submit(self) -> None:
        """A submit whose task could not be encoded (its future has failed). The stdlib starts
        worker processes at every submit whatever the task, and code reads ``_processes`` right
        after submitting, so workers start as for a task that could be sent: all of them with
        fork, else one if no worker is idle (as the stdlib counts: one that finished a task and
        has nothing to do)."""
        with self._lock:
            if self._broken is not None or self._final:
                return
            if self.transport.starts_all:
                self._start_all()
                return
            if any(slot.live() and not slot.inflight and slot.tasks_done for slot in self._slots):
                return
            for slot in self._slots:
                if not slot.live():
                    self._start_worker(slot)
                    return

    def _start_all(self) -> None:
        """Starts a worker on every slot that has none (fork: as the stdlib, every worker is
        forked at the first submit, before the pool's own threads run; under ``_lock``)."""
        for slot in self._slots:
            if self._broken is not None or self._final:
                return
            if not slot.live():
                self._start_worker(slot)

    def function(self, fn: Callable[..., Any]) -> EncodedFunction:
        """``fn`` as units carry it (the transport's ``function``)."""
        return self.transport.function(fn)

    def pack(self, value: Any, shared: list[Any]) -> Any:
        """``value`` as a unit's payload (the transport's ``pack``)."""
        return self.transport.pack(value, shared)

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise self.transport.broken_error(self._broken) from self._broken_cause
        self.check_open()

    def check_open(self) -> None:
        """Raises RuntimeError (as concurrent.futures does) once shutdown has begun, or in a
        child forked from the process the pool belongs to."""
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        self._check_owner()

    def _check_owner(self) -> None:
        """Raises RuntimeError in a child forked from the process this engine serves (without
        the lock: a thread of the parent may have held it at the fork, and holds it for ever
        in the child)."""
        if self.owner != os.getpid():
            raise RuntimeError(
                f"this pool belongs to process {self.owner}, which this process was forked "
                "from: its workers serve that process only; make a new pool here"
            )

    def close(self) -> None:
        """Refuses every submit from now on (shutdown began)."""
        self._closed = True

    def outstanding(self) -> int:
        """Units of work pending, to resend or in flight, and calls admitted but not queued
        yet (``admit``)."""
        return self._backlog.outstanding() + self._admitted

    def resume(self, job: MapJob) -> None:
        """Called by a map job's reader after it took results: a parked job may go on. Its
        new chunks are outstanding work, as a submit's are: the collector must know (a reader
        that does not pump, such as ``amap``'s, relies on it)."""
        with self._lock:
            resumed = self._backlog.resume(job)
            if resumed:
                self._dispatch()
        if resumed:
            self.on_work()

    def unpark_all(self) -> None:
        """Lets every map job whose reader still holds it run to its end without waiting for
        that reader, parked or not yet (shutdown)."""
        with self._lock:
            self._backlog.unpark_all()
            self._dispatch()

    def cancel_pending(self) -> None:
        """Cancels every call not yet handed to a worker (admitted ones included, when they
        come to be queued) and stops every map job."""
        with self._lock:
            self._cancels += 1
            self._backlog.cancel_pending(concurrent_cancelled)

    # -- dispatching (under _lock) ----------------------------------------------------------

    def _dispatch(self) -> None:
        # Never re-entered. Dispatching runs user code (a lazy job's input generator, the
        # callbacks of a unit that fails), which may submit from there: on this thread, under
        # the lock (an RLock). A nested dispatch would cut the job being cut (its generator is
        # already executing) and move the backlog under this loop's feet; instead the work
        # submitted meanwhile waits in the backlog, and this loop, which runs while there is
        # work and a free slot, sends it.
        if self._dispatching:
            return
        self._dispatching = True
        try:
            self._dispatch_free_slots()
        finally:
            self._dispatching = False

    def _dispatch_free_slots(self) -> None:
        # A unit is recorded in flight (in _send) before it leaves pending or the resend queue:
        # see Backlog on why the order matters.
        backlog = self._backlog
        while backlog.has_work() and self._broken is None:
            slot = self._free_slot()
            if slot is None:
                return
            work = backlog.next_to_send()
            if backlog.has_resend():
                assert not isinstance(work, MapJob)
                if work.kill_requested:  # given up while it waited to be sent again
                    backlog.take_resend()
                    work.fail(CancelledError(f"{work.name()} was cancelled"))
                    continue
                if isinstance(work, Chunk) and work.payload is None:  # a piece of a crashed one
                    try:
                        work.encode(self.transport.pack)
                    except Exception as error:  # noqa: BLE001 - as it failed at its first sending
                        backlog.take_resend()
                        work.fail(explain(work.named_items(), error))
                        continue
                self._send(slot, work)
                backlog.take_resend()
            elif isinstance(work, Call):
                if work.future.set_running_or_notify_cancel():
                    self._send(slot, work)
                backlog.drop_pending(work)
            elif isinstance(work, MapJob) and work.exhausted():
                backlog.drop_pending(work)  # stopped (its reader went away) before all was cut
            elif isinstance(work, MapJob) and work.blocked():
                backlog.park(work)
            else:
                assert isinstance(work, MapJob)
                try:
                    chunk = work.cut(slot.quota)
                except Exception as error:  # noqa: BLE001 - the job fails, not the engine
                    # Whatever breaks cutting (a sizer or input fault) is this job's error, for
                    # its reader: the engine runs on callers' and the collector's threads, and
                    # an exception escaping here would leave the job pending forever.
                    work.stop(error)
                    backlog.drop_pending(work)
                    continue
                copied = self.transport.copied()
                try:
                    chunk.encode(self.transport.pack)
                except Exception as error:  # noqa: BLE001 - an item that cannot be sent
                    explained = explain(chunk.named_items(), error)
                    chunk.fail(explained)
                    work.stop(explained)
                else:
                    work.sizer.record_copied(chunk.count, self.transport.copied() - copied)
                    if self.transport.places_per_call and chunk.shared:
                        work.placed.extend(chunk.shared)  # for the later chunks to reuse
                    self._send(slot, chunk)
                    work.look_ahead()  # once the chunk is encoded, never before
                if work.exhausted():
                    backlog.drop_pending(work)

    def _free_slot(self) -> Slot | None:
        # Among equally loaded slots: the worker that replied last if it busy-waits for its next
        # unit a moment (processes: it is still awake), else the one that replied first (threads
        # asleep on their inboxes: measured, taking turns wakes them faster than reusing one).
        warm = self.transport.spins
        best: Slot | None = None
        for slot in self._slots:
            if slot.capacity() > 0 and (
                best is None
                or len(slot.inflight) < len(best.inflight)
                or (
                    len(slot.inflight) == len(best.inflight)
                    and (slot.last_reply > best.last_reply) == warm
                    and slot.last_reply != best.last_reply
                )
            ):
                best = slot
        if best is not None and not best.inflight:
            return best
        for slot in self._slots:
            worker = slot.worker
            retired = slot.retiring and not slot.inflight and worker is not None
            if retired and worker is not None and worker.poll() is not None:
                self._forget_worker(slot)
            if not slot.live():
                return slot if self._start_worker(slot) else None
        return best

    def _start_worker(self, slot: Slot) -> bool:
        """Starts a worker on ``slot``. A failure to start one breaks the pool, since nothing
        queued could ever run."""
        slot.quota = self._max_tasks_per_child
        slot.starts += 1
        try:
            assert not self._final, "no worker starts after stop_workers"
            slot.worker = self.transport.start(slot.index, slot.epoch)
        except Exception as error:  # noqa: BLE001 - initargs that cannot be sent, fork failing
            self._break(f"could not start a worker {self.transport.name}: {error}", error)
            return False
        if _trace.ENABLED:
            _trace.log.debug(
                "started a worker on slot %d, epoch %d%s",
                slot.index,
                slot.epoch,
                " (a replacement)" if slot.starts > 1 else "",
            )
        return True

    def _send(self, slot: Slot, work: Call | Chunk) -> None:
        worker = slot.worker
        assert worker is not None
        task_id = next(self._task_ids)
        slot.sent(time.monotonic())
        self._backlog.sent(slot.index, task_id, work)
        worker.send(task_id, work)
        if _trace.ENABLED:
            payload = work.payload
            _trace.log.debug(
                "sent %s task %d (%d items, %d bytes) to slot %d, epoch %d",
                protocol.kind_name(work.kind),
                task_id,
                work.item_count(),
                len(payload) if isinstance(payload, bytes) else 0,
                slot.index,
                slot.epoch,
            )
        if slot.quota is not None:
            slot.quota -= work.item_count()
            if slot.quota <= 0:
                slot.retiring = True
                worker.retire()

    # -- collecting -------------------------------------------------------------------------

    def pump_once(self, timeout: float) -> None:
        """Waits up to ``timeout`` for replies and handles them; checks workers when idle."""
        responses = self.transport.pump(timeout)
        if responses:
            self._handle(responses)
        now = time.monotonic()
        if not responses or now - self._last_check > SLICE_SECONDS:
            self._last_check = now
            self.check_workers()

    def _handle(self, responses: list[Outcome]) -> None:
        finished: list[tuple[Any, int, Any]] = []
        running: list[tuple[Chunk, int]] = []
        encoded = self.transport.encoded
        releases: list[tuple[Slot, int, int]] = []
        with self._lock:
            now = time.monotonic()
            for slot_index, kind, epoch, task_id, arg, payload in responses:
                slot = self._slots[slot_index]
                if _trace.ENABLED:
                    _trace.log.debug(
                        "reply %s for task %d from slot %d, epoch %d%s",
                        protocol.kind_name(kind),
                        task_id,
                        slot_index,
                        epoch,
                        "" if epoch == slot.epoch else f" (dropped: the slot is at {slot.epoch})",
                    )
                if epoch != slot.epoch:
                    continue  # a late reply from a worker that has since been replaced
                if kind == protocol.READY:
                    slot.ready = True
                    self._startup_deaths = self._startup_kills = 0
                    slot.running_since = now  # a task's time starts once its worker is ready
                elif kind == protocol.RETIRE:
                    self._retire(slot)
                elif kind == protocol.DECLINED:
                    self._backlog.declined(slot.index, task_id)
                    continue
                elif kind == protocol.PROGRESS:
                    unit = slot.inflight.get(task_id)
                    if isinstance(unit, Chunk):
                        running.append((unit, arg))
                    continue
                elif kind == protocol.INIT_FAILED:
                    self._break(
                        self.transport.init_failed_reason,
                        rebuild_exception(payload) if encoded else payload,
                    )
                    continue
                work = self._backlog.replied(slot.index, task_id)
                if work is None:
                    continue
                if kind & protocol.SHARED_FLAG:
                    kind &= ~protocol.SHARED_FLAG
                    releases.append((slot, epoch, task_id))
                busy = arg / 1e9
                slot.record_reply(busy, work.item_count(), now)
                if isinstance(work, Chunk):
                    work.job.sizer.record(work.start, work.count, busy)  # before the refill
                finished.append((work, kind, payload))
            self._dispatch()
        # Each reply is handled even if another one's handling raised, and the buffers are
        # released whatever happened: one fault must not leave other futures unfinished.
        fault: Exception | None = None
        for chunk, done in running:
            try:
                chunk.job.chunk_running(chunk, done)
            except Exception as error:  # noqa: BLE001 - raised once all are handled
                fault = fault or error
        for work, kind, payload in finished:
            try:
                if encoded:
                    kind, payload = decode_reply(work, kind, payload)
                work.finish(kind, payload)
            except Exception as error:  # noqa: BLE001 - raised once all are handled
                fault = fault or error
                _fail_unfinished(work, error)
        if releases:
            self._release(releases)
        self.pump_role.notify_progress()
        if fault is not None:
            raise fault

    def _release(self, releases: list[tuple[Slot, int, int]]) -> None:
        """Tells workers their replies were decoded, so they can drop the shared buffers those
        replies referred to (skipped for a worker replaced meanwhile: its buffers went with
        it)."""
        with self._lock:
            for slot, epoch, task_id in releases:
                if slot.epoch == epoch and slot.worker is not None:
                    slot.worker.release(task_id)

    def check_workers(self) -> None:
        """Notices ended workers (settling the work they had, freeing their slots) and kills
        workers whose running task is past its timeout."""
        self._exits_unchecked = False
        now = time.monotonic()
        with self._lock:
            for slot in self._slots:
                self._kill_if_due(slot, now)
        ended = [slot for slot in self._slots if slot.worker and slot.worker.poll() is not None]
        if not ended:
            return
        # An ended worker's last replies may still be on their way: take them first.
        responses = self.transport.pump(0.0)
        if responses:
            self._handle(responses)
        with self._lock:
            for slot in ended:
                if slot.worker is not None and slot.worker.poll() is not None:
                    self._forget_worker(slot)
            self._dispatch()
            if self._eager:
                self.fill()

    def _kill_if_due(self, slot: Slot, now: float) -> None:
        """Kills the worker of ``slot`` if its running unit is past its timeout, or was given
        up by its caller with a kill asked for (under ``_lock``). Its exit is settled later
        (``_forget_worker``), failing that unit alone."""
        worker = slot.worker
        if worker is None:
            return
        task_id = slot.expired(now)
        if task_id is not None:
            slot.timed_out_task = task_id
            why = "is past its timeout"
        else:
            task_id = slot.given_up()
            if task_id is None:
                return
            slot.cancelled_task = task_id
            why = "was given up by its caller"
        slot.retiring = True  # takes no more work
        if _trace.ENABLED:
            _trace.log.debug(
                "killing worker pid %d on slot %d: task %d %s", worker.pid, slot.index, task_id, why
            )
        worker.kill()

    def give_up(self, future: CallFuture, kill: bool) -> None:
        """The caller of the call behind ``future`` no longer wants it (its awaiting asyncio
        task was cancelled). Not started: it is cancelled. Running, with ``kill``: its worker
        is killed (now, or once the unit starts if it is queued behind another on its worker),
        the call fails with CancelledError, and a fresh worker takes the slot. Without
        ``kill`` it runs to its end, and its result goes unread."""
        with self._lock:
            if future.cancel() or not kill:
                return
            call = self._backlog.call_of(future)
            if call is None:
                return  # it ended meanwhile
            call.kill_requested = True
            now = time.monotonic()
            for slot in self._slots:
                self._kill_if_due(slot, now)

    def fill(self) -> None:
        """Starts a worker on every slot that has none (while the pool is usable)."""
        with self._lock:
            self._start_all()

    def _forget_worker(self, slot: Slot) -> None:
        """Clears the slot of an ended (reaped) worker and settles the work it had in flight
        (see ``recovery``)."""
        worker = slot.worker
        exit_code = None if worker is None else worker.poll()
        assert worker is not None and exit_code is not None
        ending = Ending(
            worker.pid, exit_code, slot.timed_out_task, slot.cancelled_task, worker.end_reason
        )
        if ending.timed_out_task is not None:
            slot.timeouts += 1
        elif ending.cancelled_task is None and (
            not slot.stopped and (exit_code != 0 or not slot.retiring)
        ):
            slot.crashes += 1
        if _trace.ENABLED:
            _trace.log.debug(
                "worker pid %d on slot %d, epoch %d ended (%s) with %d units in flight",
                worker.pid,
                slot.index,
                slot.epoch,
                _core.describe_exit(exit_code),
                len(slot.inflight),
            )
        asked = slot.stopped or slot.retiring or ending.timed_out_task is not None
        died_starting = not slot.ready and not asked and ending.cancelled_task is None
        lost = self._backlog.lose(slot.index)
        slot.clear()
        worker.ended()
        if died_starting and self.transport.early_death_breaks:
            killed = exit_code == -signal.SIGKILL
            self._startup_deaths += not killed
            self._startup_kills += killed
            if (
                self._startup_deaths < STARTUP_DEATHS_THAT_BREAK
                and self._startup_kills < STARTUP_KILLS_THAT_BREAK
            ):
                # Killed from outside while it started, most likely: nothing ran on it, so
                # what it was sent goes to the next worker untouched.
                self._backlog.resend([work for _task_id, work in lost])
                return
            # Its initializer (or the main script) ends every worker: the pool is broken, as
            # the stdlib's is by an initializer that raises.
            how = _core.describe_exit(exit_code)
            cause = WorkerCrashedError(
                f"{self._startup_deaths + self._startup_kills} workers in a row died before they"
                " were ready, the last"
                f" (pid {worker.pid}) ended ({how}), while they ran the initializer (or the main"
                " script, run again there)"
            )
            self._break(f"its workers {self.transport.name} die while they start ({how})", cause)
            broken = self.transport.broken_error(self._broken)
            broken.__cause__ = cause
            for _task_id, work in lost:
                work.fail(broken)
            return
        settlement = settle(lost, ending)
        self._backlog.resend(settlement.resend)
        for work, error in settlement.failed:
            work.fail(error)

    def _retire(self, slot: Slot) -> None:
        """The worker asked to be replaced (memory): it gets no more work, then EXIT."""
        if not slot.retiring and slot.worker is not None:
            slot.retiring = True
            slot.worker.retire()

    def stats(self) -> list[WorkerStats]:
        """Each slot's counters."""
        with self._lock:
            return [slot.stats() for slot in self._slots]

    def on_worker_exit(self) -> None:
        """Called (from any thread) when a worker is known to have ended: the pumper, or the
        collector if nobody pumps, checks the workers even with no work outstanding (a pool
        replaces the worker at once, as multiprocessing's does)."""
        self._exits_unchecked = True
        self.transport.kick()
        self.pump_role.wake_collector()

    def exits_unchecked(self) -> bool:
        """Whether a worker ended since the workers were last checked."""
        return self._exits_unchecked

    def break_pool(self, reason: str, cause: BaseException) -> None:
        """Marks the pool unusable from outside the engine (see ``_break``)."""
        with self._lock:
            if self._broken is None:
                self._break(reason, cause)

    def _break(self, reason: str, cause: BaseException) -> None:
        """Marks the pool unusable (initializer failure): everything pending fails."""
        self._broken, self._broken_cause = reason, cause
        error = self.transport.broken_error(reason)
        error.__cause__ = cause
        self._backlog.fail_everything(error)

    def interrupt(self, why: str = "interrupted by KeyboardInterrupt") -> None:
        """Ctrl-C in a waiting caller: cancels what has not started, kills the workers and fails
        the tasks they were running with CancelledError (saying ``why``). The executor stays
        usable: workers start again when work comes."""
        self.cancel_pending()
        self.kill_workers(CancelledError(why), final=False)

    # -- shutting down ----------------------------------------------------------------------

    def kill_workers(self, error: BaseException, final: bool) -> None:
        """Kills every worker now; the work they were running, and work waiting to be sent
        again, fails with ``error``. With ``final`` no worker starts again (the pool is being
        terminated); otherwise new workers start when work comes. Call after
        ``cancel_pending``."""
        with self._lock:
            if final:
                self._stop_starting()
            self._backlog.fail_resend(error)
            for slot in self._slots:
                if slot.worker is None:
                    continue
                slot.worker.kill()
                slot.retiring = True  # takes no more work
                slot.stopped = True
                self._backlog.fail_inflight(slot.index, error)

    def stop_workers(self, timeout: float) -> None:
        """Tells every worker to exit and waits for them (killing stragglers after timeout)."""
        with self._lock:
            self._stop_starting()
            live = [slot for slot in self._slots if slot.worker is not None]
            for slot in live:
                if not slot.retiring and slot.worker is not None:
                    slot.worker.retire()
        deadline = time.monotonic() + timeout
        for slot in live:
            worker = slot.worker
            if worker is None:
                continue
            killed = False
            while worker.poll() is None:
                # One deadline for all: past it, each worker still there is killed, once.
                if not killed and time.monotonic() > deadline:
                    worker.kill()
                    killed = True
                # Replies are dropped (nothing waits for them now); draining lets a worker that
                # is stuck writing a reply reach its EXIT. A worker's exit kicks the wait.
                self.transport.pump(0.001)
            exit_code = worker.poll()
            if _trace.ENABLED and exit_code is not None:
                _trace.log.debug(
                    "worker pid %d on slot %d exited at shutdown (%s)",
                    worker.pid,
                    slot.index,
                    _core.describe_exit(exit_code),
                )
        self.transport.stopped()

    def _stop_starting(self) -> None:
        """No worker starts from now on; the transport drops initargs (which also breaks the
        executor's reference cycles)."""
        self._final = True
        self.transport.close()

    def worker_handles(self) -> list[Any]:
        """What the live workers show of themselves (process handles, or threads)."""
        with self._lock:
            return [slot.worker.handle for slot in self._slots if slot.worker is not None]

    @property
    def broken(self) -> str | None:
        """Why the pool is broken (its initializer failed, a worker could not start), or None."""
        return self._broken


class Admission:
    """A call accepted before it could be queued (``Engine.admit``), settled once: queued by
    ``submit`` or given up by ``withdraw``."""

    __slots__ = ("cancels", "settled")

    def __init__(self, cancels: int) -> None:
        #: The engine's count of ``cancel_pending`` calls when it was admitted.
        self.cancels = cancels
        self.settled = False


def _nothing() -> None:
    """The default of a hook nobody installed."""


def _fail_unfinished(work: Call | Chunk, error: Exception) -> None:
    """Fails ``work`` with ``error``, where handling its reply raised before it finished."""
    if isinstance(work, Chunk) and work.done:
        return  # it finished; what raised came after
    try:
        work.fail(error)
    except Exception:  # noqa: BLE001 - the first error is the one raised
        pass


def concurrent_cancelled() -> BaseException:
    """The error a map reader gets past the chunks of a job cancelled by shutdown."""
    return CancelledError()
