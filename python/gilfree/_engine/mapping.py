"""``Executor.map``'s two ends: taking the input, and handing back the results in order."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from gilfree._engine.units import Chunk, MapJob
    from gilfree._engine.waiting import PumpRole


def snapshot(iterable: Iterable[Any]) -> Sequence[Any]:
    """The items of ``iterable``, taken now as the stdlib's ``map`` does. Immutable sequences
    are kept as they are: a ``range`` is cut into sub-ranges, so its numbers are never built in
    the parent nor pickled one by one."""
    kind = type(iterable)  # by identity: a metaclass's ``==`` is never called
    if kind is range or kind is tuple or kind is str or kind is bytes:
        return iterable  # type: ignore[return-value]
    if kind is list:
        return list(iterable)
    # Iterated only, as the stdlib's map (zip) does: ``list(iterable)`` would ask its
    # ``__len__`` or ``__length_hint__`` first, and pass on anything but a TypeError they raise.
    return list(itertools.chain(iterable))


def lazy(iterables: tuple[Iterable[Any], ...]) -> tuple[Sequence[Any] | Iterator[Any], bool]:
    """``(items, star)`` of a lazy map (``amap``): the input read only as chunks are cut, or
    kept whole where it is an immutable sequence (a ``range`` is cut into sub-ranges); several
    iterables are zipped, lazily, into argument tuples."""
    if len(iterables) != 1:
        if not iterables:
            raise TypeError("amap() needs at least one iterable")
        return zip(*iterables, strict=False), True
    iterable = iterables[0]
    kind = type(iterable)  # by identity, as in snapshot
    if kind is range or kind is tuple or kind is str or kind is bytes:
        return iterable, False  # type: ignore[return-value]
    return iter(iterable), False


def results(
    role: PumpRole,
    job: MapJob,
    deadline: float | None,
    resume: Callable[[MapJob], None] | None = None,
) -> Iterator[Any]:
    """The results of ``job`` in input order.

    Each chunk's list is drained by ``list.pop`` from a C-level iterator, so a result is
    released as soon as the caller has taken it, and the per-item cost stays out of Python.
    The drain counts the items: a result is never compared with anything (``iter(pop,
    sentinel)`` would call ``result == sentinel``, which raises for a numpy array).

    A job with a window (a lazy map) learns how far its reader has got, and ``resume`` lets
    the engine cut more once it has.
    """
    return MapResults.over(_chunks(role, job, deadline, resume))


class MapResults(itertools.chain):  # type: ignore[type-arg]  # chain's C iteration, and a close()
    """A map's results: ``itertools.chain``'s iteration, at C speed per item, with the
    ``close()`` of the stdlib's ``map`` generator: closing stops the map (what has not started
    is cancelled), as dropping the iterator does."""

    chunks: Generator[Iterator[Any], None, None]

    @classmethod
    def over(cls, chunks: Generator[Iterator[Any], None, None]) -> MapResults:
        """The results of ``chunks``, one iterator per chunk."""
        results = cast("MapResults", cls.from_iterable(chunks))
        results.chunks = chunks
        return results

    def close(self) -> None:
        """Stops the map: its chunks not started are cancelled. Later ``next()`` calls give
        what is left of the chunk being read (results already here), then ``StopIteration``."""
        self.chunks.close()


def _chunks(
    role: PumpRole,
    job: MapJob,
    deadline: float | None,
    resume: Callable[[MapJob], None] | None,
) -> Generator[Iterator[Any], None, None]:
    index = 0
    try:
        while index != job.chunk_count():
            chunk = wait_for_chunk(role, job, index, deadline)
            items, chunk.results = chunk.results, []
            failure = chunk.first_failure()
            if failure is not None:
                del items[failure[0] :]
            items.reverse()
            yield itertools.starmap(items.pop, itertools.repeat((), len(items)))
            if failure is not None:
                raise failure[1]
            index += 1
            if resume is not None:
                job.consumed = index
                resume(job)
    finally:
        job.stop(Abandoned())


def wait_for_chunk(role: PumpRole, job: MapJob, index: int, deadline: float | None) -> Chunk:
    """The ``index``-th chunk in input order once it has ended, pumping meanwhile; raises the
    job's failure where it left a gap, TimeoutError past ``deadline``."""
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not role.wait_until(lambda: chunk_settled(job, index), timeout):
        raise TimeoutError()
    chunk = job.ordered(index)  # raises the job's failure where it left a gap
    assert chunk is not None
    return chunk


def chunk_settled(job: MapJob, index: int) -> bool:
    """Whether the ``index``-th chunk in input order has ended, or never will be cut (the
    job failed before it: ``job.ordered`` raises that failure)."""
    if job.failure is not None and index >= len(job.chunks):
        return True
    chunk = job.ordered(index)
    return chunk is not None and chunk.done


class Abandoned(Exception):
    """Stops a map job whose reader went away."""
