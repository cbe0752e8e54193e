"""Worker processes on shared-memory rings: the default transport.

Each slot is a pair of rings in one shared segment (``_core.ParentChannel``): requests to the
worker, replies from it. A worker process is started by the ``Launcher`` (zygote, spawn or
fork), reads its setup from the ring, and answers READY (``gilfree._workers.worker``). Functions
travel once per worker: a DEFINE message the first time a worker sees one, and from then on its
id alone, within a cache of ``WORKER_FUNCTION_CACHE`` functions per worker.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import BrokenExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from gilfree import _core
from gilfree._wire import protocol
from gilfree._wire.functions import FunctionRegistry
from gilfree._workers.launch import Launcher, WorkerProcess

if TYPE_CHECKING:
    from gilfree._engine.transport import Outcome
    from gilfree._engine.units import Call, Chunk, EncodedFunction

#: Bytes per ring; pages are only backed when touched.
RING_CAPACITY = 4 << 20
#: How long a pumper busy-waits for a reply before sleeping on the doorbell.
PUMP_SPIN_MICROSECONDS = 50.0
#: Functions a worker keeps at most; the parent tells it which to drop.
WORKER_FUNCTION_CACHE = 256


class ProcessTransport:
    """Starts worker processes with ``launcher`` and talks to them through rings."""

    name = "process"
    encoded = True
    spins = True  # SPIN_MICROSECONDS in gilfree._workers.worker
    places_per_call = False
    early_death_breaks = True
    broken_error: type[BrokenExecutor] = BrokenProcessPool
    init_failed_reason = (
        "A process in the process pool was terminated abruptly while the future was running or"
        " pending: its initializer (or the main script, run again there) raised"
    )

    def __init__(
        self, worker_count: int, launcher: Launcher, make_setup: Callable[[], bytes]
    ) -> None:
        self._channel = _core.ParentChannel(worker_count, RING_CAPACITY)
        self._launcher = launcher
        launcher.on_exit = self._worker_ended
        launcher.prepare()
        self._make_setup: Callable[[], bytes] | None = make_setup
        self.functions = FunctionRegistry(launcher.main_names)
        self._names_known = False  # once known, they stay known
        #: The start method: ``"zygote"``, ``"spawn"`` or ``"fork"``.
        self.method = launcher.method
        self.starts_all = launcher.method == "fork"
        self.on_exit: Callable[[], None] = _nothing

    def _worker_ended(self) -> None:
        self.on_exit()

    def function(self, fn: Callable[..., Any]) -> EncodedFunction:
        """``fn`` pickled once per executor, with its id (see ``FunctionRegistry``)."""
        return self.functions.lookup(fn)

    def encoding_wait(self) -> Callable[[], object] | None:
        """The launcher's ``main_names`` while they are not known yet (a function of
        ``__main__`` is encoded knowing them), else None."""
        if self._names_known:
            return None
        if self._launcher.main_names_known():
            self._names_known = True
            return None
        return self._launcher.main_names

    def pack(self, value: Any, shared: list[Any]) -> bytes:
        """``value`` in the codec; large buffers go to shared memory, kept alive in ``shared``."""
        return protocol.dumps(value, shared)

    def copied(self) -> int:
        """Bytes this process has copied into shared buffers to send them."""
        return _core.copied_to_shared()

    def start(self, slot: int, epoch: int) -> RingWorker:
        """Empties the slot's rings, queues the SETUP message (per worker: see
        ``gilfree._wire.pickling``) and starts the process."""
        assert self._make_setup is not None, "no worker starts after close"
        self._channel.reset_slot(slot)
        self._channel.send(slot, protocol.SETUP, epoch, 0, 0, self._make_setup())
        process = self._launcher.start(self._channel.fd, slot, epoch)
        return RingWorker(self._channel, slot, epoch, process)

    def pump(self, timeout: float) -> list[Outcome]:
        """Replies from every slot's ring (spinning briefly, then sleeping on the doorbell)."""
        return self._channel.pump(timeout, PUMP_SPIN_MICROSECONDS)

    def kick(self) -> None:
        """Rings the parent's doorbell: a ``pump`` in another thread returns."""
        self._channel.kick()

    def stopped(self) -> None:
        """Nothing of its own to stop."""

    def close(self) -> None:
        """Drops the setup (initargs), which breaks the executor's reference cycles."""
        self._make_setup = None


class RingWorker:
    """A worker process serving one slot's ring pair, for one epoch."""

    __slots__ = ("_channel", "_epoch", "_functions", "_slot", "process")

    def __init__(
        self, channel: _core.ParentChannel, slot: int, epoch: int, process: WorkerProcess
    ) -> None:
        self._channel = channel
        self._slot = slot
        self._epoch = epoch
        self.process = process
        #: The function ids this worker holds, least recently used first.
        self._functions: OrderedDict[int, None] = OrderedDict()

    @property
    def pid(self) -> int:
        """The worker's pid (0 until a zygote reports it)."""
        return self.process.pid

    @property
    def handle(self) -> WorkerProcess:
        """The process handle ``executor._processes`` shows."""
        return self.process

    #: A process's or a thread's end is told by its exit code.
    end_reason: str | None = None

    def send(self, task_id: int, unit: Call | Chunk) -> None:
        """DEFINE the unit's function if this worker lacks it, then CALL or CHUNK."""
        function_id, encoded = unit.function
        must_define, forget = self._remember(function_id)
        channel, slot, epoch = self._channel, self._slot, self._epoch
        if must_define:
            channel.send(slot, protocol.DEFINE, epoch, forget, function_id, encoded)
        channel.send(slot, unit.kind, epoch, task_id, function_id, unit.payload)

    def _remember(self, function_id: int) -> tuple[bool, int]:
        """Notes that ``function_id`` is about to be used here. Returns whether its body must be
        sent, and the id the worker should forget to stay within its cache (0: none)."""
        functions = self._functions
        if function_id == protocol.ONE_OFF:
            return True, 0
        if function_id in functions:
            functions.move_to_end(function_id)
            return False, 0
        functions[function_id] = None
        if len(functions) > WORKER_FUNCTION_CACHE:
            return True, functions.popitem(last=False)[0]
        return True, 0

    def release(self, task_id: int) -> None:
        """RELEASE: the reply of ``task_id`` is decoded, its shared buffers may go."""
        self._channel.send(self._slot, protocol.RELEASE, self._epoch, task_id, 0, b"")

    def retire(self) -> None:
        """EXIT: the worker ends once it has run what it was sent."""
        self._channel.send(self._slot, protocol.EXIT, self._epoch, 0, 0, b"")

    def kill(self) -> None:
        """SIGKILL."""
        self.process.kill()

    def poll(self) -> int | None:
        """The exit code once the process has ended (reaping it if it is ours to reap)."""
        return self.process.poll()

    def ended(self) -> None:
        """The engine settled the worker's units: empty the rings for the next one. (A
        replacement empties them again at its start; this drops what the dead worker left
        before anything else reads it.)"""
        self._channel.reset_slot(self._slot)


def _nothing() -> None:
    """The default of ``on_exit`` until the engine installs its own."""
