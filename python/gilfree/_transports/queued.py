"""Outcomes that arrive on other threads (a worker thread, a cluster client's callbacks), queued
for the engine's ``pump``: the part the thread and cluster transports share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gilfree._core import ThreadQueue

if TYPE_CHECKING:
    from gilfree._engine.transport import Outcome


class OutcomeQueue:
    """A queue of outcomes, and of None for a kick; only the pumper takes from it.

    ``spin_us``: how long ``pump`` busy-waits (GIL released) before it sleeps. Threads of this
    process reply within microseconds, and a sleeping pumper costs a wake-up per reply; a
    cluster's replies come over the network, and spinning for them would only burn a core.
    """

    def __init__(self, spin_us: float = 0.0) -> None:
        self._outcomes = ThreadQueue()
        self._spin_us = spin_us

    def report(self, outcome: Outcome) -> None:
        """Queues an outcome for ``pump`` (from any thread)."""
        self._outcomes.put(outcome)

    def pump(self, timeout: float) -> list[Outcome]:
        """The outcomes queued, waiting up to ``timeout`` for the first (GIL released)."""
        taken: list[Outcome | None] = self._outcomes.take(timeout, self._spin_us)
        return [outcome for outcome in taken if outcome is not None]

    def kick(self) -> None:
        """Wakes a ``pump`` waiting in another thread."""
        self._outcomes.put(None)
