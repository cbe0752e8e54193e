"""Outcomes that arrive on other threads (a worker thread, a cluster client's callbacks), queued
for the engine's ``pump``: the part the thread and cluster transports share."""

from __future__ import annotations

import queue
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gilfree._engine.transport import Outcome


class OutcomeQueue:
    """A queue of outcomes, and of None for a kick; only the pumper takes from it."""

    def __init__(self) -> None:
        self._outcomes: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()

    def report(self, outcome: Outcome) -> None:
        """Queues an outcome for ``pump`` (from any thread)."""
        self._outcomes.put(outcome)

    def pump(self, timeout: float) -> list[Outcome]:
        """The outcomes queued, waiting up to ``timeout`` for the first (GIL released)."""
        outcomes = self._outcomes
        try:
            first = outcomes.get(timeout=timeout) if timeout > 0 else outcomes.get_nowait()
        except queue.Empty:
            return []
        taken = [] if first is None else [first]
        while not outcomes.empty():  # only the pumper takes from it: get_nowait cannot fail
            outcome = outcomes.get_nowait()
            if outcome is not None:
                taken.append(outcome)
        return taken

    def kick(self) -> None:
        """Wakes a ``pump`` waiting in another thread."""
        self._outcomes.put(None)
