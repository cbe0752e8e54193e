"""Ray: a cluster transport (``gilfree._transports.cluster``) behind ``gilfree.ray.RayExecutor``.

Each lane is a Ray actor of its own (``UnitRunner``, never restarted by Ray: a lane whose actor
died ends as a crash, and ``retries=`` decides whether its unit runs again). The actors take
Ray's default resources: a CPU to be placed, none held while they live. So an idle executor
reserves nothing: other Ray work, and other executors, still run (``max_workers`` bounds the
executor's own concurrency). Ray runs an actor's calls one at a time in the order submitted,
so a lane submits each unit as soon as it is sent: the next one waits in the actor's queue, not
a round trip away.

Payloads and replies travel pickled by gilfree (``gilfree._workers.cluster``), so values arrive
as through the stdlib's executor, arrays writeable, not as Ray's read-only views of its object
store. Large values are put in the object store once (``ray.put``), pickled: a payload carries
each as a ``Placed`` key, and the task gets their references beside it, which Ray resolves on
the worker; each unit loads a copy of its own. Ray can stop a running unit: killing the lane
kills its actor's process (``ray.kill``), so per-task timeouts and ``kill_on_cancel`` work as on
gilfree's own workers.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Future
from typing import Any

import ray

from gilfree._engine.units import function_name
from gilfree._transports.cluster import ClusterTransport, Lost, Packed
from gilfree._workers.cluster import Placed, UnitRunner, dumps

#: A Ray task: its reference, and the future of its result.
Task = tuple["ray.ObjectRef[bytes]", "Future[bytes]"]


class BrokenRayExecutor(BrokenExecutor):
    """The Ray executor cannot run work any more."""


class RayTransport(ClusterTransport):
    """Runs units on Ray actors, one per lane, in the Ray session this process is connected to
    (see the module docstring)."""

    name = "ray"
    broken_error: type[BrokenExecutor] = BrokenRayExecutor
    init_failed_reason = "the initializer raised on a Ray worker"
    can_kill = True
    in_order = True

    def __init__(self, owned: list[Callable[[], object]]) -> None:
        super().__init__(owned)
        self._runner = ray.remote(max_restarts=0, max_task_retries=0)(UnitRunner)
        self._keys = itertools.count()
        #: The function pickled last, and its pickle: a map sends one function many times.
        self._function: tuple[Callable[..., Any] | None, bytes] = (None, b"")

    def open(self) -> Any:
        """A new actor for a lane (Ray starts it in the background; calls wait for it)."""
        if not ray.is_initialized():  # else Ray would start a local session of its own
            raise RuntimeError(
                "the Ray session this executor runs on was shut down (ray.shutdown()): shut the"
                " executor down first"
            )
        return self._runner.remote()

    def shut(self, target: Any) -> None:
        """Kills the lane's actor, and the unit it may be running (nothing left to kill once
        the session is gone)."""
        if ray.is_initialized():
            ray.kill(target, no_restart=True)

    def wind_up(self, target: Any) -> None:
        """Asks the lane's actor to exit once the calls queued before have run."""
        if ray.is_initialized():
            target.stop.remote()

    def pack(self, value: Any, shared: list[Any]) -> Packed:
        """As for every cluster, then pickled; raises if it cannot be."""
        return self.pickled(super().pack(value, shared))

    def place(self, value: Any) -> Placed:
        """Puts ``value``, pickled, in the object store (a task loads a copy of its own, of
        the value's own type: a bytearray stays one): a key for payloads, holding its
        reference."""
        return Placed(next(self._keys), ray.put(dumps(value)))

    def submit(
        self,
        target: Any,
        kind: int,
        fn: Callable[..., Any],
        payload: Packed,
        timeout: float | None,
    ) -> Task:
        """One call of the lane's actor, named for ``fn`` on the dashboard (a timeout is the
        front end's to keep: it kills the lane)."""
        last, function = self._function
        if last is not fn:
            function = dumps(fn)
            self._function = (fn, function)
        call = target.run.options(name=function_name(fn))
        ref = call.remote(kind, function, payload.blob, payload.keys, *payload.refs)
        return ref, ref.future()

    def when_done(self, task: Task, callback: Callable[[], None]) -> None:
        """Ray completes the future on a thread of its own."""
        task[1].add_done_callback(lambda _done: callback())

    def cancel(self, task: Task) -> None:
        """Nothing to do: ``shut`` kills the actor, and its queued calls with it."""

    def settle(self, task: Task) -> tuple[int, int, Any] | Lost | BaseException:
        error = task[1].exception()
        if error is None:
            reply: tuple[int, int, Any] = pickle.loads(task[1].result())
            return reply
        if isinstance(error, ray.exceptions.RayTaskError):
            # run_unit returns the call's own exceptions: this one is of the transport (a
            # payload that cannot be unpickled there, a reply that cannot be pickled).
            cause: BaseException = error.cause or error
            return cause
        if isinstance(error, ray.exceptions.RayError):
            summary = str(error).strip().partition("\n")[0]  # Ray adds a page of advice
            return Lost(f"Ray lost the worker running it ({type(error).__name__}: {summary})")
        return error
