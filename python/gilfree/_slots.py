"""One worker slot: the ring pair a worker process serves, and what the parent knows of it."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from gilfree._launch import WorkerProcess
from gilfree._protocol import ONE_OFF

#: Functions a worker keeps at most; the parent tells it which to drop.
WORKER_FUNCTION_CACHE = 256

#: Tasks queued per worker when its messages take less than this (pipelining); 1 otherwise,
#: so long tasks are handed out one at a time to whichever worker is free (balance).
PIPELINE_BELOW_SECONDS = 0.005


class Slot:
    """A slot's state. ``epoch`` counts the workers that served it; replies of older epochs are
    dropped. Guarded by the engine's lock."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.epoch = 0
        self.process: WorkerProcess | None = None
        self.ready = False
        self.retiring = False
        self.inflight: dict[int, Any] = {}
        self.functions: OrderedDict[int, None] = OrderedDict()
        self.quota: int | None = None
        self.busy_seconds: float | None = None
        self.last_reply = 0.0

    def live(self) -> bool:
        """Whether a worker has been started here and not yet seen to end."""
        return self.process is not None

    def capacity(self) -> int:
        """How many more units of work this slot accepts now."""
        if self.process is None or self.retiring:
            return 0
        fast = self.busy_seconds is not None and self.busy_seconds < PIPELINE_BELOW_SECONDS
        return (2 if fast else 1) - len(self.inflight)

    def remember_function(self, function_id: int) -> tuple[bool, int]:
        """Notes that ``function_id`` is about to be used here. Returns whether its body must be
        sent, and the id the worker should forget to stay within its cache (0: none)."""
        if function_id == ONE_OFF:
            return True, 0
        if function_id in self.functions:
            self.functions.move_to_end(function_id)
            return False, 0
        self.functions[function_id] = None
        if len(self.functions) > WORKER_FUNCTION_CACHE:
            return True, self.functions.popitem(last=False)[0]
        return True, 0

    def record_busy(self, seconds: float) -> None:
        """Updates the moving estimate of seconds per message."""
        previous = self.busy_seconds
        self.busy_seconds = seconds if previous is None else 0.5 * (previous + seconds)

    def clear(self) -> list[Any]:
        """Forgets the ended worker; returns the work it had in flight."""
        lost = list(self.inflight.values())
        self.inflight.clear()
        self.functions.clear()
        self.process = None
        self.ready = False
        self.retiring = False
        self.quota = None
        self.busy_seconds = None
        self.epoch += 1
        return lost
