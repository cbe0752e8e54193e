"""Adaptive chunk sizes for ``map(chunksize=None)``.

Aim: a few milliseconds of work per message, so tiny tasks are not drowned in per-message cost,
while keeping the end of a map balanced across workers. The size follows the cost per item of the
latest measured chunk (not an average: costs that grow along the input, as in ``map(fib,
range(n))``, are tracked sooner), grows at most 64-fold past the largest chunk measured, and does
not exceed a quarter of a worker's fair share of what is left (so the tail is cut into small
pieces) unless that would make chunks of less than half a millisecond of work (a floor itself
capped at a worker's fair share of what is left, and applied only once a millisecond of work has
been measured).
"""

from __future__ import annotations

import math

TARGET_SECONDS = 0.002
#: Chunks worth less work than this are not worth a message, even at the end of the input...
FLOOR_SECONDS = 0.0005
#: ...once this much work has been measured: a few microsecond-long items say too little about
#: the rest of the input to justify big chunks near its end.
FLOOR_TRUST_SECONDS = 0.001
GROWTH = 64


class ChunkSizer:
    """Chooses the next chunk's size for one ``map`` call."""

    def __init__(self, fixed: int | None, worker_count: int) -> None:
        self._fixed = fixed
        self._worker_count = max(1, worker_count)
        self._seconds_per_item: float | None = None
        self._largest_measured = 0
        self._measured_seconds = 0.0

    def next_size(self, remaining: int) -> int:
        """The size of the next chunk, given ``remaining`` items not yet cut."""
        if self._fixed is not None:
            return min(self._fixed, remaining)
        if self._seconds_per_item is None:
            return 1
        seconds_per_item = max(self._seconds_per_item, 1e-9)
        size = min(int(TARGET_SECONDS / seconds_per_item), self._largest_measured * GROWTH)
        balance = math.ceil(remaining / (4 * self._worker_count))
        # The floor never takes more than a worker's fair share: costs measured on cheap early
        # items say little about later ones when costs grow along the input.
        fair_share = math.ceil(remaining / self._worker_count)
        floor = 0
        if self._measured_seconds >= FLOOR_TRUST_SECONDS:
            floor = min(int(FLOOR_SECONDS / seconds_per_item), fair_share)
        return max(1, min(size, max(balance, floor), remaining))

    def record(self, item_count: int, busy_seconds: float) -> None:
        """Learns from a finished chunk of ``item_count`` items that took ``busy_seconds``."""
        if item_count > 0:
            self._seconds_per_item = busy_seconds / item_count
            self._largest_measured = max(self._largest_measured, item_count)
            self._measured_seconds += busy_seconds
