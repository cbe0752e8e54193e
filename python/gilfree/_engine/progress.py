"""Progress of a map, item by item: ``progress=`` of ``map``, ``imap``, ``imap_unordered``,
``starmap`` and ``amap``.

**Counting.** An item counts once its chunk has ended (every item of it, failed ones too), and
while a chunk runs, as its worker reports (PROGRESS: how many of the chunk's items are done;
``gilfree._workers.progress``). The count is the items of ended chunks plus the latest report of
each running chunk. A report never lowers a chunk's count, and a chunk run again after its
worker died keeps its highest report, so the count never goes down; it ends at the total when
every item has run.

**Total.** ``len()`` of the input, else ``operator.length_hint``, else the ``total=`` given,
else unknown (None) until the input runs out; then the number of items read, which also
corrects a length hint that was wrong.

**Display.** Refreshed at most every ``REFRESH_SECONDS``, and once more at the end with the
final count, from the thread that collects results. ``progress=True``: a ``tqdm.auto`` bar (a
widget in notebooks); a class (a tqdm class), or a ``functools.partial`` of one (its options:
``partial(tqdm, desc="fit")``): a bar of that class, made with ``total=``; any other callable:
called as ``progress(done, total)``.
"""

from __future__ import annotations

import functools
import operator
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gilfree._engine.units import Chunk

#: Shortest time between two refreshes of a display (10 a second at most).
REFRESH_SECONDS = 0.1


class Display(Protocol):
    """Where the count goes: a tqdm bar, or the user's callable."""

    def show(self, done: int, total: int | None) -> None: ...
    def close(self) -> None: ...


def start(progress: Any, iterables: tuple[Any, ...], total: Any) -> ItemProgress | None:
    """The count of a map over ``iterables`` with ``progress=`` and ``total=`` (None for no
    progress), its display shown at 0. Call it once the map's other arguments are checked."""
    display = display_for(progress)
    given = check_total(total)
    if display is None:
        return None
    return ItemProgress(display, total_of(iterables, given))


def check_total(total: Any) -> int | None:
    """``total`` if it is a number of items (0 or more) or None; else ValueError."""
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise ValueError(f"total must be a number of items (0 or more) or None, got {total!r}")
    return total


def display_for(progress: Any) -> Display | None:
    """The display ``progress=`` asks for, or None for no progress (False, None); raises a
    clear error for anything else, and for ``True`` without tqdm."""
    if progress is None or progress is False:
        return None
    if progress is True:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            raise ImportError(
                "progress=True shows a tqdm bar, but tqdm is not installed: pip install tqdm"
                " (or gilfree[progress]), or pass progress=a callable(done, total)"
            ) from None
        return _Bar(tqdm)
    if isinstance(progress, type) or (
        isinstance(progress, functools.partial) and isinstance(progress.func, type)
    ):
        return _Bar(progress)  # a bar class, or one with its options: partial(tqdm, desc=...)
    if callable(progress):
        return _Callback(progress)
    raise TypeError(
        f"progress must be True, False, a tqdm class or a callable(done, total), got {progress!r}"
    )


def total_of(iterables: tuple[Any, ...], given: Any) -> int | None:
    """The total of a map over ``iterables`` (see the module docstring): the shortest one's
    ``len()`` or length hint, if each has one, else ``given``. An input whose ``len()`` or
    hint raises counts as having none."""
    if given is not None and (isinstance(given, bool) or not isinstance(given, int) or given < 0):
        raise ValueError(f"total must be a number of items (0 or more) or None, got {given!r}")
    lengths = [_length(iterable) for iterable in iterables]
    if lengths and all(length is not None for length in lengths):
        return min(length for length in lengths if length is not None)
    return given


def _length(iterable: Any) -> int | None:
    try:
        return len(iterable)
    except Exception:  # noqa: BLE001 - no len(), or one that raises: try the hint
        pass
    try:
        hint = operator.length_hint(iterable, -1)
    except Exception:  # noqa: BLE001 - a hint that raises is no hint
        return None
    return hint if hint >= 0 else None


