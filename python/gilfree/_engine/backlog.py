"""The engine's work, and every move of it: the one owner of where each unit of work is.

A unit is in exactly one of four places:

* **pending**: calls and map jobs in submission order, not yet (entirely) handed out; a map job
  stays here while chunks are cut from it;
* **to resend**: units a worker lost (it died before running them, or the task is retried) or
  handed back (it retires): they go out before anything pending, oldest first;
* **parked**: map jobs whose reader is a whole window behind, until it catches up;
* **in flight**: units a worker has been sent, by slot and task id, in the order sent.

``outstanding`` (what the collector and ``shutdown(wait=True)`` wait for) is derived from these:
every pending entry, every unit to resend and every unit in flight; parked jobs wait for their
reader, not for the pool. Each method below is one move; nothing else changes the containers
(a slot reads its own in-flight units through ``inflight(index)``). Guarded by the engine's
lock, but ``outstanding`` is also read without it: so a unit being sent is recorded in flight
*before* it leaves pending or the resend queue (``sent`` first, then ``take_resend`` or
``drop_pending``), and the count never dips to zero while work remains.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from gilfree._engine.units import Call, MapJob, Unit


class Backlog:
    """Where each unit of work is (see the module docstring)."""

    def __init__(self, slot_count: int) -> None:
        self._pending: deque[Call | MapJob] = deque()
        self._resend: deque[Unit] = deque()
        self._parked: list[MapJob] = []
        self._inflight: list[dict[int, Unit]] = [{} for _ in range(slot_count)]

    # -- reading ---------------------------------------------------------------------------

    def outstanding(self) -> int:
        """Units pending, to resend or in flight."""
        return len(self._pending) + len(self._resend) + sum(map(len, self._inflight))

    def has_work(self) -> bool:
        """Whether anything waits to be sent."""
        return bool(self._resend or self._pending)

    def has_resend(self) -> bool:
        """Whether a unit waits to be sent again (it goes before anything pending)."""
        return bool(self._resend)

    def inflight(self, slot: int) -> dict[int, Unit]:
        """``slot``'s units in flight, by task id, oldest first: read it, never change it."""
        return self._inflight[slot]

    def call_of(self, future: Any) -> Call | None:
        """The call of ``future`` in flight or waiting to be sent again, if it is there."""
        for units in (self._resend, *(inflight.values() for inflight in self._inflight)):
            for unit in units:
                if isinstance(unit, Call) and unit.future is future:
                    return unit
        return None

    def next_to_send(self) -> Unit | MapJob:
        """What goes out next: the oldest unit to resend, else the oldest pending entry (a map
        job stays pending until ``drop_pending``). Only while ``has_work()``."""
        return self._resend[0] if self._resend else self._pending[0]

    # -- moves -----------------------------------------------------------------------------

    def submit(self, work: Call | MapJob) -> None:
        """A new call or map job, at the end of pending."""
        self._pending.append(work)

    def take_resend(self) -> Unit:
        """Removes the oldest unit to resend (once ``sent`` recorded it in flight again)."""
        return self._resend.popleft()

    def drop_pending(self, work: Call | MapJob) -> None:
        """Removes ``work`` from the front of pending: a call about to be sent or cancelled, a
        map job whose items are all cut or that was stopped. Nothing if it is no longer there:
        the user code that dispatching runs (a lazy job's input, a failing unit's callbacks)
        may have cancelled or failed everything pending meanwhile."""
        if self._pending and self._pending[0] is work:
            self._pending.popleft()

    def park(self, job: MapJob) -> None:
        """Moves ``job``, a map job at the front of pending whose reader is behind, to
        parked."""
        if self._pending and self._pending[0] is job:
            self._pending.popleft()
            self._parked.append(job)

    def resume(self, job: MapJob) -> bool:
        """Moves ``job`` back to pending if it is parked and no longer blocked; forgets it if
        it was stopped while parked (its reader went away: nothing more is cut from it)."""
        if job not in self._parked:
            return False
        if job.exhausted():
            self._parked.remove(job)
            return False
        if job.blocked():
            return False
        self._parked.remove(job)
        self._pending.append(job)
        return True

    def unpark_all(self) -> None:
        """Moves every parked job back to pending, and lifts the window of every job, parked
        or pending (shutdown: a job whose reader still holds it runs to its end whatever the
        reader does, as the stdlib's map does; one whose reader went away was stopped)."""
        for job in self._pending:
            if isinstance(job, MapJob):
                job.window = None
        for job in self._parked:
            job.window = None
            if not job.exhausted():
                self._pending.append(job)
        self._parked.clear()

    def sent(self, slot: int, task_id: int, unit: Unit) -> None:
        """``unit`` went to the worker of ``slot`` as ``task_id``."""
        self._inflight[slot][task_id] = unit

    def replied(self, slot: int, task_id: int) -> Unit | None:
        """Removes and returns the unit ``task_id`` of ``slot`` whose reply came (None if it
        is no longer in flight: failed meanwhile)."""
        return self._inflight[slot].pop(task_id, None)

    def declined(self, slot: int, task_id: int) -> None:
        """The worker of ``slot`` handed ``task_id`` back unrun: it goes to another worker."""
        unit = self._inflight[slot].pop(task_id, None)
        if unit is not None:
            self._resend.append(unit)

    def lose(self, slot: int) -> list[tuple[int, Unit]]:
        """Removes and returns what the ended worker of ``slot`` had in flight, oldest first,
        as ``(task id, unit)``: for ``recovery.settle`` to decide, then ``resend``."""
        lost = list(self._inflight[slot].items())
        self._inflight[slot].clear()
        return lost

    def resend(self, units: list[Unit]) -> None:
        """Puts ``units`` (in their order) before everything else to resend."""
        self._resend.extendleft(reversed(units))

    # -- ending work -----------------------------------------------------------------------

    def cancel_pending(self, stopped: Callable[[], BaseException]) -> None:
        """Cancels every pending call and stops every pending or parked map job (its readers
        get ``stopped()``)."""
        for job in self._parked:
            job.stop(stopped())
        self._parked.clear()
        while self._pending:
            work = self._pending.popleft()
            if isinstance(work, Call):
                work.future.cancel()
            else:
                work.stop(stopped())

    def fail_resend(self, error: BaseException) -> None:
        """Fails every unit waiting to be sent again."""
        while self._resend:
            self._resend.popleft().fail(error)

    def fail_inflight(self, slot: int, error: BaseException) -> None:
        """Fails every unit in flight on ``slot`` (its worker was killed on purpose)."""
        for unit in self._drain(self._inflight[slot]):
            unit.fail(error)

    def fail_everything(self, error: BaseException) -> None:
        """Fails every unit and stops every map job (the pool is broken)."""
        for units in self._inflight:
            for unit in self._drain(units):
                unit.fail(error)
        self.fail_resend(error)
        for job in self._parked:
            job.stop(error)
        self._parked.clear()
        while self._pending:
            work = self._pending.popleft()
            if isinstance(work, Call):
                work.fail(error)
            else:
                work.stop(error)

    @staticmethod
    def _drain(units: dict[int, Unit]) -> Iterator[Unit]:
        """Empties ``units`` first, then yields them (a failure's callbacks see them gone)."""
        taken = list(units.values())
        units.clear()
        yield from taken
