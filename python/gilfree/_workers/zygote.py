"""The zygote: a single-threaded template process that forks workers on request.

It is started once per template (``Template``: the ``preload`` modules, the parent's main script
and ``sys.path``), by spawning a fresh interpreter, and is shared by every executor of the
process. It imports gilfree, the preload modules and the parent's main script (as
``__mp_main__``, once, where multiprocessing's spawn and forkserver run it in every worker), then
waits on a Unix socket for fork requests; each request carries the executor's segment descriptor
(``SCM_RIGHTS``). It reaps its children and reports each exit status. So a worker starts in a
fork's time with the user's modules already loaded and shares their pages copy-on-write.

It never forks while it has threads. Native thread pools that start at import (OpenBLAS, OpenMP,
MKL, numexpr) are held to one thread while it imports, and pyarrow's jemalloc starts no
background thread (``THREAD_LIMITS``, unless the user set them), so its workers compute with one
such thread each, as a pool of one worker per core should; ``threadpoolctl`` can raise that
inside a task. Should importing the main script still
start a thread, the zygote replaces itself (``exec``) with one that skips the script, and its
workers run the script themselves as spawned ones do.

It also starts ``gilfree.Process`` children, which run a pickled process object instead of the
worker loop (see ``process_child``).

Protocol (SOCK_SEQPACKET, one pickle per packet):
    parent -> zygote   ("fork", request_id, tracked, stdio, slot, epoch)  + the segment fd
    parent -> zygote   ("process", request_id, tracked, stdio)  + the process's fds (see
                       ``process_child``)
                       ``tracked``: one more fd follows, the parent's resource tracker, which
                       the child shares (see ``resources``); then the parent's standard
                       streams, one fd for each of ``stdio`` (those of 0, 1, 2 it has open),
                       which the child takes as its own: a child writes where the parent's
                       output goes now, not where it went when the zygote started
    zygote -> parent   ("forked", request_id, pid)
    zygote -> parent   ("exited", pid, raw_wait_status)
    zygote -> parent   ("main", names)  once, first: the top-level names of the main module its
                       children start with (empty: a fresh one), or None if they run the
                       script themselves
The zygote exits (killing its children) when the socket reaches EOF: the parent is gone.
"""

from __future__ import annotations

import atexit
import gc
import itertools
import os
import pickle
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

from gilfree import _core, _trace
from gilfree._wire import main as _main
from gilfree._wire.main import parent_main_path
from gilfree._workers import resources as _resources
from gilfree._workers.interpreter import python_command

#: Largest packet the parent reads from the zygote (a report of the main module's names).
_PACKET = 1 << 16
#: Longest an encoding waits for the zygote to report its main module's names.
MAIN_NAMES_WAIT_SECONDS = 60.0
#: Most descriptors one request carries (a process's arguments may hold connections).
MAX_FDS = 64


class WorkerHandle(Protocol):
    """What the zygote client reports to about one worker."""

    def started(self, pid: int) -> None:
        """The worker exists, with this pid."""

    def ended(self, exit_code: int) -> None:
        """The worker has ended and been reaped."""


#: Environment variables that keep libraries from starting threads at import: native thread
#: pools held to one thread, and no background thread for the jemalloc that pyarrow (pandas'
#: string columns) bundles. The zygote sets each one the user has not set while it imports;
#: its children get the parent's environment back.
THREAD_LIMITS = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "JE_ARROW_MALLOC_CONF": "background_thread:false",
}
_limits_added: list[str] = []


@dataclass(frozen=True)
class Template:
    """What a zygote loads before it forks. A zygote serves only executors of the same
    template; ``argv`` and ``cwd`` are those the main script first ran with (workers take the
    current ones from their setup)."""

    preload: tuple[str, ...]
    main_path: str | None
    sys_path: tuple[str, ...]
    #: ``_main.before_main`` in the parent: called before the main script runs here.
    before_main: tuple[str, ...] = ()
    argv: tuple[str, ...] = field(default=(), compare=False)
    cwd: str = field(default="", compare=False)

    @classmethod
    def current(cls, preload: tuple[str, ...]) -> Template:
        """The template for ``preload`` and this process's main script and paths."""
        return cls(
            preload,
            parent_main_path(),
            tuple(sys.path),
            tuple(_main.before_main),
            tuple(sys.argv),
            os.getcwd(),
        )