class ItemProgress:
    """The count of one map's items, shown on a ``Display`` (see the module docstring). Called
    from the thread collecting results, and from the map's reader when it stops."""

    def __init__(self, display: Display, total: int | None) -> None:
        self._display = display
        self._lock = threading.Lock()
        self._total = total
        #: Items of the chunks that have ended.
        self._ended = 0
        #: The highest report of each running chunk, by the index of its first item.
        self._running: dict[int, int] = {}
        self._shown_at = time.monotonic()
        #: Whether the input has run out (``input_ended``): till then the total is a guess (a
        #: length hint, or ``total=``), and the display stays open past it.
        self._input_ended = False
        #: What the display shows: a count is shown once.
        self._shown: tuple[int, int | None] = (0, total)
        self._closed = False
        display.show(0, total)  # in the caller's thread: an error here fails the call
        #: The display from now on: shown from the thread collecting results.
        self._display = _Guarded(display)
        if total == 0:
            self.close()

    def count(self) -> int:
        """Items done so far."""
        with self._lock:
            return self._ended + sum(self._running.values())

    def running(self, chunk: Chunk, done: int) -> None:
        """The worker running ``chunk`` reports ``done`` of its items done."""
        with self._lock:
            if done > self._running.get(chunk.start, 0):
                self._running[chunk.start] = min(done, chunk.count)
                self._refresh(final=False)

    def ended(self, chunk: Chunk) -> None:
        """``chunk`` has ended: all its items count."""
        with self._lock:
            self._running.pop(chunk.start, None)
            self._ended += chunk.count
            final = self._input_ended and self._total is not None and self._ended >= self._total
            self._refresh(final)
        if final:
            self.close()

    def input_ended(self, count: int) -> None:
        """The input ran out after ``count`` items: that is the total."""
        with self._lock:
            self._total = count
            self._input_ended = True
            final = self._ended >= count
            self._refresh(final)
        if final:
            self.close()

    def close(self) -> None:
        """Shows the final count and closes the display (once)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._show()
            self._display.close()

    def _refresh(self, final: bool) -> None:
        if self._closed:
            return
        now = time.monotonic()
        if final or now - self._shown_at >= REFRESH_SECONDS:
            self._shown_at = now
            self._show()

    def _show(self) -> None:
        shown = (self._ended + sum(self._running.values()), self._total)
        if shown != self._shown:
            self._shown = shown
            self._display.show(*shown)


class _Guarded:
    """A display whose errors are printed, once, rather than raised: it is shown from the
    thread collecting every call's results, which an exception would end (every caller would
    then wait for ever). A display that raised shows nothing more; the map goes on."""

    def __init__(self, display: Display) -> None:
        self._display: Display | None = display

    def show(self, done: int, total: int | None) -> None:
        self._call("show", done, total)

    def close(self) -> None:
        self._call("close")

    def _call(self, method: str, *args: Any) -> None:
        if self._display is None:
            return
        try:
            getattr(self._display, method)(*args)
        except Exception:  # noqa: BLE001 - see the class docstring
            import sys
            import traceback

            self._display = None
            sys.stderr.write("Exception in a gilfree progress display (it shows no more):\n")
            traceback.print_exc()


class _Bar:
    """A tqdm bar (``tqdm_class(total=...)``), moved to each count shown."""

    def __init__(self, tqdm_class: Callable[..., Any]) -> None:
        self._tqdm_class = tqdm_class
        self._bar: Any = None

    def show(self, done: int, total: int | None) -> None:
        bar = self._bar
        if bar is None:
            bar = self._bar = self._tqdm_class(total=total)
        if total != bar.total:
            bar.total = total
            bar.refresh()
        if done > bar.n:
            bar.update(done - bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _Callback:
    """The user's ``progress(done, total)``."""

    def __init__(self, callback: Callable[[int, int | None], object]) -> None:
        self._callback = callback

    def show(self, done: int, total: int | None) -> None:
        self._callback(done, total)

    def close(self) -> None:
        """Nothing to close: the last call had the final count."""
