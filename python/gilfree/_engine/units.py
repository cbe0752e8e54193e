"""Units of work the engine schedules: single calls and map jobs cut into chunks."""

from __future__ import annotations

import concurrent.futures
import itertools
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gilfree._engine.chunking import ChunkSizer
from gilfree._wire import protocol
from gilfree._wire.serialization import number_in_map

if TYPE_CHECKING:
    from gilfree._engine.progress import ItemProgress

#: ``(function id, encoded function)`` from ``FunctionRegistry.lookup``.
EncodedFunction = tuple[int, bytes]


def rebuild_exception(payload: bytes) -> BaseException:
    """Decodes ``(exception, traceback text)`` from a worker (see ``with_remote_traceback``)."""
    error: BaseException
    error, text = protocol.loads(payload)
    return with_remote_traceback(error, text)


def with_remote_traceback(error: BaseException, text: str) -> BaseException:
    """``error`` with the traceback ``text`` it had where it was raised chained as
    ``__cause__``, as concurrent.futures does."""
    # _RemoteTraceback takes the text; typeshed has it take a traceback.
    error.__cause__ = _RemoteTraceback(f'\n"""\n{text}"""')  # type: ignore[arg-type]
    return error


def unpickling_failed(name: str, error: BaseException) -> BaseException:
    """The error for a reply of the unit ``name`` (its ``name()``) that cannot be decoded here:
    ``BrokenProcessPool``, as in concurrent.futures, chained to the real cause (which may even
    be SystemExit). A reply whose shared buffer is gone means its worker died before the reply
    was read: that is a crash."""
    if isinstance(error, FileNotFoundError):
        from gilfree.errors import WorkerCrashedError

        broken: BaseException = WorkerCrashedError(
            f"the worker that ran {name} ended before its result could be read"
        )
    else:
        broken = BrokenProcessPool(f"the result of {name} could not be unpickled: {error!r}")
    broken.__cause__ = error
    return broken


def decode_reply(unit: Unit, kind: int, payload: bytes) -> tuple[int, Any]:
    """``(kind, value)`` of a worker's encoded reply, for a unit's ``finish``: RESULT with the
    value, CHUNK_RESULT with ``(results, [(index, exception)])``, ERROR with the exception. A
    reply that cannot be decoded becomes ERROR with ``unpickling_failed``."""
    try:
        if kind == protocol.RESULT:
            return kind, protocol.loads(payload)
        if kind == protocol.CHUNK_RESULT:
            results, failures = protocol.loads(payload)
            return kind, (results, [(index, rebuild_exception(error)) for index, error in failures])
        return protocol.ERROR, rebuild_exception(payload)
    except BaseException as error:  # noqa: BLE001 - any failure to unpickle the reply
        return protocol.ERROR, unpickling_failed(unit.name(), error)


def function_name(fn: Callable[..., Any]) -> str:
    """A readable name for messages: ``module.qualname``, else the repr, else (a callable
    object whose attributes or repr raise) its type's name."""
    try:
        qualname = getattr(fn, "__qualname__", None)
        module = getattr(fn, "__module__", None)
        if isinstance(qualname, str) and isinstance(module, str) and qualname and module:
            return f"{module}.{qualname}"
        return repr(fn)
    except Exception:  # noqa: BLE001 - a message must not fail on the user's object
        return f"a {type(fn).__qualname__} object"


#: Most items in a chunk read from an iterator: with the window, it bounds how far ahead of
#: its reader an ``imap`` reads (a few thousand items per worker at most).
ITERATOR_CHUNK_LIMIT = 4096
#: Longest a chunk is filled from an iterator once it holds an item: the input is read under
#: the engine's lock, by whichever thread hands out work, so a slow generator (one reading a
#: file or the network per item) must not hold that lock while the sizer, measuring cheap
#: items, asks for thousands (every submit, result and event loop would wait on it).
ITERATOR_FILL_SECONDS = 0.01
#: Chunks a lazy map (``imap``, ``amap``) may have cut beyond its reader's position, per worker.
READ_AHEAD_CHUNKS_PER_WORKER = 4


