"""The worker process: receive a request, run it, send the response, until told to exit.

A worker starts in one of three ways (see ``launch``) and then runs ``serve(fd, slot, epoch)``:
it maps the executor's segment, reads the ``SETUP`` message (paths, main module, initializer),
answers ``READY`` and loops. It spins briefly for the next request before sleeping, and exits on
``EXIT`` or when its parent is gone.
"""

from __future__ import annotations

import atexit
import functools
import gc
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from gilfree import _core
from gilfree._core import WorkerChannel
from gilfree._wire import main as _main
from gilfree._wire import protocol
from gilfree._workers import heap
from gilfree._workers.progress import ChunkWatch

_Failure = TypeVar("_Failure")

#: How long an idle worker busy-waits for the next request before sleeping on the futex.
SPIN_MICROSECONDS = 100.0
#: How often a sleeping worker wakes to check that its parent is alive.
POLL_SECONDS = 0.1
#: How often a native thread checks that the parent is alive (a busy worker dies with it too).
PARENT_WATCH_SECONDS = 0.1
#: Longest an exiting worker waits for the parent to read its last shared replies.
RELEASE_WAIT_SECONDS = 30.0
#: How long a worker may take to run its exit hooks (join threads, exit handlers) once its loop
#: has ended, before SIGALRM ends it.
EXIT_GRACE_SECONDS = 10


@dataclass(frozen=True)
class ProcessSettings:
    """What a forked child inherits from its parent that a worker forked from the template
    would take from the template instead, as it was when the template started: the file
    mode mask, the scheduling priority and the resource limits (a parent that tightened its
    umask after the first pool would otherwise get files its workers create readable by all)."""

    umask: int | None
    niceness: int
    limits: tuple[tuple[int, int, int], ...]

    @classmethod
    def current(cls) -> ProcessSettings:
        """This process's settings."""
        import resource

        limits = []
        for number in _limit_numbers():
            try:
                limits.append((number, *resource.getrlimit(number)))
            except (OSError, ValueError):  # not on this kernel
                pass
        return cls(_current_umask(), os.getpriority(os.PRIO_PROCESS, 0), tuple(limits))

    def apply(self) -> None:
        """Takes these settings where they differ, as far as this process may: a limit it may
        not raise, or a priority it may not raise, stays as it is."""
        import resource

        if self.umask is not None:
            os.umask(self.umask)
        try:
            if os.getpriority(os.PRIO_PROCESS, 0) != self.niceness:
                os.setpriority(os.PRIO_PROCESS, 0, self.niceness)
        except OSError:
            pass
        for number, soft, hard in self.limits:
            try:
                if resource.getrlimit(number) != (soft, hard):
                    resource.setrlimit(number, (soft, hard))
            except (OSError, ValueError):
                pass