def _command(sock_fd: int, template: Template, load_main: bool) -> list[str]:
    code = (
        f"import sys; sys.path[:] = {list(template.sys_path)!r}; "
        "from gilfree._workers.zygote import Template, main; "
        f"main({sock_fd}, {template!r}, load_main={load_main})"
    )
    return python_command(code)


def main(sock_fd: int, template: Template, load_main: bool) -> NoReturn:
    """The zygote process: ``serve``, then exit at once (``os._exit``, after flushing stdio).
    The ``atexit`` handlers the main script registered here belong to the parent's run of it:
    run here too, they would act a second time (a handler that saves the script's results
    would overwrite the parent's file with this copy's empty ones)."""
    code = 1
    try:
        serve(sock_fd, template, load_main)
        code = 0
    except BaseException:  # noqa: BLE001 - reported, then the process ends as it must
        import traceback

        traceback.print_exc()
    finally:
        from gilfree._workers.worker import exit_process

        exit_process(code)


def serve(sock_fd: int, template: Template, load_main: bool = True) -> None:
    """The zygote's main loop (runs in the zygote process)."""
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _main.in_gilfree_process = True  # and in every child it forks
    # Booting (the imports, the main script) allocates hundreds of thousands of objects and
    # leaves almost no garbage (about 1 100 objects after numpy, pandas, joblib and
    # scikit-learn), yet the collector walked them again and again: 30 ms of the 260 ms that
    # numpy, pandas and joblib take to import, 75 ms of 790 with scikit-learn. So nothing is
    # collected while booting (a first threshold of 0 turns automatic collection off; a script
    # that sets the collector up itself is left as it set it), then everything is frozen and
    # collection resumes, as the gc module's documentation advises for a process that forks.
    # What garbage the boot made stays, in pages the workers share.
    thresholds = gc.get_threshold()
    booting = (0, *thresholds[1:])
    gc.set_threshold(*booting)
    for name, value in THREAD_LIMITS.items():
        if name not in os.environ:
            os.environ[name] = value
            _limits_added.append(name)

    import multiprocessing  # noqa: F401 - workers take the parent's authkey into it
    import runpy  # noqa: F401 - used by workers that import the parent's main script

    import cloudpickle  # noqa: F401 - unpickles functions sent by value

    import gilfree._workers.worker  # noqa: F401 - imported once here, inherited by every worker

    names: tuple[str, ...] | None = ()
    with _ParentWatch(sock_fd):
        for name in template.preload:
            importlib.import_module(name)
        if template.main_path:
            names = _load_main(template) if load_main else None
    if names is not None and template.main_path and load_main:  # the script ran here
        _restart_if_threaded(sock_fd, template)
    gc.freeze()  # the young generation holds all the boot made: no collection walks it
    if gc.get_threshold() == booting:
        gc.set_threshold(*thresholds)
    with socket.socket(fileno=sock_fd) as control:  # closed at the end: no ResourceWarning
        report = pickle.dumps(("main", names))
        if not _tell(control, report if len(report) <= _PACKET else pickle.dumps(("main", None))):
            return  # the parent is gone already (it may exit while the script still loads here)
        _fork_on_request(control)


