"""The interface between the front end and the workers: what a transport offers the engine.

The front end (``engine``, ``backlog``, ``units``, ``mapping``, ``recovery``, ``lifecycle``)
owns everything a user sees: futures, map jobs and their order, chunk sizes, retries,
timeouts, stats. A transport owns the workers: it starts one on a slot, sends it units of work,
and reports what comes back. Two exist (``gilfree._transports``): processes over shared-memory
rings, and threads. The front end never imports them; the public classes choose one and hand it
to the ``Engine``.

The contract, from the front end's side:

* **Slots.** The engine has ``worker_count`` slots and starts a worker on one with
  ``start(slot, epoch)``. ``epoch`` counts the workers that served the slot; the worker stamps
  it on every outcome, and the engine drops outcomes of an older epoch (a worker it has given
  up on). All calls to a transport and its workers are made under the engine's lock, except
  ``pump`` and ``kick``.
* **Units.** ``Worker.send(task_id, unit)`` hands over a ``Call`` or a ``Chunk``. Their
  ``payload`` is what ``pack`` made of the arguments (bytes for processes, the objects
  themselves for threads), their ``function`` what ``function`` made of the callable. ``send``
  takes what it needs of the unit then and there: afterwards the unit is the engine's again (it
  may fail, be sent elsewhere, or drop its payload while the worker has yet to run it). A worker
  runs its units in the order sent, one at a time.
* **Outcomes** come back through ``pump(timeout)``, called by the one thread that pumps
  (``waiting.PumpRole``): each is ``(slot, kind, epoch, task_id, busy_ns, payload)``, ``kind``
  one of the reply kinds of ``gilfree._wire.protocol`` (READY, INIT_FAILED, RESULT, ERROR,
  CHUNK_RESULT, RETIRE, DECLINED). With ``encoded`` the payload is codec bytes, decoded by the
  unit (outside the engine's lock); otherwise it is the value itself. A kind with
  ``SHARED_FLAG`` holds resources of the worker until ``Worker.release(task_id)``, called once
  the payload is decoded. A transport whose completions arrive on threads of its own (threads,
  and a cluster client's callbacks) queues them for ``pump`` and wakes it; ``kick`` wakes a
  ``pump`` waiting in another thread.
* **Ends.** ``Worker.poll()`` gives the exit code once the worker has ended; the transport
  calls ``on_exit`` (from any thread) when it learns of an end, so the engine checks its
  workers without waiting for a poll. ``retire()`` asks a worker to finish what it was sent and
  end; ``kill()`` ends it now, whatever it runs (a thread cannot be killed: it is abandoned, and
  whatever it still reports carries an old epoch).
* **Values placed once.** ``pack(value, shared)`` may put parts of a value where the workers
  can reach them and append to ``shared`` what must live until the unit ends (shared-memory
  buffers; a cluster's scattered objects); the unit drops ``shared`` once it has ended. With
  ``places_per_call``, a map job keeps what its chunks' ``shared`` held until the job itself
  goes, so that a value every chunk carries is placed once per map, not again whenever no
  chunk happens to be out.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import BrokenExecutor
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gilfree._engine.units import Call, Chunk, EncodedFunction

#: ``(slot, kind, epoch, task_id, busy nanoseconds, payload)``: one reply of a worker.
Outcome = tuple[int, int, int, int, int, Any]


class Worker(Protocol):
    """One worker serving a slot, from its start to its end."""

    @property
    def pid(self) -> int:
        """The process running the worker's tasks (0 while not known yet)."""
        ...

    @property
    def handle(self) -> Any:
        """What ``executor._processes`` and ``Pool._pool`` show of it: a process-like object
        (``pid``, ``exitcode``, ``is_alive()``, ``join()``) or a ``threading.Thread``."""
        ...

    @property
    def end_reason(self) -> str | None:
        """How the worker was lost, in words, where an exit code would not say it (a cluster's
        worker); None otherwise."""
        ...

    def send(self, task_id: int, unit: Call | Chunk) -> None:
        """Hands ``unit`` to the worker (under the engine's lock)."""
        ...

    def release(self, task_id: int) -> None:
        """The outcome of ``task_id`` is decoded: its resources at the worker may go."""
        ...

    def retire(self) -> None:
        """Asks the worker to finish what it was sent, then end (it takes nothing more)."""
        ...

    def kill(self) -> None:
        """Ends the worker now (a thread is abandoned: see the module docstring)."""
        ...

    def poll(self) -> int | None:
        """The exit code once the worker has ended (negative: killed by that signal), else
        None."""
        ...

    def ended(self) -> None:
        """The engine has seen the end and settled the worker's units: what the worker left
        behind may go (called once, under the engine's lock)."""
        ...