@dataclass(frozen=True)
class Limits:
    """How long a task may run and how often it is re-run after its worker crashed."""

    #: Seconds a task may run before its worker is killed (None: no limit).
    timeout: float | None = None
    #: Times a task is started again on a fresh worker after its worker died under it.
    retries: int = 0


NO_LIMITS = Limits()


class CallFuture(Protocol):
    """What a ``Call`` completes: a ``concurrent.futures.Future`` (``submit``), or an awaited
    call's ``aio.LoopOutcome`` (``run``). ``set_running_or_notify_cancel`` and ``cancel`` are
    called under the engine's lock."""

    def set_running_or_notify_cancel(self) -> bool: ...
    def cancel(self) -> bool: ...
    def set_result(self, result: Any) -> None: ...
    def set_exception(self, exception: BaseException | None) -> None: ...


class Call:
    """One ``submit``: a function call with its future. The arguments are encoded at submit,
    and kept until the call ends, as the stdlib's work item keeps them: what their pickling
    lends the receiver (a ``multiprocessing.Manager`` proxy's reference) must outlive its
    unpickling."""

    __slots__ = (
        "arguments",
        "attempts",
        "fn",
        "function",
        "future",
        "kill_requested",
        "label",
        "payload",
        "retries",
        "shared",
        "timeout",
    )
    kind = protocol.CALL

    def __init__(
        self,
        future: CallFuture,
        fn: Callable[..., Any],
        function: EncodedFunction,
        payload: Any,
        shared: list[Any],
        limits: Limits = NO_LIMITS,
        label: Callable[[], str] | None = None,
        arguments: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
    ) -> None:
        self.future = future
        self.fn = fn
        #: ``(args, kwargs)``, kept until the call ends (see the class documentation).
        self.arguments: tuple[tuple[Any, ...], dict[str, Any]] | None = arguments
        #: Makes what messages call it, if not ``fn``'s name (``gilfree.joblib``'s batches);
        #: called only when a message needs it.
        self.label = label
        self.function = function
        self.payload = payload
        #: Shared buffers the payload refers to, kept until the task has ended.
        self.shared: list[Any] | None = shared
        self.timeout = limits.timeout
        #: Re-runs left after a crash, and runs started so far.
        self.retries = limits.retries
        self.attempts = 1
        #: Its caller gave it up and asked for its worker to be killed once it runs
        #: (``Engine.give_up``).
        self.kill_requested = False

    def item_count(self) -> int:
        """Tasks this unit counts for (``max_tasks_per_child``)."""
        return 1

    def name(self) -> str:
        """What error messages call the call: its label, else its function's name."""
        return function_name(self.fn) if self.label is None else self.label()

    def finish(self, kind: int, value: Any) -> None:
        """Sets the future: RESULT with ``value``, ERROR with the exception ``value``."""
        try:
            if kind == protocol.RESULT:
                self.future.set_result(value)
            else:
                self.future.set_exception(value)
        except concurrent.futures.InvalidStateError:
            pass
        # Only now: the worker reads the request's buffers until its task has ended.
        self.shared = self.arguments = None

    def fail(self, error: BaseException) -> None:
        """Fails the future (worker lost, pool broken)."""
        self.shared = self.arguments = None
        try:
            self.future.set_exception(error)
        except concurrent.futures.InvalidStateError:
            pass


