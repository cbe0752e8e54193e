"""An engine's lifecycle: the collector thread, shutdown, and clean-up at exit or collection.

The collector thread sleeps while nothing is outstanding and no worker has ended unnoticed. When
work is outstanding and no caller is pumping, it pumps (and lingers a moment after the last unit
ended: ``LINGER_SECONDS``) (so futures complete, callbacks run,
``wait``/``as_completed`` return even if nobody calls ``result()``); when a worker ended, it
checks the workers (a pool replaces one at once). It polls every few milliseconds while a caller
holds the role. Shutdown's last pumping (``stop_workers``) holds the role too, so the collector
never pumps beside it.

Shutdown: ``wait=True`` drains the work in the calling thread, then stops the workers;
``wait=False`` leaves both to the collector. At interpreter exit every live engine is shut down
with ``wait=True``, as concurrent.futures does (a pool's is terminated instead, as
multiprocessing's pool finalizer terminates it: ``terminate_at_exit``), and before the zygotes
close: a task still running then was forked from one, and closing it first would kill the task
(the zygote's exit handler runs ``before_close`` hooks first; an ``atexit`` handler of our own
would depend on the order in which modules happened to be imported).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from gilfree._engine.waiting import SLICE_SECONDS
from gilfree._workers import zygote

if TYPE_CHECKING:
    from gilfree._engine.engine import Engine

_OPEN, _CLOSING, _CLOSED = "open", "closing", "closed"
_live: weakref.WeakSet[Lifecycle] = weakref.WeakSet()
WORKER_EXIT_TIMEOUT = 5.0
#: The collector's poll while work is outstanding but a caller holds the pumper role.
COLLECTOR_POLL_SECONDS = 0.005
#: How long the collector keeps pumping after the last outstanding unit ended, since more work
#: often follows at once (a coroutine awaiting one run after another, a callback submitting
#: the next task): the next submit then finds it waiting on the transport, and costs no
#: wake-up of the collector. It waits on the transport's doorbell, so lingering is nearly free.
LINGER_SECONDS = 0.001


class Lifecycle:
    """Owns an engine's collector thread and its shutdown."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._state = _OPEN
        self._wake = threading.Condition(threading.Lock())
        self._idle = True
        self._thread: threading.Thread | None = None
        self._finalize_lock = threading.Lock()
        #: Terminated rather than drained at interpreter exit (``multiprocessing.Pool``'s way).
        self.terminate_at_exit = False
        _live.add(self)
        # The engine calls the collector through these two hooks and knows nothing else of it.
        engine.on_work = self.note_submit
        engine.pump_role.wake_collector = self.wake

    def note_submit(self) -> None:
        """Called after work was queued: makes sure the collector exists and is awake. If it
        cannot start (Python refuses new threads while it finalizes), the pool is broken, as
        concurrent.futures' is when it cannot start its threads (gh-109047)."""
        if self._thread is None:
            refused: RuntimeError | None = None
            with self._wake:
                if self._thread is None:
                    thread = threading.Thread(
                        target=self._collect, name="gilfree-collector", daemon=True
                    )
                    try:
                        thread.start()
                    except RuntimeError as error:
                        refused = error
                    else:
                        self._thread = thread
            if refused is not None:
                self._engine.break_pool("could not start the pool's collector thread", refused)
                return
        if self._idle:
            self.wake()

    def wake(self) -> None:
        """Wakes the collector to look for outstanding work."""
        with self._wake:
            self._idle = False
            self._wake.notify_all()

    def _collect(self) -> None:
        engine = self._engine
        while True:
            with self._wake:
                if self._state == _CLOSED:
                    return
                # Idle is announced before the look at the work, never after: a submit queues
                # its work, then reads _idle (note_submit, without the lock), so either this
                # look sees the work, or the submit sees _idle and wakes this wait.
                self._idle = True
                idle = engine.outstanding() == 0
                if idle and (self._state != _OPEN or not engine.exits_unchecked()):
                    if self._state == _CLOSING:
                        self._idle = False
                        break
                    self._wake.wait()
                    continue
                self._idle = False
            role = engine.pump_role
            if role.try_take_for_collector():
                try:
                    linger_until = 0.0
                    while not role.callers_waiting:
                        if engine.outstanding() > 0:
                            _pump(engine, SLICE_SECONDS)
                            linger_until = time.monotonic() + LINGER_SECONDS
                        elif time.monotonic() < linger_until:
                            _pump(engine, LINGER_SECONDS / 2)
                        elif engine.exits_unchecked() and self._state == _OPEN:
                            _pump(engine, 0.0)  # checks the workers: no reply to wait for
                        else:
                            break
                finally:
                    role.release()
            else:
                with self._wake:
                    self._wake.wait(COLLECTOR_POLL_SECONDS)
        self._finalize()

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        """Stops accepting work; see the module docstring."""
        self._engine.start_deferred()  # accepted before: queued as if started at once
        with self._wake:
            if self._state == _OPEN:
                self._state = _CLOSING
        self._engine.close()
        if cancel_futures:
            self._engine.cancel_pending()
        else:
            self._engine.unpark_all()
        if not wait:
            if self._thread is None:
                self._finalize()  # nothing was ever submitted: no worker to wait for
            else:
                self.wake()
            return
        self._engine.pump_role.wait_until(lambda: self._engine.outstanding() == 0, None)
        self._finalize()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def terminate(self, error: BaseException) -> None:
        """Stops now: pending work is cancelled, running work fails with ``error``, the
        workers are killed and reaped."""
        self._engine.start_deferred(refused=error)  # as the jobs started at once fail
        with self._wake:
            if self._state == _OPEN:
                self._state = _CLOSING
        self._engine.close()
        self._engine.cancel_pending()
        self._engine.kill_workers(error, final=True)
        self._finalize()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            self.wake()
            thread.join()

    def _finalize(self) -> None:
        with self._finalize_lock:
            if self._state == _CLOSED:
                return
            with self._engine.pump_role.held():  # stop_workers pumps the transport itself
                self._engine.stop_workers(WORKER_EXIT_TIMEOUT)
            with self._wake:
                self._state = _CLOSED
                self._wake.notify_all()
        _live.discard(self)


def _pump(engine: Engine, timeout: float) -> None:
    """One pump by the collector thread. Nobody would see an exception escaping it: the thread
    would end and every waiter hang. So the error (a fault of gilfree's) is printed and breaks
    the pool, as the cause every caller gets."""
    try:
        engine.pump_once(timeout)
    except Exception as error:  # noqa: BLE001 - see above
        import traceback

        traceback.print_exc()
        engine.break_pool("an internal error stopped the pool's result collection", error)


def _shutdown_all() -> None:
    for lifecycle in list(_live):
        if lifecycle._engine.owner != os.getpid():  # noqa: SLF001 - inherited through a fork
            continue
        if lifecycle.terminate_at_exit:
            from concurrent.futures import CancelledError

            lifecycle.terminate(CancelledError("the pool was terminated at interpreter exit"))
        else:
            lifecycle.shutdown(wait=True, cancel_futures=False)


zygote.before_close.append(_shutdown_all)
