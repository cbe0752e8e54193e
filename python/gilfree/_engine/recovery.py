"""What becomes of the work a worker had when it ended unasked (crashed, killed, timed out).

A worker runs the units sent to it in order, one at a time. When it ends while units are in
flight, the oldest is the one it was running; the others never started, so they are sent again
untouched (other tasks are never affected by a crash). The running one:

* fails with ``TaskTimeoutError`` if the parent killed the worker because that unit ran past
  its timeout (a timed-out task is not retried: it would most likely time out again);
* fails with ``CancelledError`` if the parent killed the worker because the unit's caller
  gave it up and asked for that (an awaiting asyncio task cancelled with ``kill_on_cancel``);
* else is sent again if it has retries left (``retries=N``), on whichever worker is free next
  (a fresh one replaces the dead worker);
* else, if it is a chunk of several map items, is split into chunks of one item each, sent
  again: the item that crashed fails alone when it crashes again, and the others run (those
  before it in the chunk a second time: their results went with the worker), as if the map
  had been sent one item at a time; nothing of the map is lost without an error;
* else fails with ``WorkerCrashedError``, naming the worker's pid, how it ended and the
  function.

A unit of a map job that was stopped meanwhile (its reader went away) is not sent again.
"""

from __future__ import annotations

from concurrent.futures import CancelledError
from dataclasses import dataclass

from gilfree import _core, _trace
from gilfree._engine.units import Chunk, Unit
from gilfree.errors import TaskTimeoutError, WorkerCrashedError


@dataclass(frozen=True)
class Ending:
    """How a worker ended."""

    pid: int
    exit_code: int
    #: The task id whose timeout made the parent kill the worker, if that is why it ended.
    timed_out_task: int | None = None
    #: The task id whose caller gave it up and had the worker killed, if that is why it ended.
    cancelled_task: int | None = None
    #: How the worker was lost, where its transport knows better than an exit code (a cluster
    #: worker: "the Dask worker tcp://... was lost").
    reason: str | None = None


@dataclass
class Settlement:
    """What to do with a dead worker's units."""

    #: Units to send again, in their original order.
    resend: list[Unit]
    #: Units that fail, with their errors.
    failed: list[tuple[Unit, BaseException]]


def settle(lost: list[tuple[int, Unit]], ending: Ending) -> Settlement:
    """Decides the fate of ``lost``: ``(task id, unit)`` pairs, oldest first (see the module
    docstring)."""
    settlement = Settlement([], [])
    for position, (task_id, unit) in enumerate(lost):
        if isinstance(unit, Chunk) and unit.job.stopped and unit.job.failure is not None:
            settlement.failed.append((unit, unit.job.failure))
        elif ending.timed_out_task is not None or ending.cancelled_task is not None:
            if task_id == ending.timed_out_task:
                settlement.failed.append((unit, timeout_error(unit, ending)))
            elif task_id == ending.cancelled_task:
                settlement.failed.append((unit, cancelled_error(unit, ending)))
            else:
                settlement.resend.append(unit)
        elif position > 0:
            settlement.resend.append(unit)
        elif unit.retries > 0:
            unit.retries -= 1
            unit.attempts += 1
            settlement.resend.append(unit)
        elif isinstance(unit, Chunk) and unit.count > 1:
            settlement.resend.extend(unit.split())
        else:
            settlement.failed.append((unit, crash_error(unit, ending)))
    if _trace.ENABLED:
        for unit in settlement.resend:
            _trace.log.debug("settled %s of pid %d: sent again", _unit_text(unit), ending.pid)
        for unit, error in settlement.failed:
            _trace.log.debug(
                "settled %s of pid %d: failed with %r", _unit_text(unit), ending.pid, error
            )
    return settlement


def _unit_text(unit: Unit) -> str:
    """``a call of fib`` or ``a chunk of 12 fib calls``, for traces."""
    name = unit.name()
    if isinstance(unit, Chunk):
        return f"a chunk of {unit.count} {name} calls"
    return f"a call of {name}"


def crash_error(unit: Unit, ending: Ending) -> WorkerCrashedError:
    """The error of a unit whose worker died under it."""
    tries = f" (tried {unit.attempts} times)" if unit.attempts > 1 else ""
    how = ending.reason
    if how is None:
        how = f"worker pid {ending.pid} ended ({_core.describe_exit(ending.exit_code)})"
    return WorkerCrashedError(f"{how} while running {unit.name()}{tries}")


def cancelled_error(unit: Unit, ending: Ending) -> CancelledError:
    """The error of a unit whose worker was killed because its caller gave it up."""
    return CancelledError(
        f"{unit.name()} was cancelled while it ran; {_worker(ending)} was killed and is replaced"
    )


def timeout_error(unit: Unit, ending: Ending) -> TaskTimeoutError:
    """The error of a unit that ran past its timeout."""
    what = unit.name()
    if isinstance(unit, Chunk):
        last = unit.start + unit.count - 1
        what = f"a chunk of {unit.count} {what} calls (map items {unit.start}..{last})"
    return TaskTimeoutError(
        f"{what} ran longer than its timeout of {unit.timeout:g} s; {_worker(ending)} was"
        " killed and is replaced"
    )


def _worker(ending: Ending) -> str:
    """``worker pid 123``, or ``its worker`` where no process of ours ran it (a cluster's)."""
    return f"worker pid {ending.pid}" if ending.pid else "its worker"