class Chunk:
    """Items ``start .. start + len(items)`` of a map job, sent as one message."""

    __slots__ = (
        "attempts",
        "count",
        "done",
        "failures",
        "fn",
        "function",
        "items",
        "job",
        "kind",
        "payload",
        "results",
        "retries",
        "shared",
        "start",
        "timeout",
    )
    #: A chunk is never given up alone (its map job is stopped instead).
    kill_requested = False

    def __init__(self, job: MapJob, start: int, items: Sequence[Any]) -> None:
        self.job = job
        #: CHUNK, with WATCH_FLAG if its job shows progress (its worker reports while it runs).
        self.kind = protocol.CHUNK if job.progress is None else protocol.CHUNK | protocol.WATCH_FLAG
        self.fn = job.fn
        self.function = job.function
        self.start = start
        self.count = len(items)
        #: The items until the chunk is encoded.
        self.items: Sequence[Any] | None = items
        #: The chunk's payload (see ``encode``), kept until the chunk ends (it may be sent again).
        self.payload: Any = b""
        limits = job.limits
        #: The chunk's items run one after another: each may take the task timeout.
        self.timeout = None if limits.timeout is None else limits.timeout * max(1, self.count)
        self.retries = limits.retries
        self.attempts = 1
        self.done = False
        #: The items' results; a failed item leaves None at its index.
        self.results: list[Any] = []
        #: ``(index, exception)`` of each failed item, by index; a chunk that failed as a whole
        #: (its worker died, its reply could not be read) has no results and one failure at 0.
        self.failures: list[tuple[int, BaseException]] = []
        self.shared: list[Any] | None = None

    def first_failure(self) -> tuple[int, BaseException] | None:
        """``(index, exception)`` of the first failed item, or None."""
        return self.failures[0] if self.failures else None

    def item_count(self) -> int:
        """Tasks this unit counts for (``max_tasks_per_child``)."""
        return self.count

    def name(self) -> str:
        """What error messages call the chunk: its function's name."""
        return function_name(self.fn)

    def encode(self, pack: Callable[[Any, list[Any]], Any]) -> None:
        """Makes the CHUNK payload with the transport's ``pack``; what it refers to (shared
        buffers), and the items, are kept until the chunk ends (as ``Call`` keeps its
        arguments)."""
        self.shared = []
        self.payload = pack((self.items, self.job.star), self.shared)

    def split(self) -> list[Chunk]:
        """The chunk as chunks of one item each, which take its place in its job, each to be
        encoded again (``payload`` None) when it is sent (see ``recovery.settle``)."""
        assert self.items is not None, "a chunk keeps its items until it ends"
        pieces = []
        for index, item in enumerate(self.items):
            piece = Chunk(self.job, self.start + index, (item,))
            piece.attempts = self.attempts + 1
            piece.retries = 0  # the chunk's retries were its items'
            piece.payload = None
            pieces.append(piece)
        self.job.replace(self, pieces)
        self.shared = self.items = None
        self.payload = b""
        return pieces

    def named_items(self) -> dict[str, Any]:
        """The chunk's items under names for error messages (``map item 7``)."""
        items = () if self.items is None else self.items  # never truth-tested
        return {f"map item {self.start + index}": item for index, item in enumerate(items)}

    def finish(self, kind: int, value: Any) -> None:
        """Stores CHUNK_RESULT's ``(results, [(index, exception)])``, or ERROR's exception as
        the failure of the chunk as a whole."""
        if kind == protocol.CHUNK_RESULT:
            self.results, self.failures = value
            for _index, failure in self.failures:
                number_in_map(failure, self.start)  # a result that could not be sent
        else:
            number_in_map(value, self.start)  # a result that could not be sent: which item's
            self.results, self.failures = [], [(0, value)]
        self.shared = self.items = None  # after decoding, as in Call.finish
        self.payload = b""
        self.done = True
        self.job.chunk_done(self)

    def fail(self, error: BaseException) -> None:
        """Marks the chunk failed as a whole (worker lost, pool broken)."""
        self.shared = self.items = None
        self.payload = b""
        self.results, self.failures = [], [(0, error)]
        self.done = True
        self.job.chunk_done(self)


def _fill(taken: list[Any], iterator: Iterator[Any], wanted: int) -> bool:
    """Reads from ``iterator`` into ``taken`` until it holds ``wanted`` items, or at least one
    once `ITERATOR_FILL_SECONDS` have passed; True if the iterator ended. Reads in growing
    batches: the clock is read a dozen times per chunk."""
    deadline = time.monotonic() + ITERATOR_FILL_SECONDS
    batch = 1
    while len(taken) < wanted:
        want = min(batch, wanted - len(taken))
        before = len(taken)
        taken.extend(itertools.islice(iterator, want))
        if len(taken) - before < want:
            return True
        if taken and time.monotonic() >= deadline:
            return False
        batch *= 2
    return False