@functools.cache
def _limit_numbers() -> tuple[int, ...]:
    """The numbers of the resource limits this platform has (``resource.RLIMIT_*``)."""
    import resource

    return tuple(
        sorted({getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")})
    )


def _current_umask() -> int | None:
    """The file mode mask, read without changing it (``os.umask`` sets one to read it, which
    another thread's file would get meanwhile); None where the kernel does not say."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return None


@dataclass
class WorkerSetup:
    """What a worker needs before its first task (sent as the first message, by value)."""

    #: Forked from the parent: paths, arguments, directory and ``__main__`` are already its.
    inherits: bool = False
    sys_path: list[str] = field(default_factory=list)
    sys_argv: list[str] = field(default_factory=list)
    cwd: str | None = None
    #: The parent's environment when the worker was asked for (the template's is the one the
    #: parent had when the template started).
    environment: dict[str, str] | None = None
    main_path: str | None = None
    #: ``_main.before_main`` of the parent: called before the main script runs here.
    before_main: list[str] = field(default_factory=list)
    #: ``multiprocessing.current_process().authkey`` of the parent, as multiprocessing sends.
    authkey: bytes = b""
    #: This worker's ``multiprocessing.current_process()._identity`` (drawn from the parent's
    #: process counter, as the stdlib's workers' are); empty: keep the inherited one.
    identity: tuple[int, ...] = ()
    #: The parent's pid and ``current_process().name``, for ``multiprocessing.parent_process()``.
    parent_pid: int = 0
    parent_name: str = ""
    #: Resident bytes past which the worker asks to be replaced (``max_memory_per_child``).
    max_memory: int | None = None
    #: multiprocessing's logging in the parent, as spawn passes it: ``log_to_stderr()`` was
    #: called; the level of its logger (None: no logger made).
    log_to_stderr: bool = False
    log_level: int | None = None
    #: The parent's process settings a fork would pass on (see ``ProcessSettings``); None
    #: when the worker inherited them through fork.
    settings: ProcessSettings | None = None
    #: ``(initializer, initargs)``, pickled (see ``gilfree._wire.pickling``), loaded once
    #: ``sys_path`` is in place; empty when the worker inherited them through fork.
    initializer: bytes = b""


def apply_setup(setup: WorkerSetup) -> None:
    """Takes the parent's paths, arguments, directory, environment, authkey and main module
    (everything in ``setup`` but the initializer). The main script is not run again where the
    template process this worker was forked from already ran it."""
    if setup.sys_path:
        sys.path[:] = setup.sys_path
    if setup.sys_argv:
        sys.argv[:] = setup.sys_argv
    if setup.authkey:
        import multiprocessing

        multiprocessing.current_process().authkey = setup.authkey
    if setup.identity:
        name_process(setup.identity, setup.parent_pid, setup.parent_name)
    if setup.log_to_stderr or setup.log_level is not None:
        from multiprocessing import util

        if setup.log_to_stderr:
            util.log_to_stderr()
        if setup.log_level is not None:
            util.get_logger().setLevel(setup.log_level)
    if setup.settings is not None:
        setup.settings.apply()
    if setup.cwd is not None:
        os.chdir(setup.cwd)
    if setup.environment is not None:
        take_environment(setup.environment)
    if setup.main_path:
        if not _main.loaded(setup.main_path):
            _main.run_before_main(setup.before_main)
            _main.import_main(setup.main_path)
    elif not setup.inherits:
        _main.install_empty_main()


def name_process(identity: tuple[int, ...], parent_pid: int, parent_name: str) -> None:
    """Makes this worker a multiprocessing child, as the stdlib's workers are: its
    ``current_process()`` is ``GilfreeWorker-N`` with ``_identity`` ``(N,)``, not the
    ``MainProcess`` it inherited (code guarded by that name runs in the parent only, and
    ``_identity[0]``, a common seed per worker, exists), and ``parent_process()`` is the
    parent, alive while it runs (where ``os.pidfd_open`` is had; else it stays None)."""
    from multiprocessing import process

    current = process.current_process()
    current._identity = identity  # noqa: SLF001 - what BaseProcess.__init__ sets
    current.name = "GilfreeWorker-" + ":".join(map(str, identity))
    current._parent_pid = parent_pid  # type: ignore[attr-defined]  # noqa: SLF001
    current._parent_name = parent_name  # type: ignore[attr-defined]  # noqa: SLF001
    try:
        sentinel = os.pidfd_open(parent_pid)
    except (AttributeError, OSError):  # not Linux, or the parent already gone
        return
    os.set_inheritable(sentinel, False)
    parent = process._ParentProcess  # type: ignore[attr-defined]  # noqa: SLF001
    process._parent_process = parent(parent_name, parent_pid, sentinel)  # type: ignore[attr-defined]  # noqa: SLF001


def take_environment(environment: dict[str, str]) -> None:
    """Makes ``os.environ`` (and the C library's) equal to ``environment``, touching only what
    differs."""
    for name in [name for name in os.environ if name not in environment]:
        del os.environ[name]
    for name, value in environment.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _setup(channel: WorkerChannel, epoch: int, setup: WorkerSetup, inherited: Initializer) -> bool:
    stage = "while running the main script"
    try:
        apply_setup(setup)
        stage = "in initializer"
        initializer, initargs = (
            protocol.unpickle(setup.initializer) if setup.initializer else inherited
        )
        if initializer is not None:
            initializer(*initargs)
    except BaseException as error:
        import logging

        # As concurrent.futures' workers do, then flush what the initializer queued.
        logging.getLogger("concurrent.futures").critical(f"Exception {stage}:", exc_info=True)
        _flush_multiprocessing()
        channel.send(protocol.INIT_FAILED, epoch, 0, 0, protocol.dump_exception(error))
        return False
    channel.send(protocol.READY, epoch, 0, os.getpid(), b"")
    return True


def _flush_multiprocessing() -> None:
    """Runs multiprocessing's exit hooks (queue feeders, finalizers), as a multiprocessing
    process does before it exits; a no-op if multiprocessing was never used here."""
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util._exit_function()  # noqa: SLF001 - what Process._bootstrap calls


def _load_arguments(payload: bytes) -> Any:
    """Unpickles a task's arguments; a failure there is the pool's, not the task's (as in
    concurrent.futures, where the worker dies and the future gets BrokenProcessPool)."""
    try:
        return protocol.loads(payload)
    except BaseException as error:
        from concurrent.futures.process import BrokenProcessPool

        raise BrokenProcessPool(f"could not unpickle the task's arguments: {error!r}") from error


def _run_chunk(
    fn: Callable[..., Any], payload: bytes, results: list[Any]
) -> tuple[list[Any], list[tuple[int, bytes]]]:
    """Runs a chunk's calls (see ``run_items``), each failure as an encoded exception."""
    items, star = _load_arguments(payload)
    return run_items(fn, items, star, protocol.dump_exception, results)


def run_items(
    fn: Callable[..., Any],
    items: Iterable[Any],
    star: bool,
    describe: Callable[[BaseException], _Failure],
    results: list[Any] | None = None,
) -> tuple[list[Any], list[tuple[int, _Failure]]]:
    """Runs ``fn`` over ``items`` (``fn(*item)`` with ``star``): ``(results, failures)``, where
    each failure is ``(index, describe(exception))`` and leaves a None at its index in
    ``results``; the calls after a failure run too, as they would one by one. ``results`` may
    be given (empty): a ``ChunkWatch`` reads its length while the items run."""
    if results is None:
        results = []
    failures: list[tuple[int, _Failure]] = []
    calls = itertools.starmap(fn, items) if star else map(fn, items)
    while True:
        try:
            # list.extend keeps what was appended before an exception, and a map iterator goes
            # on after one: the loop runs at C speed between failures.
            results.extend(calls)
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            failures.append((len(results), describe(error)))
            results.append(None)
        else:
            return results, failures


def _encode_result(kind: int, value: Any, shared: list[Any]) -> tuple[int, bytes]:
    """``(kind, payload)`` of the reply carrying ``value`` (a call's result, or a chunk's
    ``(results, failures)``); ERROR with a ``SerializationError`` naming the part of the result
    that cannot be sent, if any. In a chunk, only the items whose results cannot be sent fail
    (see ``fail_unsendable_results``). SystemExit or KeyboardInterrupt raised while encoding
    (by a ``__reduce__``) is sent as it is, for the future to raise, as concurrent.futures
    does."""
    try:
        return kind, protocol.dumps(value, shared)
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        from gilfree._wire.serialization import RESULT, explain, fail_unsendable_results

        shared.clear()
        if not isinstance(error, Exception):
            return protocol.ERROR, protocol.dump_exception(error)
        if kind == protocol.CHUNK_RESULT:
            results, failures = value
            failures = fail_unsendable_results(
                results,
                failures,
                lambda result: protocol.dumps(result, []),
                protocol.dump_exception,
            )
            try:
                return kind, protocol.dumps((results, failures), shared)
            except Exception:  # noqa: BLE001 - the chunk as a whole, as below
                shared.clear()
        root = value[0] if kind == protocol.CHUNK_RESULT else value
        return protocol.ERROR, protocol.dump_exception(explain({RESULT: root}, error))


def resident_bytes() -> int:
    """This process's resident memory: current (``/proc/self/statm``) where the system tells
    it, else the peak so far (``getrusage``), which can only overstate it."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB else


def _loop(channel: WorkerChannel, epoch: int, max_memory: int | None) -> None:
    functions: dict[int, Callable[..., Any]] = {}
    held: dict[int, list[Any]] = {}  # task id -> shared buffers of its reply, until RELEASE
    receive, send = channel.receive, channel.send
    watch = ChunkWatch(lambda task_id, done: send(protocol.PROGRESS, epoch, task_id, done, b""))
    retiring = False  # past max_memory: decline queued work, wait for EXIT
    fn: Callable[..., Any] | None
    results: list[Any] | None
    while True:
        message = receive(POLL_SECONDS, SPIN_MICROSECONDS)
        if message is None:
            if not channel.parent_alive():
                return
            continue
        kind, _, task_id, arg, payload = message
        started = time.perf_counter_ns()
        watched = kind & protocol.WATCH_FLAG
        kind &= ~protocol.WATCH_FLAG
        if retiring and kind in (protocol.CALL, protocol.CHUNK):
            if arg == protocol.ONE_OFF:
                functions.pop(arg, None)
            send(protocol.DECLINED, epoch, task_id, 0, b"")
            continue
        if kind == protocol.CALL:
            fn = functions.pop(arg) if arg == protocol.ONE_OFF else functions[arg]
            shared: list[Any] = []
            try:
                args, kwargs = _load_arguments(payload)
                value = fn(*args, **kwargs)
            except BaseException as error:  # noqa: BLE001 - reported to the parent
                reply_kind, reply = protocol.ERROR, protocol.dump_exception(error)
            else:
                reply_kind, reply = _encode_result(protocol.RESULT, value, shared)
            fn = args = kwargs = value = None  # release them now, not at the next task
        elif kind == protocol.CHUNK:
            fn = functions.pop(arg) if arg == protocol.ONE_OFF else functions[arg]
            shared = []
            results = []
            if watched:
                watch.begin(task_id, results)
            try:
                results, failures = _run_chunk(fn, payload, results)
            except BaseException as error:  # noqa: BLE001 - the arguments could not be loaded
                reply_kind, reply = protocol.ERROR, protocol.dump_exception(error)
            else:
                reply_kind, reply = _encode_result(
                    protocol.CHUNK_RESULT, (results, failures), shared
                )
            if watched:
                watch.end()  # before the reply: no PROGRESS after it, nor beside it
            fn = results = None
        elif kind == protocol.DEFINE:
            functions.pop(task_id, None)  # the parent's cache dropped it
            try:
                functions[arg] = protocol.unpickle(payload)
            except BaseException as error:  # noqa: BLE001 - the calls that use it will fail
                functions[arg] = _Unloadable(error)
            heap.settle_numpy()  # a function's module may have imported numpy
            continue
        elif kind == protocol.RELEASE:
            held.pop(task_id, None)
            continue
        elif kind == protocol.EXIT:
            _await_releases(channel, held)
            return
        else:
            continue
        if shared:
            held[task_id] = shared
            reply_kind |= protocol.SHARED_FLAG
        shared = []
        if max_memory is not None and resident_bytes() > max_memory:
            # Before the reply: the parent then sends nothing new once it has the result, and
            # work already queued here is declined (the parent sends it to another worker).
            send(protocol.RETIRE, epoch, 0, 0, b"")
            retiring, max_memory = True, None
        send(reply_kind, epoch, task_id, time.perf_counter_ns() - started, reply)


def _await_releases(channel: WorkerChannel, held: dict[int, list[Any]]) -> None:
    """Before exiting, waits until the parent has read the replies whose shared buffers this
    worker still holds: they live in this process's memory files, which vanish with it. Gives up
    after RELEASE_WAIT_SECONDS or when the parent is gone."""
    deadline = time.monotonic() + RELEASE_WAIT_SECONDS
    while held and time.monotonic() < deadline and channel.parent_alive():
        message = channel.receive(POLL_SECONDS, 0.0)
        if message is not None and message[0] == protocol.RELEASE:
            held.pop(message[2], None)


class _Unloadable:
    """Stands in for a function that could not be unpickled; calling it re-raises why."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


#: ``(initializer, initargs)`` handed over in memory (fork), or ``(None, ())``.
Initializer = tuple[Callable[..., Any] | None, tuple[Any, ...]]


def serve(fd: int, slot: int, epoch: int, inherited: Initializer = (None, ())) -> int:
    """Runs a worker on slot ``slot`` of the segment behind ``fd``; returns the exit code.

    It ends as a multiprocessing child does (``Process._bootstrap``, and Python 3.13's fork
    children): the exit handlers it inherited (the parent's or the zygote's) are dropped at
    start, and at the end non-daemon threads are joined and ``threading``'s exit callbacks run
    (an executor a task started, loky's among them, shuts down there), then the exit handlers
    its tasks registered, then multiprocessing's (queue feeders, children). Its ``sys.stdin``
    reads ``/dev/null``, as a multiprocessing child's does."""
    atexit._clear()  # noqa: SLF001 - as multiprocessing's fork children do
    _main.in_gilfree_process = True
    # As Process._bootstrap does: sys.stdin reads /dev/null, not the parent's input (a
    # worker's buffered read would take lines the parent reads later, or block on a terminal).
    from multiprocessing import util

    util._close_stdin()  # type: ignore[attr-defined]  # noqa: SLF001
    try:
        return _serve(fd, slot, epoch, inherited)
    finally:
        # A thread that never ends (or a handler that hangs) would keep a retiring worker, and
        # so its slot, forever: SIGALRM, left to its default action, ends the process first.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(EXIT_GRACE_SECONDS)
        threading._shutdown()  # type: ignore[attr-defined]  # noqa: SLF001 - as _bootstrap does
        atexit._run_exitfuncs()  # noqa: SLF001
        _flush_multiprocessing()


def _serve(fd: int, slot: int, epoch: int, inherited: Initializer) -> int:
    # Ctrl-C is the parent's to handle: it stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _core.exit_with_parent(os.getppid(), PARENT_WATCH_SECONDS)
    channel = WorkerChannel(fd, slot)
    os.close(fd)
    message = None
    while message is None:
        message = channel.receive(POLL_SECONDS, 0.0)
        if message is None and not channel.parent_alive():
            return 1
    kind, epoch_seen, _, _, payload = message
    if kind != protocol.SETUP or epoch_seen != epoch:
        return 2
    setup = protocol.loads(payload)
    if not _setup(channel, epoch, setup, inherited):
        return 3
    # What setup made (the main script where this worker ran it, the initializer's globals)
    # lives as long as the worker: as the template's objects (see ``zygote``), it goes to the
    # collector's permanent generation, so collections during tasks walk only the tasks' own.
    gc.freeze()
    # Task after task uses memory of the same sizes: fault its pages in once, and cheaply.
    heap.configure(setup.max_memory)
    _loop(channel, epoch, setup.max_memory)
    return 0


def main() -> None:
    """Entry point of a spawned worker: ``python -c ... FD SLOT EPOCH [TRACKER_FD]``."""
    fd, slot, epoch = (int(value) for value in sys.argv[1:4])
    if len(sys.argv) > 4:
        from gilfree._workers import resources

        resources.adopt(int(sys.argv[4]))
    exit_process(serve(fd, slot, epoch))


def exit_process(code: int) -> NoReturn:
    """Flushes stdout and stderr (the task may have closed or removed them, as
    multiprocessing's ``util._flush_std_streams`` allows) and exits at once with ``code``."""
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, ValueError, OSError):
                pass
    finally:
        os._exit(code)