def _fork_on_request(control: socket.socket) -> None:
    """Forks a worker for each request of the parent, until it is gone (its end of
    ``control`` closed or reset); then kills the children still running."""
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    while True:
        readable, _, _ = select.select([control.fileno(), wake_read], [], [])
        if wake_read in readable:
            os.read(wake_read, 4096)
            if not _reap(control, children):
                break
        if control.fileno() in readable:
            try:
                message, fds, _, _ = socket.recv_fds(control, _PACKET, MAX_FDS + 4)
            except ConnectionResetError:  # the parent is gone (interrupted while it exited)
                break
            if not message:
                break
            request = pickle.loads(message)
            # Everything the template holds (frozen at the end of its boot, and what it has
            # allocated since) is in the collector's permanent generation, so a child's
            # collections never walk those objects: they neither cost the child time (a full
            # collection over numpy, pandas and joblib took 21 ms, and decoding a batch of
            # 16 k small tuples triggers several) nor write to their headers, which would copy
            # the shared pages. Freezing is O(1) (a list splice).
            gc.freeze()
            pid = os.fork()
            if pid == 0:
                control.close()
                os.close(wake_read)
                os.close(wake_write)
                _run_child(request, fds)
            for fd in fds:
                os.close(fd)
            children.add(pid)
            if not _tell(control, pickle.dumps(("forked", request[1], pid))):
                break
    for pid in children:
        _core.kill(pid, signal.SIGKILL)


def _tell(control: socket.socket, message: bytes) -> bool:
    """Sends ``message`` to the parent; False if it is gone (its end of the socket is closed)."""
    try:
        control.send(message)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def _load_main(template: Template) -> tuple[str, ...] | None:
    """Runs the parent's main script as ``__mp_main__`` here, once for every worker, and returns
    its top-level names. If it fails, workers run it themselves and report the error (None)."""
    assert template.main_path is not None
    if template.argv:
        sys.argv[:] = template.argv
    try:
        if template.cwd:
            os.chdir(template.cwd)
        _main.run_before_main(template.before_main)
        _main.import_main(template.main_path)
    except BaseException:  # noqa: BLE001 - each worker runs the script again and reports it
        return None
    return tuple(_main.namespace())


def _restart_if_threaded(sock_fd: int, template: Template) -> None:
    """If the main script started a thread, starts over without it: the zygote must never fork
    with threads (its workers then run the script themselves)."""
    threads = _thread_count()
    if threads > 1:
        sys.stderr.write(
            f"gilfree: importing {template.main_path} started {threads - 1} thread(s); workers"
            " will import it themselves, as spawned ones do (slower to start)\n"
        )
        sys.stderr.flush()
        os.set_inheritable(sock_fd, True)
        command = _command(sock_fd, template, load_main=False)
        os.execv(command[0], command)


class _ParentWatch:
    """While the zygote boots (the preload modules, the main script: seconds for a script that
    loads data at its top level), a thread ends it if the parent is gone, as the serve loop
    does afterwards; without it a killed parent left the zygote running until its boot ended.

    Invariant: the thread has ended, and left ``/proc/self/task``, when the ``with`` block
    ends, so the zygote is single-threaded again before it counts its threads or forks.
    """

    def __init__(self, sock_fd: int) -> None:
        self._sock_fd = sock_fd
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._watch, name="gilfree-boot-watch", daemon=True)

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *_: object) -> None:
        os.write(self._stop_write, b"x")
        self._thread.join()
        task = f"/proc/self/task/{self._thread.native_id}"
        deadline = time.monotonic() + 1.0  # the OS thread ends a moment after join returns
        while os.path.exists(task) and time.monotonic() < deadline:
            time.sleep(0.0002)
        os.close(self._stop_read)
        os.close(self._stop_write)

    def _watch(self) -> None:
        poller = select.poll()
        # Only the hang-up: fork requests may already be waiting on the socket.
        poller.register(self._sock_fd, select.POLLRDHUP)
        poller.register(self._stop_read, select.POLLIN)
        while True:
            for fd, events in poller.poll():
                if fd == self._stop_read:
                    return
                if events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
                    os._exit(1)  # the parent is gone: nobody will ask for a worker


def _thread_count() -> int:
    """This process's threads: native ones too where the system lists them (Linux)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _reap(control: socket.socket, children: set[int]) -> bool:
    """Reaps the children that ended and tells the parent; False if the parent is gone."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return True
        children.discard(pid)
        if not _tell(control, pickle.dumps(("exited", pid, status))):
            return False
    return True


