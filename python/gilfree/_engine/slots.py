"""One worker slot: a place for one worker at a time, and what the front end knows of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gilfree._engine.transport import Worker

#: Tasks queued per worker when its messages take less than this (pipelining); 1 otherwise,
#: so long tasks are handed out one at a time to whichever worker is free (balance).
PIPELINE_BELOW_SECONDS = 0.005


@dataclass(frozen=True)
class WorkerStats:
    """Counters of one worker slot (``executor.stats()``): the slot keeps them across the
    workers that serve it in turn."""

    #: The slot's index, 0 .. max_workers - 1.
    slot: int
    #: The current worker's pid (0 if none is running now).
    pid: int
    #: Whether a worker is running on the slot now.
    alive: bool
    #: Tasks completed (a map item counts one), by every worker of the slot.
    tasks_done: int
    #: Workers of the slot that died unasked (killed, crashed, ``os._exit``, OOM).
    crashes: int
    #: Workers of the slot killed because a task ran past its timeout.
    timeouts: int
    #: Workers started on the slot after its first (after crashes, timeouts, recycling).
    restarts: int
    #: Seconds the slot's workers spent running tasks.
    busy_seconds: float


class Slot:
    """A slot's state. ``epoch`` counts the workers that served it; outcomes of older epochs
    are dropped. Guarded by the engine's lock.

    ``inflight`` is the slot's units in flight, by task id, oldest first: the engine's
    ``Backlog`` owns it and makes every change; the slot only reads it."""

    def __init__(self, index: int, inflight: Mapping[int, Any]) -> None:
        self.index = index
        self.epoch = 0
        self.worker: Worker | None = None
        self.ready = False
        self.retiring = False
        self.inflight = inflight
        self.quota: int | None = None
        self.busy_seconds: float | None = None
        self.last_reply = 0.0
        #: When the oldest unit in flight started running (monotonic seconds).
        self.running_since = 0.0
        #: The task whose timeout made us kill the worker (its exit is not seen yet).
        self.timed_out_task: int | None = None
        #: The task whose caller gave it up and had us kill the worker (exit not seen yet).
        self.cancelled_task: int | None = None
        #: The parent killed the worker on purpose (terminate, Ctrl-C): not a crash.
        self.stopped = False
        self.tasks_done = 0
        self.crashes = 0
        self.timeouts = 0
        self.starts = 0
        self.busy_total = 0.0

    def live(self) -> bool:
        """Whether a worker has been started here and not yet seen to end."""
        return self.worker is not None

    def capacity(self) -> int:
        """How many more units of work this slot accepts now."""
        if self.worker is None or self.retiring:
            return 0
        fast = self.busy_seconds is not None and self.busy_seconds < PIPELINE_BELOW_SECONDS
        return (2 if fast else 1) - len(self.inflight)

    def record_reply(self, seconds: float, items: int, now: float) -> None:
        """Notes a reply to a unit of ``items`` tasks that ran ``seconds``: updates the moving
        estimate of seconds per message and the counters; the next unit in flight starts now."""
        previous = self.busy_seconds
        self.busy_seconds = seconds if previous is None else 0.5 * (previous + seconds)
        self.busy_total += seconds
        self.tasks_done += items
        self.last_reply = now
        self.running_since = now

    def sent(self, now: float) -> None:
        """Notes a unit about to be handed to the worker: it starts now if nothing else is in
        flight."""
        if not self.inflight:
            self.running_since = now

    def expired(self, now: float) -> int | None:
        """The task id of the running unit if it has run past its timeout, else None."""
        if not self.inflight or self.killing() or not self.ready:
            return None  # (a worker's start-up and initializer do not count)
        task_id, unit = next(iter(self.inflight.items()))
        if unit.timeout is not None and now - self.running_since > unit.timeout:
            return task_id
        return None

    def given_up(self) -> int | None:
        """The task id of the running unit if its caller gave it up and asked for its worker
        to be killed (``Call.kill_requested``), else None. A unit queued behind another has
        not started: its worker is killed only once it runs."""
        if not self.inflight or self.killing() or not self.ready:
            return None
        task_id, unit = next(iter(self.inflight.items()))
        return task_id if unit.kill_requested else None

    def killing(self) -> bool:
        """Whether the parent killed the worker for one of its tasks (its exit not seen yet)."""
        return self.timed_out_task is not None or self.cancelled_task is not None

    def stats(self) -> WorkerStats:
        """The slot's counters now."""
        worker = self.worker
        alive = worker is not None and worker.poll() is None
        return WorkerStats(
            slot=self.index,
            pid=worker.pid if alive and worker is not None else 0,
            alive=alive,
            tasks_done=self.tasks_done,
            crashes=self.crashes,
            timeouts=self.timeouts,
            restarts=max(0, self.starts - 1),
            busy_seconds=self.busy_total,
        )

    def clear(self) -> None:
        """Forgets the ended worker (what it had in flight has left the backlog already)."""
        self.worker = None
        self.ready = False
        self.retiring = False
        self.quota = None
        self.busy_seconds = None
        self.timed_out_task = None
        self.cancelled_task = None
        self.stopped = False
        self.epoch += 1
