"""asyncio on the engine: completions handed to an event loop in batches, one call awaited, a
map job read by ``async for``.

Outcomes are collected by whichever thread pumps (``waiting``): with a coroutine awaiting, that
is the collector thread, since the loop's thread must never block. Handing each completion to
the loop with ``call_soon_threadsafe`` (what ``asyncio.wrap_future`` does) wakes the loop once
per result: a write to its self-pipe, a return from its selector. A ``LoopBridge`` queues
completions instead. The first of a batch schedules one drain; every completion that arrives
before the drain runs rides along, so under load one wake-up carries a whole batch of replies.
A drain hands over at most ``DRAIN_BATCH`` completions and yields to the loop before the next
ones, so a timer on the same loop is never held up by a burst.

```
pumper thread:  LoopOutcome.set_result -> LoopBridge.post ─┐ (one wake-up per batch)
loop thread:    LoopBridge._drain -> waiter.set_result -> awaiting task resumes
```

An awaited call completes a ``LoopOutcome`` rather than a ``concurrent.futures.Future``: the
engine's completion goes straight to the bridge. Cancelling an awaiting task gives its call up
(``Engine.give_up``): a call not started is cancelled; a running one finishes and its result is
dropped, or, with ``kill``, its worker is killed and replaced.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from gilfree._engine import mapping as _mapping

if TYPE_CHECKING:
    import asyncio

    from gilfree._engine.engine import Engine
    from gilfree._engine.units import Chunk, MapJob

_T = TypeVar("_T")

#: Most completions one drain hands to the loop before letting other callbacks run.
DRAIN_BATCH = 256


class LoopBridge:
    """Hands callbacks from any thread to one event loop, many per wake-up (see the module
    docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the bridges are kept in a WeakKeyDictionary keyed by their loop, which a
        # strong reference from the value would keep alive for ever.
        self._loop = weakref.ref(loop)
        self._lock = threading.Lock()
        self._queue: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        #: A drain is scheduled and has not yet emptied the queue.
        self._scheduled = False
        #: Times the loop was woken from another thread (what the batching saves).
        self.wakeups = 0

    def post(self, callback: Callable[..., None], *args: Any) -> None:
        """Runs ``callback(*args)`` in the loop's thread soon; callable from any thread."""
        with self._lock:
            self._queue.append((callback, args))
            if self._scheduled:
                return  # the drain to come takes it
            self._scheduled = True
            self.wakeups += 1
        loop = self._loop()
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._drain)
                return
            except RuntimeError:  # the loop is closed
                pass
        with self._lock:  # the loop is gone or closed: nothing awaits there any more
            self._queue.clear()
            self._scheduled = False

    def _drain(self) -> None:
        with self._lock:
            queue = self._queue
            batch = [queue.popleft() for _ in range(min(len(queue), DRAIN_BATCH))]
            more = bool(queue)
            self._scheduled = more
        for callback, args in batch:
            callback(*args)
        loop = self._loop()
        if more and loop is not None:
            loop.call_soon(self._drain)  # after the callbacks already waiting


_bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopBridge] = (
    weakref.WeakKeyDictionary()
)


def bridge_for(loop: asyncio.AbstractEventLoop) -> LoopBridge:
    """The bridge of ``loop`` (one per loop, shared by every executor)."""
    bridge = _bridges.get(loop)
    if bridge is None:
        bridge = LoopBridge(loop)
        try:
            _bridges[loop] = bridge
        except TypeError:  # a loop that takes no weak reference: a bridge per call
            pass
    return bridge


class LoopOutcome:
    """The future of a call awaited by ``run``: what the engine completes (``CallFuture``), on
    the thread that collects outcomes, handed to the awaiting task's asyncio future through the
    loop's bridge. It stands in for a ``concurrent.futures.Future`` (a condition variable, its
    lock and lists, a done-callback), so an awaited call allocates a few objects instead of a
    dozen, which keeps garbage collections, and the loop's pauses for them, rarer.

    State: PENDING, then RUNNING or CANCELLED (both under the engine's lock), then FINISHED
    (set once, by whoever completes the call). ``cancel`` succeeds only while PENDING.
    """

    __slots__ = ("_bridge", "_state", "waiter")

    def __init__(self, waiter: asyncio.Future[Any], bridge: LoopBridge) -> None:
        self.waiter = waiter
        self._bridge = bridge
        self._state = _PENDING

    @classmethod
    def in_running_loop(cls) -> LoopOutcome:
        """An outcome awaited from the running loop (RuntimeError outside one)."""
        import asyncio  # here: the pool's users who never await do not pay for its import

        loop = asyncio.get_running_loop()
        return cls(loop.create_future(), bridge_for(loop))

    def set_running_or_notify_cancel(self) -> bool:
        """False if cancelled (the call is dropped), else RUNNING."""
        if self._state == _CANCELLED:
            return False
        self._state = _RUNNING
        return True

    def cancel(self) -> bool:
        """Cancels the call if it has not started; the awaiting task's future is cancelled."""
        if self._state == _PENDING:
            self._state = _CANCELLED
            self._bridge.post(_cancel, self.waiter)
        return self._state == _CANCELLED

    def set_result(self, result: Any) -> None:
        """The call returned ``result``."""
        if self._finish():
            self._bridge.post(_set_result, self.waiter, result)

    def set_exception(self, exception: BaseException | None) -> None:
        """The call failed with ``exception``."""
        if self._finish():
            self._bridge.post(_set_exception, self.waiter, exception)

    def _finish(self) -> bool:
        if self._state == _CANCELLED or self._state == _FINISHED:
            return False
        self._state = _FINISHED
        return True


