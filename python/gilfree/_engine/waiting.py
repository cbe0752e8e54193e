"""Who collects the workers' outcomes (``Transport.pump``): one "pumper" thread at a time.

A caller waiting for a result pumps itself (no thread hand-off on the round trip). The
collector thread pumps only when work is outstanding and no caller does; a caller that finds
the collector pumping kicks it out of its wait and takes over. Callers that find another caller
pumping wait on ``progress``, which the pumper notifies after each batch and when it leaves.
A pumper re-entering from a done-callback keeps the role and pumps inline.
Every wait is cut into slices of at most SLICE_SECONDS, so Ctrl-C is noticed promptly.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

#: Longest single wait; waiters re-check their deadline, dead workers and signals this often.
SLICE_SECONDS = 0.05


class PumpRole:
    """The pumper role of one engine. ``pump_once(timeout)`` drains and handles replies;
    ``kick()`` interrupts a ``pump_once`` waiting in another thread."""

    def __init__(
        self,
        pump_once: Callable[[float], None],
        kick: Callable[[], None],
        on_interrupt: Callable[[], None],
    ) -> None:
        self._pump_once = pump_once
        self._kick = kick
        self._on_interrupt = on_interrupt
        self.progress = threading.Condition(threading.Lock())
        self._holder: int | None = None
        self._collector_holds = False
        self.callers_waiting = 0
        #: Asks the collector thread to pump if nobody else does (a done-callback was added,
        #: or ``wait``/``as_completed`` began waiting): installed by ``Lifecycle``.
        self.wake_collector: Callable[[], None] = _nothing

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Pumps, or waits for the pumper, until ``predicate()`` holds or ``timeout`` passes.

        A KeyboardInterrupt (Ctrl-C) raised meanwhile calls ``on_interrupt`` (which stops the
        running tasks) and propagates; waits are sliced so it arrives within SLICE_SECONDS."""
        try:
            return self._wait_until(predicate, timeout)
        except KeyboardInterrupt:
            self._on_interrupt()
            raise

    def _wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.get_ident()
        if self._holder == me:  # re-entered from a done-callback
            self._pump_until(predicate, deadline)
            return predicate()
        while not predicate():
            remaining = SLICE_SECONDS if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self.progress:
                if self._holder is not None:
                    self.callers_waiting += 1
                    if self._collector_holds:
                        self._kick()
                    self.progress.wait(min(remaining, SLICE_SECONDS))
                    self.callers_waiting -= 1
                    continue
                self._holder = me
            try:
                self._pump_until(predicate, deadline)
            finally:
                self.release()
        return True

    def _pump_until(self, predicate: Callable[[], bool], deadline: float | None) -> None:
        while not predicate():
            if deadline is None:
                slice_seconds = SLICE_SECONDS
            else:
                slice_seconds = min(SLICE_SECONDS, deadline - time.monotonic())
                if slice_seconds <= 0:
                    return
            self._pump_once(slice_seconds)

    def try_take_for_collector(self) -> bool:
        """Takes the role for the collector if it is free and no caller waits for it."""
        with self.progress:
            if self._holder is not None or self.callers_waiting:
                return False
            self._holder = threading.get_ident()
            self._collector_holds = True
            return True

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Holds the role for a block, however long its holder keeps it: for the last pumping
        at shutdown, which must not run beside the collector's (one pumper at a time)."""
        me = threading.get_ident()
        if self._holder == me:
            yield
            return
        with self.progress:
            self.callers_waiting += 1  # the collector gives the role up and takes it no more
            try:
                while self._holder is not None:
                    if self._collector_holds:
                        self._kick()
                    self.progress.wait(SLICE_SECONDS)
            finally:
                self.callers_waiting -= 1
            self._holder = me
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        """Gives the role up and wakes the callers waiting for it."""
        with self.progress:
            self._holder = None
            self._collector_holds = False
            if self.callers_waiting:
                self.progress.notify_all()

    def notify_progress(self) -> None:
        """Wakes callers waiting on another pumper (after it completed some futures)."""
        if self.callers_waiting:
            with self.progress:
                self.progress.notify_all()


def _nothing() -> None:
    """The default of ``wake_collector`` while no collector exists."""