class MapJob:
    """One ``map`` call: its items, cut into chunks as workers become free.

    The items are a sequence (taken whole when the map started) or an iterator, read only as
    chunks are cut (``imap``: an endless generator works). With a ``window``, at most that many
    chunks (of at most ITERATOR_CHUNK_LIMIT items) are cut beyond the reader's position
    (``consumed``): the engine parks the job until the reader moves on, so neither the input nor
    the results pile up.

    Chunks are normally cut from the front. When the sizer says the tail of a sequence is
    expensive and growing (see ``ChunkSizer.expensive_tail``), the last items are cut from the
    back instead; ``ordered`` still gives the chunks in input order.

    ``on_progress``, given by whoever reads the job (``Pool``'s results), is called with each
    chunk that ends (in the thread collecting results), and with None when the job is stopped.
    ``progress`` counts its items for a display (``progress=``; see ``gilfree._engine.progress``).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        function: EncodedFunction,
        items: Sequence[Any] | Iterator[Any],
        star: bool,
        sizer: ChunkSizer,
        window: int | None = None,
        limits: Limits = NO_LIMITS,
        on_progress: Callable[[Chunk | None], None] | None = None,
        progress: ItemProgress | None = None,
    ) -> None:
        self.fn = fn
        self.progress = progress
        self.limits = limits
        self.function = function
        self.star = star
        self.sizer = sizer
        self.window = window
        self.consumed = 0
        #: What the transport placed for the job's chunks, kept while the job lives, so that a
        #: value every chunk carries is placed once per map (``Transport.places_per_call``).
        self.placed: list[Any] = []
        self.chunks: list[Chunk] = []  # cut from the front, in input order
        self.tail_chunks: list[Chunk] = []  # cut from the back, in reverse input order
        self.next_start = 0
        self.failure: BaseException | None = None
        #: Stopped by ``stop`` (its reader went away, the pool shut down): chunks in flight are
        #: no longer wanted. An error of the input itself sets only ``failure``.
        self.stopped = False
        self.on_progress = on_progress
        self.items: Sequence[Any] | None
        self._iterator: Iterator[Any] | None
        if isinstance(items, Iterator):
            self.items, self._iterator = None, items
            #: The item read after the last chunk was encoded, if any (see ``look_ahead``).
            self._lookahead: list[Any] = []
            #: The last item cut, and whether the iterator gave the same object twice in a row.
            self._last_cut: list[Any] = []
            self._reuses_items = False
            self.next_end: int | None = None  # unknown until the iterator ends
            self.look_ahead()  # an empty input is known at once
        else:
            self.items, self._iterator = items, None
            self.next_end = len(items)
            if progress is not None:
                progress.input_ended(self.next_end)  # the total, whatever ``total=`` said

    def look_ahead(self) -> None:
        """Reads the next item of an iterator, if none is in hand, so that its end is known as
        soon as the last item is cut. Called once the chunk cut last is encoded (and when the
        job is made), never between cutting and encoding: an item is encoded before the next
        one is read, as the stdlib's ``imap`` pickles each item before it asks for the next
        (a generator that refills one buffer and yields it for each item works at
        ``chunksize=1``; within one chunk, as in the stdlib's, its items are one object)."""
        if self._iterator is None or self.items is not None or self._lookahead:
            return
        self._lookahead = self._pull(1)
        if self._lookahead and self._last_cut and self._lookahead[0] is self._last_cut[0]:
            # A generator that refills one object and yields it again: only a chunk of one
            # item, encoded before the next is read, sends each state. Adaptive chunks start
            # at one item, so the second item read tells it before any chunk held two.
            self._reuses_items = True

    def _pull(self, count: int) -> list[Any]:
        """Takes the item in hand and up to ``count`` in all from the iterator (fewer where it
        was slow to come). An error from the iterator ends the input there: the items read
        before it still run (the chunk being filled is cut short), and the reader gets the
        error after their results, as ``multiprocessing.Pool.imap`` gives it at its default
        ``chunksize`` of 1 (chunking must not lose items)."""
        taken, self._lookahead = self._lookahead, []
        if self._iterator is None:
            return taken
        try:
            ended = _fill(taken, self._iterator, count)
        except Exception as error:  # noqa: BLE001 - the input's own error, for the reader
            self._iterator = None
            self.failure = error
            if self.progress is not None:  # what will run is all there is to count
                self.progress.input_ended(self.next_start + len(taken))
            return taken
        if ended:
            self._iterator = None
            self.next_end = self.next_start + len(taken)
            if self.progress is not None:
                self.progress.input_ended(self.next_end)
        return taken

    def is_empty(self) -> bool:
        """Whether there is nothing at all to run."""
        return self.next_end == 0 and self.failure is None

    def exhausted(self) -> bool:
        """Whether every item has been cut into a chunk, or the job was stopped."""
        return self.failure is not None or (
            self.next_end is not None and self.next_start >= self.next_end
        )

    def blocked(self) -> bool:
        """Whether the reader is a whole window behind: cut nothing until it moves on."""
        cut = len(self.chunks) + len(self.tail_chunks)
        return self.window is not None and cut - self.consumed >= self.window

    def cut(self, limit: int | None) -> Chunk:
        """Cuts the next chunk, of at most ``limit`` items if given."""
        if self.next_end is None:
            size = min(self.sizer.next_size(sys.maxsize), ITERATOR_CHUNK_LIMIT)
            if limit is not None:
                size = min(size, limit)
            if self._reuses_items and self.sizer.adaptive:
                size = 1  # see look_ahead (a chunksize given is the user's to choose)
            items = self._pull(size)  # not empty: one in hand
            self._last_cut = items[-1:]
            chunk = Chunk(self, self.next_start, items)
            self.next_start += chunk.count
            self.chunks.append(chunk)
            return chunk
        remaining = self.next_end - self.next_start
        if self.sizer.expensive_tail(remaining):
            self.next_end -= 1
            assert self.items is not None
            chunk = Chunk(self, self.next_end, self.items[self.next_end : self.next_end + 1])
            self.tail_chunks.append(chunk)
            return chunk
        size = self.sizer.next_size(remaining)
        if limit is not None:
            size = min(size, limit)
        assert self.items is not None  # an iterator's end is known only once all is cut
        chunk = Chunk(self, self.next_start, self.items[self.next_start : self.next_start + size])
        self.next_start += size
        self.chunks.append(chunk)
        return chunk

    def replace(self, chunk: Chunk, pieces: list[Chunk]) -> None:
        """Puts ``pieces`` (in input order) where ``chunk`` was, before it ended: its readers
        find them by their places in input order, as they find every chunk."""
        for position, cut in enumerate(self.chunks):
            if cut is chunk:
                self.chunks[position : position + 1] = pieces
                return
        for position, cut in enumerate(self.tail_chunks):  # in reverse input order
            if cut is chunk:
                self.tail_chunks[position : position + 1] = pieces[::-1]
                return

    def ordered(self, index: int) -> Chunk | None:
        """The ``index``-th chunk in input order; None if it is not cut yet. Raises
        ``IndexError`` past the last chunk, and the job's failure where a stop left a gap."""
        if index < len(self.chunks):
            return self.chunks[index]
        if self.failure is not None:
            raise self.failure
        if not self.exhausted():
            return None
        from_end = len(self.chunks) + len(self.tail_chunks) - 1 - index
        if from_end < 0:
            raise IndexError(f"map job has no chunk {index}")
        return self.tail_chunks[from_end]

    def chunk_count(self) -> int | None:
        """How many chunks there are in all, once every item is cut; else None."""
        if self.failure is not None or not self.exhausted():
            return None
        return len(self.chunks) + len(self.tail_chunks)

    def finished(self) -> bool:
        """Whether no chunk will be cut any more and every cut chunk has ended."""
        return (
            self.exhausted()
            and all(chunk.done for chunk in self.chunks)
            and all(chunk.done for chunk in self.tail_chunks)
        )

    def chunk_done(self, chunk: Chunk) -> None:
        """Called by a chunk that has ended."""
        if self.progress is not None:
            self.progress.ended(chunk)
        if self.on_progress is not None:
            self.on_progress(chunk)

    def chunk_running(self, chunk: Chunk, done: int) -> None:
        """The worker running ``chunk`` reports ``done`` of its items done."""
        if self.progress is not None:
            self.progress.running(chunk, done)

    def stop(self, error: BaseException) -> None:
        """Cuts no more chunks; readers past the last chunk get ``error``."""
        self.stopped = True
        if self.progress is not None:
            self.progress.close()
        if self.failure is None:
            self.failure = error
            if self.on_progress is not None:
                self.on_progress(None)


#: What the engine sends to workers: one call, or a chunk of a map job.
Unit = Call | Chunk
