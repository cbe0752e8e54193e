"""Type stubs for ``gilfree._core``, the Rust extension (crates/gilfree-py), checked against the
built module by ``mypy.stubtest`` in ``make lint``."""

import pickle
import sys
from collections.abc import Callable
from typing import Any, Self, final

__all__ = [
    "DecodeError",
    "HEADER_SIZE",
    "MAX_WORKERS",
    "ParentChannel",
    "SHARE_THRESHOLD",
    "SharedBuffer",
    "ThreadQueue",
    "WorkerChannel",
    "after_fork_in_child",
    "after_fork_in_parent",
    "before_fork",
    "copied_to_shared",
    "decode",
    "describe_exit",
    "encode",
    "exit_code_from_status",
    "exit_with_parent",
    "export",
    "huge_page_bytes",
    "keep_freed_memory",
    "kill",
    "open_buffer",
    "register_hooks",
    "set_parent_death_signal",
    "share",
    "spawn",
    "try_wait",
    "wait",
]

#: Bytes of the header in front of every message payload.
HEADER_SIZE: int
#: Most workers one executor or pool has (slots of its shared segment).
MAX_WORKERS: int

@final
class ParentChannel:
    """The parent's end of a shared segment: one request and one response ring per worker slot."""

    def __new__(cls, slot_count: int, ring_capacity: int) -> Self:
        """Creates a segment with ``slot_count`` slots whose rings hold ``ring_capacity`` bytes
        each (a multiple of 4096)."""
    @property
    def fd(self) -> int:
        """The segment's file descriptor, to hand to workers (close-on-exec here)."""
    @property
    def slot_count(self) -> int:
        """Number of worker slots."""
    def send(
        self, slot: int, kind: int, epoch: int, task_id: int, arg: int, payload: bytes
    ) -> bool:
        """Sends a message to ``slot``; True if it is all in the ring, False if part of it waits
        in the outbox (written by later ``pump`` calls). Never blocks on the worker."""
    def pump(self, timeout: float, spin_us: float) -> list[tuple[int, int, int, int, int, bytes]]:
        """The responses that have arrived as ``(slot, kind, epoch, task_id, arg, payload)``;
        if none has, waits (GIL released) until one does, ``kick()`` is called or ``timeout``
        seconds pass. Also moves outboxes forward."""
    def kick(self) -> None:
        """Makes a ``pump`` waiting in another thread return now."""
    def reset_slot(self, slot: int) -> None:
        """Empties ``slot``'s rings for a replacement worker; only once the old one is reaped."""

@final
class WorkerChannel:
    """A worker's end of the segment: receives its slot's requests, sends its responses."""

    def __new__(cls, fd: int, slot: int) -> Self:
        """Maps the segment behind ``fd`` (duplicated; the caller keeps its own) and takes
        slot ``slot``."""
    def receive(self, timeout: float, spin_us: float) -> tuple[int, int, int, int, bytes] | None:
        """The next request as ``(kind, epoch, task_id, arg, payload)``, or None after
        ``timeout`` seconds (spinning ``spin_us`` microseconds first; GIL released)."""
    def send(self, kind: int, epoch: int, task_id: int, arg: int, payload: bytes) -> None:
        """Sends a response; blocks while the ring is full. TimeoutError if the parent died."""
    def parent_alive(self) -> bool:
        """Whether the process that started this worker is still its parent."""

def before_fork() -> None:
    """Takes the shared-buffer registries' locks before ``os.fork()`` (``os.register_at_fork``)."""

def after_fork_in_parent() -> None:
    """Releases what ``before_fork`` took, in the parent."""

def after_fork_in_child() -> None:
    """Releases what ``before_fork`` took, in the child."""

def spawn(argv: list[str], inherit: list[int]) -> int:
    """Starts ``argv`` (stdin closed) keeping the descriptors ``inherit`` open; returns the pid."""

def try_wait(pid: int) -> int | None:
    """Reaps child ``pid`` if it has ended and returns its exit code (negative: signal)."""

def wait(pid: int) -> int:
    """Waits (GIL released) for child ``pid`` to end, reaps it, returns its exit code."""

def kill(pid: int, signal: int) -> None:
    """Sends ``signal`` to ``pid``; a process already gone is not an error."""

def set_parent_death_signal(signal: int) -> bool:
    """Asks for ``signal`` when the parent thread exits (Linux); False where unsupported."""

def exit_with_parent(parent: int, interval_seconds: float) -> None:
    """Kills this process (from a native thread) once its parent is no longer ``parent``."""

def keep_freed_memory(bytes: int) -> bool:
    """Keeps up to ``bytes`` of freed memory in this process for reuse (glibc); False where the
    allocator has no such setting."""

