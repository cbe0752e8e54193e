"""Units of work the engine schedules: single calls and map jobs cut into chunks."""

from __future__ import annotations

import concurrent.futures
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback
from typing import Any, Callable, Sequence

from gilfree import _protocol as protocol
from gilfree._chunking import ChunkSizer
from gilfree._future import Future

#: ``(function id, encoded function)`` from ``FunctionRegistry.lookup``.
EncodedFunction = tuple[int, bytes]


def rebuild_exception(payload: bytes) -> BaseException:
    """Decodes ``(exception, traceback text)`` from a worker and chains the remote traceback as
    ``__cause__``, as concurrent.futures does."""
    error, text = protocol.loads(payload)
    error.__cause__ = _RemoteTraceback(f'\n"""\n{text}"""')
    return error


def unpickling_failed(fn: Callable[..., Any], error: BaseException) -> BaseException:
    """The error for a reply that cannot be decoded here: ``BrokenProcessPool``, as in
    concurrent.futures, chained to the real cause (which may even be SystemExit). A reply whose
    shared buffer is gone means its worker died before the reply was read: that is a crash."""
    if isinstance(error, FileNotFoundError):
        from gilfree.errors import WorkerCrashedError

        broken: BaseException = WorkerCrashedError(
            f"the worker that ran {function_name(fn)} ended before its result could be read"
        )
    else:
        broken = BrokenProcessPool(
            f"the result of {function_name(fn)} could not be unpickled: {error!r}"
        )
    broken.__cause__ = error
    return broken


def function_name(fn: Callable[..., Any]) -> str:
    """A readable name for messages: ``module.qualname`` or the repr."""
    qualname = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    return f"{module}.{qualname}" if qualname and module else repr(fn)


class Call:
    """One ``submit``: a function call with its future. The arguments are encoded at submit."""

    __slots__ = ("fn", "function", "future", "payload", "shared")

    def __init__(
        self,
        future: Future,
        fn: Callable[..., Any],
        function: EncodedFunction,
        payload: bytes,
        shared: list[Any],
    ) -> None:
        self.future = future
        self.fn = fn
        self.function = function
        self.payload = payload
        #: Shared buffers the payload refers to, kept until the task has ended.
        self.shared: list[Any] | None = shared

    def item_count(self) -> int:
        """Tasks this unit counts for (``max_tasks_per_child``)."""
        return 1

    def complete(self, kind: int, payload: bytes) -> None:
        """Sets the future from a worker's reply."""
        try:
            if kind == protocol.RESULT:
                self.future.set_result(protocol.loads(payload))
            else:
                self.future.set_exception(rebuild_exception(payload))
        except concurrent.futures.InvalidStateError:
            pass
        except BaseException as error:  # noqa: BLE001 - any failure to unpickle the reply
            self.future.set_exception(unpickling_failed(self.fn, error))
        # Only now: the reply may refer to buffers of the request (an echo), which must not be
        # recycled before it has been read.
        self.shared = None

    def fail(self, error: BaseException) -> None:
        """Fails the future (worker lost, pool broken)."""
        self.shared = None
        try:
            self.future.set_exception(error)
        except concurrent.futures.InvalidStateError:
            pass


class Chunk:
    """A slice ``items[start:start + count]`` of a map job, sent as one message."""

    __slots__ = ("count", "done", "error", "fn", "function", "job", "results", "shared", "start")

    def __init__(self, job: MapJob, start: int, count: int) -> None:
        self.job = job
        self.fn = job.fn
        self.function = job.function
        self.start = start
        self.count = count
        self.done = False
        self.results: list[Any] = []
        self.error: BaseException | None = None
        self.shared: list[Any] | None = None

    def item_count(self) -> int:
        """Tasks this unit counts for (``max_tasks_per_child``)."""
        return self.count

    def encode(self) -> bytes:
        """The CHUNK payload; the shared buffers it refers to are kept until the chunk ends."""
        self.shared = []
        items = self.job.items[self.start : self.start + self.count]
        return protocol.dumps((items, self.job.star), self.shared)

    def named_items(self) -> dict[str, Any]:
        """The chunk's items under names for error messages (``map item 7``)."""
        items = self.job.items[self.start : self.start + self.count]
        return {f"map item {self.start + index}": item for index, item in enumerate(items)}

    def complete(self, kind: int, payload: bytes) -> None:
        """Stores the results (and the error that stopped the chunk, if any)."""
        try:
            if kind == protocol.CHUNK_RESULT:
                self.results, error = protocol.loads(payload)
                self.error = None if error is None else rebuild_exception(error)
            else:
                self.error = rebuild_exception(payload)
        except BaseException as error:  # noqa: BLE001 - any failure to unpickle the reply
            self.error = unpickling_failed(self.fn, error)
        self.shared = None  # after decoding, as in Call.complete
        self.done = True

    def fail(self, error: BaseException) -> None:
        """Marks the chunk failed (worker lost, pool broken)."""
        self.shared = None
        self.error = error
        self.done = True


class MapJob:
    """One ``map`` call: its items, cut into chunks as workers become free.

    Chunks are normally cut from the front. When the sizer says the tail is expensive and
    growing (see ``ChunkSizer.expensive_tail``), the last items are cut from the back instead;
    ``ordered`` still gives the chunks in input order.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        function: EncodedFunction,
        items: Sequence[Any],
        star: bool,
        sizer: ChunkSizer,
    ) -> None:
        self.fn = fn
        self.function = function
        self.items = items
        self.star = star
        self.sizer = sizer
        self.chunks: list[Chunk] = []  # cut from the front, in input order
        self.tail_chunks: list[Chunk] = []  # cut from the back, in reverse input order
        self.next_start = 0
        self.next_end = len(items)
        self.failure: BaseException | None = None

    def exhausted(self) -> bool:
        """Whether every item has been cut into a chunk, or the job was stopped."""
        return self.next_start >= self.next_end or self.failure is not None

    def cut(self, limit: int | None) -> Chunk:
        """Cuts the next chunk, of at most ``limit`` items if given."""
        remaining = self.next_end - self.next_start
        if self.sizer.expensive_tail(remaining):
            self.next_end -= 1
            chunk = Chunk(self, self.next_end, 1)
            self.tail_chunks.append(chunk)
            return chunk
        size = self.sizer.next_size(remaining)
        if limit is not None:
            size = min(size, limit)
        chunk = Chunk(self, self.next_start, size)
        self.next_start += size
        self.chunks.append(chunk)
        return chunk

    def ordered(self, index: int) -> Chunk | None:
        """The ``index``-th chunk in input order; None if it is not cut yet. Raises
        ``IndexError`` past the last chunk, and the job's failure where a stop left a gap."""
        if index < len(self.chunks):
            return self.chunks[index]
        if self.failure is not None:
            raise self.failure
        if self.next_start < self.next_end:
            return None
        return self.tail_chunks[len(self.chunks) + len(self.tail_chunks) - 1 - index]

    def chunk_count(self) -> int | None:
        """How many chunks there are in all, once every item is cut; else None."""
        if self.next_start < self.next_end:
            return None
        return len(self.chunks) + len(self.tail_chunks)

    def stop(self, error: BaseException) -> None:
        """Cuts no more chunks; readers past the last chunk get ``error``."""
        if self.failure is None:
            self.failure = error