_PENDING, _RUNNING, _CANCELLED, _FINISHED = "pending", "running", "cancelled", "finished"


def _set_result(waiter: asyncio.Future[Any], result: Any) -> None:
    if not waiter.done():  # else the awaiting task was cancelled: the result is dropped
        waiter.set_result(result)


def _set_exception(waiter: asyncio.Future[Any], exception: BaseException) -> None:
    if not waiter.done():
        waiter.set_exception(exception)


def _cancel(waiter: asyncio.Future[Any]) -> None:
    waiter.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def wait_closed(when_closed: Callable[[Callable[[], None]], None]) -> None:
    """Returns once ``when_closed`` calls back (from any thread)."""
    import asyncio

    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    bridge = bridge_for(loop)
    when_closed(lambda: bridge.post(_wake, waiter))
    await waiter


class _Inbox:
    """What a map job read by ``async for`` reports to: the chunks ended (unordered) and the
    waiters of the tasks reading it (several tasks may share one iterator: each is woken, and
    takes the next result). The job holds this, never the reader, so a reader nobody refers to
    any more (``break`` out of ``async for``) is freed at once and its ``__del__`` stops the
    job, even while the engine keeps the job parked."""

    __slots__ = ("completed", "ordered", "waiters")

    def __init__(self, ordered: bool) -> None:
        self.ordered = ordered
        self.completed: deque[Chunk] = deque()  # unordered: ended chunks, not yet taken
        self.waiters: list[tuple[LoopBridge, asyncio.Future[None]]] = []

    def progressed(self, chunk: Chunk | None) -> None:
        """Called by the job, in the pumper's thread, as its chunks end (None: stopped)."""
        if chunk is not None and not self.ordered:
            self.completed.append(chunk)
        # Set after the chunk's state, read before: a reader adds its waiter, then looks at
        # the chunks again, so a chunk that ends in between is never missed.
        for bridge, waiter in tuple(self.waiters):
            bridge.post(_wake, waiter)