def exit_code_from_status(status: int) -> int | None:
    """Decodes a raw ``waitpid`` status into an exit code; None if the process has not ended."""

def describe_exit(exit_code: int) -> str:
    """``"exit code 3"`` or ``"signal SIGKILL"``."""

class DecodeError(ValueError):
    """Bytes that are not a valid gilfree message."""

#: Buffers (and whole messages) of at least this many bytes go through shared memory.
SHARE_THRESHOLD: int

def encode(value: object, sink: list[SharedBuffer] | None = None) -> bytes:
    """Encodes ``value`` in gilfree's codec: exact builtin types (None, bool, int, float,
    complex, str, bytes, bytearray, memoryview, list, tuple, dict, set, frozenset) natively,
    anything else as pickle (protocol 5, cloudpickle for what pickle refuses) inside the
    message; values with shared or cyclic containers are pickled whole. With a ``sink``, large
    buffers, buffers already in shared memory, and the whole message when it is large travel as
    shared buffers, appended to ``sink``: keep them until the receiver has decoded."""

def decode(data: object, *, trusted: bool = True) -> object:
    """Decodes what ``encode`` made, from any buffer. ``trusted=False`` refuses messages that
    carry pickles or shared-buffer handles. Raises ``DecodeError`` on invalid input."""

def register_hooks(
    pickle_value: Callable[[object, bool], tuple[bytes, list[pickle.PickleBuffer]]],
    reducer_for: Callable[[type], Callable[[object], tuple[int, object] | None] | None],
    rebuild: Callable[[int, tuple[object, ...]], object],
) -> bool:
    """Hands the codec the Python functions it calls: ``pickle_value(value, share)`` for values
    it has no record for, and the reducers (``reducer_for(type)``, ``rebuild(kind, state)``) of
    ``gilfree._wire.reducers``. The first registration stays; later ones return False."""

@final
class ThreadQueue:
    """A FIFO of Python objects between threads of this process whose waits spin, GIL released,
    before sleeping (a waiter that sees its item soon costs no wake-up)."""

    def __init__(self) -> None: ...
    def put(self, item: Any) -> None:
        """Appends ``item`` and wakes a waiter (no system call unless one sleeps)."""
    def take(self, timeout: float, spin_us: float = 0.0, most: int = ...) -> list[Any]:
        """Takes up to ``most`` items, oldest first. If there is none, waits for one (GIL
        released: spin ``spin_us`` microseconds, then sleep) at most ``timeout`` seconds; an
        empty list then."""
    def __len__(self) -> int:
        """The number of items queued now."""

@final
class SharedBuffer:
    """A writable window on shared memory that other processes can map too (buffer protocol)."""

    @staticmethod
    def allocate(length: int) -> SharedBuffer:
        """A new zero-filled shared buffer of ``length`` bytes."""
    @property
    def handle(self) -> tuple[int, int, int, int]:
        """``(pid, fd, offset, length)``: what another process passes to ``open_buffer``."""
    @property
    def file_offset(self) -> int:
        """Where the bytes start in the memory file ``handle`` names (after the region's
        header): the offset to map them again with ``mmap``, privately for instance."""
    def __len__(self) -> int: ...
    if sys.version_info >= (3, 12):
        def __buffer__(self, flags: int, /) -> memoryview: ...

def export(obj: object, minimum: int) -> SharedBuffer | None:
    """``obj``'s bytes as a shared buffer: by reference if already in memory shared on purpose
    (a shared array), else a copy if at least ``minimum`` bytes (a buffer received from another
    process is copied: its receiver owns it, as pickle's does); None to send it inline (or if
    it is not contiguous)."""

def share(obj: object) -> SharedBuffer | None:
    """``obj``'s bytes shared on purpose, to reach several tasks by reference (``gilfree.joblib``
    sends a big argument once per call so): the buffer they lie in if already shared on
    purpose, else a copy in a new buffer marked so while it lives. None if empty, not
    contiguous, or where sharing is not supported."""

def copied_to_shared() -> int:
    """Bytes this process has copied into shared buffers to send them, since it started: large
    buffers and large messages (buffers already in shared memory travel without a copy). A
    measure of the data plane's copies, for tests and benchmarks."""

def huge_page_bytes() -> int:
    """Bytes of this process's large shared buffers moved into huge pages so far, by the thread
    that does it in the background: a measure for tests and benchmarks. Stays 0 where the
    system cannot do it."""

def open_buffer(pid: int, fd: int, offset: int, length: int) -> SharedBuffer:
    """Opens a buffer another process exported (its ``handle``), through ``/proc``."""
