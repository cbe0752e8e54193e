"""How far a running chunk has got, told to the parent while it runs (``progress=`` of a map).

A chunk runs its items at C speed (``run_items``: ``list.extend`` over ``map``), so nothing is
added per item. Instead, while a watched chunk runs (its CHUNK carried ``WATCH_FLAG``), a
sampler thread of the worker's own reads the length of the chunk's results list every
``WATCH_SECONDS`` and reports it (PROGRESS, or the thread transport's outcome queue). Reading
``len()`` of a list another thread appends to is safe under the GIL, and on a free-threaded
build too (the length is read atomically). A chunk that ends within the first period reports
nothing: its reply says it all. The sampler needs the GIL to read, so a chunk whose function
never releases it (pure C calls) moves the bar only at its end.

Invariant: the sampler reports only while the chunk is watched, and only under ``_lock``; the
worker's loop stops watching (under ``_lock``) before it sends the chunk's reply. So a report
never runs beside the loop's own sends (the reply ring has one producer at a time), and never
comes after the chunk's reply. The thread ends after ``IDLE_PERIODS`` periods with nothing
watched, and is started again by the next watched chunk.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

#: Seconds between two reports of a running chunk (the display refreshes at most this often).
WATCH_SECONDS = 0.1
#: Periods with no watched chunk after which the sampler thread ends.
IDLE_PERIODS = 20


class ChunkWatch:
    """Reports ``report(task_id, items_done)`` for the watched chunk every ``WATCH_SECONDS``
    (see the module docstring)."""

    def __init__(self, report: Callable[[int, int], None]) -> None:
        self._report = report
        self._lock = threading.Lock()
        #: ``(task id, the chunk's results list)`` while a watched chunk runs.
        self._watched: tuple[int, list[Any]] | None = None
        self._thread: threading.Thread | None = None

    def begin(self, task_id: int, results: list[Any]) -> None:
        """A watched chunk starts; ``results`` is the list its items' results go into."""
        with self._lock:
            self._watched = (task_id, results)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._sample, name="gilfree-progress", daemon=True
                )
                self._thread.start()

    def end(self) -> None:
        """The watched chunk has ended: no report for it from now on."""
        with self._lock:
            self._watched = None

    def _sample(self) -> None:
        idle = 0
        while True:
            time.sleep(WATCH_SECONDS)
            with self._lock:
                watched = self._watched
                if watched is None:
                    idle += 1
                    if idle >= IDLE_PERIODS:
                        self._thread = None  # the next watched chunk starts another
                        return
                    continue
                idle = 0
                task_id, results = watched
                try:
                    self._report(task_id, len(results))
                except Exception:  # noqa: BLE001 - the parent is gone: the loop sees it too
                    continue