class AsyncMapIterator(Generic[_T]):
    """``async for`` over a map job's results: in input order, or with ``ordered=False`` as
    chunks complete (a chunk's results together, in their order).

    The job is made with ``on_progress=reader.on_progress()`` and a window, so the input is
    read only a few chunks ahead of this reader (``MapJob``). The first failing item raises its
    exception after the results before it, and iteration ends there, as ``Executor.map``'s
    does; ``convert`` turns that exception into the one the API raises. Leaving the loop
    early, ``aclose()``, or dropping the iterator stops the job: chunks not yet started are
    not run. Python closes nothing on ``break``, so the job must not keep its reader alive: it
    reports to an ``_Inbox``, and the reader is freed, and stops the job, once unreferenced.
    """

    #: The job read (set by ``follow``, before the job is queued).
    _job: MapJob

    def __init__(
        self,
        engine: Engine,
        ordered: bool,
        convert: Callable[[BaseException], BaseException] = lambda error: error,
    ) -> None:
        self._engine = engine
        self._ordered = ordered
        self._convert = convert
        #: The current chunk's results not yet handed out, last first.
        self._items: list[Any] = []
        #: The error to raise once ``_items`` is empty.
        self._error: BaseException | None = None
        self._taken = 0  # chunks taken
        self._inbox = _Inbox(ordered)
        self._finished = False
        #: The job's start, put off (see ``begin``).
        self._deferred: _DeferredStart | None = None

    def on_progress(self) -> Callable[[Chunk | None], None]:
        """What the job this reader follows calls as its chunks end (it holds not the
        reader)."""
        return self._inbox.progressed

    def follow(self, job: MapJob) -> None:
        """Reads ``job`` (made with ``on_progress=self.on_progress()``), before it is
        queued."""
        self._job = job

    def begin(
        self,
        start: Callable[[AsyncMapIterator[_T]], None],
        wait: Callable[[], object] | None,
    ) -> None:
        """Starts the job now (``start(reader)`` makes it, ``follow``s it and queues it); or,
        where making it would wait (``wait``, see ``Transport.encoding_wait``), at the first
        ``__anext__``, once ``wait`` has returned in a thread, so that the event loop never
        waits; or at the pool's shutdown if that comes first, which queues it as it would a
        job started at once (``Engine.defer_start``)."""
        if wait is None:
            start(self)
        else:
            deferred = _DeferredStart(self, wait, start)
            self._engine.defer_start(deferred)
            self._deferred = deferred

    def __aiter__(self) -> AsyncMapIterator[_T]:
        return self

    async def __anext__(self) -> _T:
        if self._deferred is not None:
            await self._start_deferred()
        while True:
            if self._items:
                return self._items.pop()  # type: ignore[no-any-return]
            if self._error is not None:
                error, self._error = self._error, None
                self._finish()
                raise self._convert(error)
            if self._finished:
                raise StopAsyncIteration
            chunk = self._take_chunk()
            if chunk is None:
                await self._wait()
            else:
                self._read(chunk)

    async def _start_deferred(self) -> None:
        import asyncio

        deferred = self._deferred
        assert deferred is not None
        # Cancelled while waiting, the start stays put off: the next __anext__ comes back here.
        await asyncio.to_thread(deferred.ready)
        deferred.run()  # at once now (or waits for a shutdown's run under way to end)
        self._deferred = None
        if deferred.error is not None:
            self._finished = True  # nothing started: nothing to read
            raise deferred.error

    def _take_chunk(self) -> Chunk | None:
        """The next chunk to read if it has ended (None if not yet; ``_finished`` at the end);
        raises the job's own failure (its input raised) where it leaves a gap."""
        job = self._job
        try:
            if self._ordered:
                if job.chunk_count() == self._taken:
                    self._finished = True
                    return None
                if not _mapping.chunk_settled(job, self._taken):
                    return None
                chunk = job.ordered(self._taken)
            else:
                completed = self._inbox.completed
                if not completed:
                    if job.chunk_count() == self._taken:
                        self._finished = True
                    elif job.failure is not None and job.finished():
                        raise job.failure
                    return None
                chunk = completed.popleft()
        except Exception as error:  # noqa: BLE001 - the input's error, or the job's stop
            self._finish()
            raise self._convert(error)  # noqa: B904 - the failure as the API raises it
        assert chunk is not None
        self._taken += 1
        job.consumed = self._taken
        self._engine.resume(job)
        return chunk

    def _read(self, chunk: Chunk) -> None:
        items, chunk.results = chunk.results, []
        failure = chunk.first_failure()
        if failure is not None:
            del items[failure[0] :]
            self._error = failure[1]
        items.reverse()
        self._items = items

    async def _wait(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        waiting = (bridge_for(loop), loop.create_future())
        waiters = self._inbox.waiters
        waiters.append(waiting)
        try:
            if self._ready():  # ended between the look and the waiter: do not wait
                return
            await waiting[1]
        finally:
            waiters.remove(waiting)

    def _ready(self) -> bool:
        job = self._job
        if not self._ordered:
            return bool(self._inbox.completed) or job.finished()
        return job.chunk_count() == self._taken or _mapping.chunk_settled(job, self._taken)

    def _finish(self) -> None:
        self._finished = True
        self._items = []
        self._stop()

    def _stop(self) -> None:
        job = getattr(self, "_job", None)
        if job is not None and not job.finished():
            job.stop(_mapping.Abandoned())
            self._engine.resume(job)

    async def aclose(self) -> None:
        """Stops reading: chunks not yet started are not run."""
        self._finished = True
        self._items = []
        self._stop()

    def __del__(self) -> None:
        if not self._finished:
            self._stop()


class _DeferredStart:
    """An ``AsyncMapIterator``'s job whose start waits for what encoding needs (``begin``):
    run once, by the reader's first ``__anext__`` or by the pool's shutdown, whichever comes
    first; a second caller waits for the first's run to end. The reader is held weakly: the
    engine keeps this until shutdown, and a reader dropped unread has nothing to start."""

    __slots__ = ("__weakref__", "_lock", "_reader", "_start", "_wait", "error", "ran")

    def __init__(
        self,
        reader: AsyncMapIterator[Any],
        wait: Callable[[], object],
        start: Callable[[AsyncMapIterator[Any]], None],
    ) -> None:
        self._reader = weakref.ref(reader)
        self._wait = wait
        self._start = start
        self._lock = threading.Lock()
        #: Why the job could not be started (the reader raises it), once run.
        self.error: BaseException | None = None
        self.ran = False

    def ready(self) -> None:
        """Waits until what encoding needs is ready (or failed: ``run`` records why)."""
        try:
            self._wait()
        except Exception:  # noqa: BLE001 - raised again by run, which records it
            pass

    def run(self) -> None:
        """Waits for what encoding needs, then makes and queues the job; once."""
        with self._lock:
            if self.ran:
                return
            self.ran = True
            reader = self._reader()
            if reader is None:
                return  # dropped unread: nothing to start
            try:
                self._wait()
                self._start(reader)
            except Exception as error:  # noqa: BLE001 - the reader raises it
                self.error = error

    def refuse(self, error: BaseException) -> None:
        """Gives the job up unstarted (the pool was terminated): the reader raises ``error``."""
        with self._lock:
            if not self.ran:
                self.ran = True
                self.error = error