class Transport(Protocol):
    """Starts workers, sends them units, reports what they return (see the module docstring)."""

    #: ``"process"`` or ``"thread"``: what ``start_method`` reports for threads, and messages.
    name: str
    #: Outcome payloads are codec bytes (decoded by the units), not the values themselves.
    encoded: bool
    #: Every slot gets a worker at the first submit (the stdlib's fork start method).
    starts_all: bool
    #: A worker busy-waits a moment for its next unit after replying: the engine then prefers
    #: the one that replied last (still awake); otherwise it lets the workers take turns.
    spins: bool
    #: What ``pack`` appends to a chunk's ``shared`` is worth keeping for the whole map (a
    #: cluster's placed values), not only the chunk (shared-memory buffers, reused at once).
    places_per_call: bool
    #: The error a broken pool raises (``BrokenProcessPool``, ``BrokenThreadPool``).
    broken_error: type[BrokenExecutor]
    #: Why the pool is broken when a worker's initializer raised (the stdlib's words).
    init_failed_reason: str
    #: A worker that ends before it is ready breaks the pool, as an initializer that raises
    #: does: what it ran (the initializer, the main script) ended it, and would end every
    #: worker after it (processes; a cluster's workers are lost for other reasons too).
    early_death_breaks: bool
    #: Called from any thread when a worker is known to have ended (installed by the engine).
    on_exit: Callable[[], None]

    def function(self, fn: Callable[..., Any]) -> EncodedFunction:
        """``(id, body)`` for units calling ``fn``; raises if ``fn`` cannot reach a worker."""
        ...

    def encoding_wait(self) -> Callable[[], object] | None:
        """What ``function`` would wait for now, if anything (the names of the workers' main
        module, while the template process still runs the main script): a coroutine calls
        it in a thread first, so that the event loop never waits. None: nothing to wait for."""
        ...

    def pack(self, value: Any, shared: list[Any]) -> Any:
        """``value`` (arguments, a chunk's items) as a unit's payload; raises if it cannot be
        sent. What the payload refers to and must outlive it goes into ``shared``."""
        ...

    def copied(self) -> int:
        """Bytes ``pack`` has copied into memory made for messages so far (shared memory): a
        map keeps each chunk's share of it bounded (see ``gilfree._engine.chunking``). 0 where
        ``pack`` copies nothing."""
        ...

    def start(self, slot: int, epoch: int) -> Worker:
        """Starts a worker on ``slot`` (under the engine's lock); raises if it cannot."""
        ...

    def pump(self, timeout: float) -> list[Outcome]:
        """Outcomes that arrived, waiting up to ``timeout`` seconds for the first (one thread
        at a time: the pumper)."""
        ...

    def kick(self) -> None:
        """Wakes a ``pump`` waiting in another thread."""
        ...

    def close(self) -> None:
        """No worker will be started any more: drops what starting one needed (initargs)."""
        ...

    def stopped(self) -> None:
        """Every worker has ended, at shutdown: what the transport started for itself (a
        cluster, a session) may go."""
        ...