def _is_open(fd: int) -> bool:
    """Whether ``fd`` is an open descriptor of this process."""
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _run_child(request: tuple[object, ...], fds: list[int]) -> None:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for name in _limits_added:  # the parent's environment, for what the child starts
        os.environ.pop(name, None)
    code = 1
    try:
        # Die with the zygote: it is single-threaded, so its thread's end is its death.
        _core.set_parent_death_signal(signal.SIGKILL)
        for target in reversed(request[3]):  # type: ignore[call-overload]
            # The caller's standard streams as they are now, not as they were when this
            # zygote started (pytest's capture, a script's redirection, have moved them since).
            received = fds.pop()
            os.dup2(received, target)
            os.close(received)
        if request[2]:
            _resources.adopt(fds.pop())
        if request[0] == "fork":
            from gilfree._workers.worker import serve as serve_worker

            _, _, _, _, slot, epoch = request
            code = serve_worker(fds[0], slot, epoch)  # type: ignore[arg-type]
        else:
            from gilfree._workers.process_child import run

            signal.signal(signal.SIGINT, signal.default_int_handler)  # as any Python process
            code = run(fds)
    finally:
        from gilfree._workers.worker import exit_process

        exit_process(code)


class Zygote:
    """The parent's handle on a zygote: fork requests and exit notifications.

    ``fork`` does not wait for the zygote: the worker's rings exist before the worker does, so
    work can be queued at once; the pid and later the exit code arrive through the reader
    thread.
    """

    def __init__(self, template: Template) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = _command(theirs.fileno(), template, load_main=True)
        self.pid = _core.spawn(command, [theirs.fileno()])
        self.owner = os.getpid()
        self._exit_code: int | None = None
        theirs.close()
        self._socket = ours
        self._lock = threading.Lock()
        self._request_ids = itertools.count()
        self._main_names: frozenset[str] | None = None
        self._main_reported = threading.Event()
        self._forking: dict[int, WorkerHandle] = {}
        self._running: dict[int, WorkerHandle] = {}
        self._reader = threading.Thread(target=self._read, name="gilfree-zygote", daemon=True)
        self._reader.start()

    def fork(self, fd: int, slot: int, epoch: int, handle: WorkerHandle) -> None:
        """Asks for a worker on ``slot`` of segment ``fd``; ``handle`` learns its pid, then its
        exit code (calling ``handle.ended``)."""
        self._request(("fork", slot, epoch), [fd], handle)

    def start_process(self, fds: list[int], handle: WorkerHandle) -> None:
        """Asks for a ``gilfree.Process`` child that reads its process object and descriptors
        from ``fds`` (see ``process_child``); ``handle`` as in ``fork``."""
        if len(fds) > MAX_FDS:
            raise ValueError(f"a process can inherit at most {MAX_FDS} descriptors, not {len(fds)}")
        self._request(("process",), fds, handle)

    def _request(self, request: tuple[object, ...], fds: list[int], handle: WorkerHandle) -> None:
        tracker = _resources.caller_fd()
        if tracker is not None:  # the child shares this process's resource tracker, after them
            fds = [*fds, tracker]
        stdio = tuple(fd for fd in (0, 1, 2) if _is_open(fd))  # the child's own, last
        fds = [*fds, *stdio]
        with self._lock:
            request_id = next(self._request_ids)
            self._forking[request_id] = handle
            flags = (request_id, tracker is not None, stdio)
            message = pickle.dumps((request[0], *flags, *request[1:]))
            socket.send_fds(self._socket, [message], fds)

    def _read(self) -> None:
        while True:
            try:
                message = self._socket.recv(_PACKET)
            except OSError:
                message = b""
            if not message:
                break
            event = pickle.loads(message)
            if event[0] == "main":
                self._main_names = None if event[1] is None else frozenset(event[1])
                self._main_reported.set()
                continue
            with self._lock:
                if event[0] == "forked":
                    handle = self._forking.pop(event[1])
                    self._running[event[2]] = handle
                    handle.started(event[2])
                    continue
                handle = self._running.pop(event[1])
            exit_code = _core.exit_code_from_status(event[2])
            handle.ended(-1 if exit_code is None else exit_code)  # the zygote reaped it: ended
        # The zygote is gone, and its workers with it (they die with their parent).
        self._main_reported.set()
        with self._lock:
            orphans = list(self._forking.values()) + list(self._running.values())
            self._forking.clear()
            self._running.clear()
        for handle in orphans:
            handle.ended(-signal.SIGKILL)

    def main_names_known(self) -> bool:
        """Whether ``main_names`` returns at once (the zygote has reported them)."""
        return self._main_reported.is_set()

    def main_names(self) -> frozenset[str] | None:
        """The top-level names of the main module this zygote's children start with, once it
        has run the script (waiting for that, as a first task would); None if unknown (the
        children run the script themselves, or it took too long)."""
        self._main_reported.wait(MAIN_NAMES_WAIT_SECONDS)
        return self._main_names

    def alive(self) -> bool:
        """Whether the zygote process is still running (reaps it if not)."""
        if self._exit_code is None:
            try:
                self._exit_code = _core.try_wait(self.pid)
            except ChildProcessError:  # reaped by someone else
                self._exit_code = -signal.SIGKILL
        return self._exit_code is None

    def close(self) -> None:
        """Ends the zygote (it kills any worker still alive) and reaps it."""
        if self.owner != os.getpid():
            self._socket.close()  # inherited through fork: the zygote is the parent's
            return
        # shutdown() first: a close() alone would not end the reader thread's recv(), and the
        # zygote would not see EOF while that call holds the socket.
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._socket.close()
        if self._exit_code is None:
            try:
                self._exit_code = _core.wait(self.pid)
            except ChildProcessError:  # reaped by someone else
                self._exit_code = -signal.SIGKILL

    def idle(self) -> bool:
        """Whether no child of this zygote is starting or running."""
        with self._lock:
            return not self._forking and not self._running


