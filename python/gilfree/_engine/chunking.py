"""Adaptive chunk sizes for ``map(chunksize=None)``.

Aim: about 5 ms of work per message (``target_seconds``: a cluster's executor aims higher), so
neither tiny tasks nor medium ones (a DataFrame each, whose pickling and decoding cost the
parent per message) are drowned in per-message cost,
while keeping the end of a map balanced across workers. The size follows the cost per item of the
latest measured chunk (not an average: costs that grow along the input, as in ``map(fib,
range(n))``, are tracked sooner), grows at most 64-fold past the largest chunk measured, and does
not exceed a quarter of a worker's fair share of what is left (so the tail is cut into small
pieces) unless that would make chunks of less than half a millisecond of work (a floor itself
capped at a worker's fair share of what is left, applied only once a millisecond of work has
been measured, or ``trust_items`` items where messages cost so much more than cheap items that
a count is evidence enough (a cluster's: else the tail of a map of no-ops would go in dozens of
messages of a few items each, each a round trip of milliseconds), and never while costs rise
along the input). When the last few items go one by
one and their costs rise, they are handed out last-first (see ``expensive_tail``).

A chunk also copies at most about `MESSAGE_BYTES` into shared memory (learnt, as the cost, from
the latest chunk): each chunk in flight (two per worker, with the one being cut) holds a
shared buffer until its worker is done with it, and a map's first run must find that memory
fresh. Measured on 3000 arrays of 32 KiB (18 µs of work each), 2 workers: in chunks of 2 MiB
the first run took 47 ms and later ones 40, in chunks of 8 MiB (5 ms of work) 64–76 and 42–48;
in chunks of 512 KiB, 51 and 48 (the cost per message shows). 200 frames of 480 KB mapped as
fast in chunks of 4 frames as of 4 or 5, and slower in chunks of 2.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections import deque
from typing import Any

TARGET_SECONDS = 0.005
#: Chunks worth less work than this are not worth a message, even at the end of the input...
FLOOR_SECONDS = 0.0005
#: ...once this much work has been measured: a few microsecond-long items say too little about
#: the rest of the input to justify big chunks near its end.
FLOOR_TRUST_SECONDS = 0.001
GROWTH = 64
#: Bytes a chunk copies into shared memory, at most (unless one item copies more).
MESSAGE_BYTES = 2 << 20
#: Chunks whose costs must rise along the input before its tail is handed out last-first.
RISING_EVIDENCE = 3
#: A chunk of less work than this says nothing about how its items' costs change along the
#: input: the fixed cost of running a chunk dominates it, so its cost per item rises as chunks
#: shrink, whatever the items cost.
RISING_MIN_SECONDS = 1e-4


def checked_chunksize(chunksize: Any, too_small: str) -> int | None:
    """A map's ``chunksize`` argument as an int (None kept: adaptive). One under 1 raises
    ``ValueError(too_small)`` (formatted with ``chunksize``), as the stdlib's API raising it does;
    one that compares but is not an integer (``2.0``) raises ``ValueError`` too, as the stdlib
    executor's ``islice`` does, before any work is queued."""
    if chunksize is None:
        return None
    if chunksize < 1:  # a TypeError for a str, as in the stdlib
        raise ValueError(too_small.format(chunksize=chunksize))
    try:
        return operator.index(chunksize)
    except TypeError:
        raise ValueError(f"chunksize must be an integer, got {chunksize!r}") from None


class ChunkSizer:
    """Chooses the next chunk's size for one ``map`` call."""

    def __init__(
        self,
        fixed: int | None,
        worker_count: int,
        target_seconds: float = TARGET_SECONDS,
        trust_items: int | None = None,
    ) -> None:
        self._fixed = fixed
        #: Seconds of work per message (a cluster's messages cost more: it aims higher).
        self._target = target_seconds
        self._floor = target_seconds * FLOOR_SECONDS / TARGET_SECONDS
        self._worker_count = max(1, worker_count)
        self._seconds_per_item: float | None = None
        #: Bytes the latest chunk copied into shared memory per item (0: none, or not known).
        self._bytes_per_item = 0.0
        self._largest_measured = 0
        self._measured_seconds = 0.0
        #: Items measured, and how many make the floor trusted (None: only seconds do).
        self._measured_items = 0
        self._trust_items = trust_items
        #: The share per worker that the rest of the input is being cut into (0: none yet).
        self._share = 0
        self._recent: deque[tuple[int, float]] = deque(maxlen=RISING_EVIDENCE)

    @property
    def adaptive(self) -> bool:
        """Whether the sizes are chosen here (no ``chunksize`` was given)."""
        return self._fixed is None

    def next_size(self, remaining: int) -> int:
        """The size of the next chunk, given ``remaining`` items not yet cut."""
        if self._fixed is not None:
            return min(self._fixed, remaining)
        if self._seconds_per_item is None:
            return 1
        seconds_per_item = max(self._seconds_per_item, 1e-9)
        size = min(int(self._target / seconds_per_item), self._largest_measured * GROWTH)
        if self._bytes_per_item > 0:
            size = min(size, int(MESSAGE_BYTES / self._bytes_per_item))
        balance = math.ceil(remaining / (4 * self._worker_count))
        # The floor never takes more than a worker's fair share: costs measured on cheap early
        # items say little about later ones when costs grow along the input.
        fair_share = math.ceil(remaining / self._worker_count)
        floor = 0
        if self._floor_trusted() and not self._costs_rising():
            floor = int(self._floor / seconds_per_item)
            if floor >= fair_share:
                # What is left is worth less than a floor per worker: one share each. The
                # share is kept while this lasts, so the workers served after the first get
                # as much as it did, rather than half of what each one before them left.
                self._share = max(self._share, fair_share)
                floor = self._share
            else:
                self._share = 0
        return max(1, min(size, max(balance, floor), remaining))

    def record(self, start: int, item_count: int, busy_seconds: float) -> None:
        """Learns from a finished chunk of ``item_count`` items from input position ``start``
        that took ``busy_seconds``."""
        if item_count > 0:
            self._seconds_per_item = busy_seconds / item_count
            self._largest_measured = max(self._largest_measured, item_count)
            self._measured_seconds += busy_seconds
            self._measured_items += item_count
            if busy_seconds >= RISING_MIN_SECONDS:
                self._recent.append((start, self._seconds_per_item))

    def record_copied(self, item_count: int, copied: int) -> None:
        """Learns that a chunk of ``item_count`` items copied ``copied`` bytes into shared
        memory when it was encoded."""
        if item_count > 0:
            self._bytes_per_item = copied / item_count

    def _floor_trusted(self) -> bool:
        """Whether enough has been measured to cut no chunk below the floor."""
        if self._measured_seconds >= FLOOR_TRUST_SECONDS:
            return True
        return self._trust_items is not None and self._measured_items >= self._trust_items

    def expensive_tail(self, remaining: int) -> bool:
        """Whether the last ``remaining`` items should be handed out last-first: they go one by
        one, they are few (two per worker at most), and the cost per item has been rising along
        the input, so the last items are probably the longest. Starting the longest first
        keeps one of them from starting last and running alone (longest-processing-time
        first); results still come back in input order."""
        if self._fixed is not None or remaining > 2 * self._worker_count:
            return False
        return self.next_size(remaining) == 1 and self._costs_rising()

    def _costs_rising(self) -> bool:
        """Whether the cost per item rose across the last chunks, taken in input order."""
        if len(self._recent) < RISING_EVIDENCE:
            return False
        costs = [cost for _, cost in sorted(self._recent)]
        return all(earlier < later for earlier, later in itertools.pairwise(costs))