_zygotes: dict[Template, Zygote] = {}
_zygotes_lock = threading.Lock()


def get(preload: tuple[str, ...]) -> Zygote:
    """The zygote for ``preload`` and this process's main script and ``sys.path``, started on
    first use (one per process and template). Idle zygotes of an older template of the same
    ``preload`` (``sys.path`` changed since) are closed."""
    _main.check_not_importing()
    template = Template.current(preload)
    with _zygotes_lock:
        zygote = _zygotes.get(template)
        if zygote is None or zygote.owner != os.getpid() or not zygote.alive():
            # None yet, one inherited through a fork of this process, or one that died.
            for other in [key for key in _zygotes if key.preload == preload and key != template]:
                if _zygotes[other].owner == os.getpid() and _zygotes[other].idle():
                    _zygotes.pop(other).close()
            zygote = _zygotes[template] = Zygote(template)
        return zygote


def prestart(preload: tuple[str, ...] = ()) -> None:
    """Starts the zygote for ``preload`` in the background, so that the first executor with
    that ``preload`` finds it ready, where this process would start one on its own: its main
    process, not while it imports the main script, not in gilfree's own processes or
    multiprocessing's children. Never raises: the executor starts the zygote, or says why it
    cannot, when it is needed."""
    import multiprocessing

    if _main.importing or _main.in_gilfree_process or multiprocessing.parent_process() is not None:
        return
    if not hasattr(os, "fork"):
        return
    try:
        get(preload)
    except Exception:  # noqa: BLE001 - an optimisation only; the executor will report
        if _trace.ENABLED:
            _trace.log.debug("no zygote started ahead of time", exc_info=True)


def pids() -> list[int]:
    """The pids of this process's zygotes."""
    return [zygote.pid for zygote in _zygotes.values() if zygote.owner == os.getpid()]


def default_pid() -> int | None:
    """The pid of this process's first zygote, if one started (for tests and diagnostics)."""
    found = pids()
    return found[0] if found else None


#: Called at exit before the zygotes close, in order: the engine shuts every executor down there
#: (waiting for its work), ``gilfree.process`` joins its children.
before_close: list[Callable[[], None]] = []


@atexit.register
def _close_all() -> None:
    for hook in before_close:
        hook()
    with _zygotes_lock:
        for zygote in _zygotes.values():
            zygote.close()
        _zygotes.clear()
