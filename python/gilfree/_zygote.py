"""The zygote: a single-threaded template process that forks workers on request.

It is started once per set of ``preload`` modules, by spawning a fresh interpreter, and is shared
by every executor of the process. It imports gilfree and the preload modules, then waits on a
Unix socket for fork requests; each request carries the executor's segment descriptor
(``SCM_RIGHTS``). It reaps its children and reports each exit status. Forking from it is safe
because it never has threads, and fast because the imports are already done.

It also starts ``gilfree.Process`` children, which run a pickled process object instead of the
worker loop (see ``_process_child``).

Protocol (SOCK_SEQPACKET, one pickle per packet):
    parent -> zygote   ("fork", request_id, slot, epoch)  + the segment fd
    parent -> zygote   ("process", request_id)  + the process's fds (see ``_process_child``)
    zygote -> parent   ("forked", request_id, pid)
    zygote -> parent   ("exited", pid, raw_wait_status)
The zygote exits (killing its children) when the socket reaches EOF: the parent is gone.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pickle
import select
import signal
import socket
import sys
import threading
from typing import Callable, Protocol

from gilfree import _core

_PACKET = 4096
#: Most descriptors one request carries (a process's arguments may hold connections).
MAX_FDS = 64


class WorkerHandle(Protocol):
    """What the zygote client reports to about one worker."""

    def started(self, pid: int) -> None:
        """The worker exists, with this pid."""

    def ended(self, exit_code: int) -> None:
        """The worker has ended and been reaped."""


def serve(sock_fd: int, preload: list[str]) -> None:
    """The zygote's main loop (runs in the zygote process)."""
    import importlib

    import runpy  # noqa: F401 - used by workers that import the parent's main script

    import multiprocessing  # noqa: F401 - workers take the parent's authkey into it

    import cloudpickle  # noqa: F401 - unpickles functions sent by value

    import gilfree._worker  # noqa: F401 - imported once here, inherited by every worker

    for name in preload:
        importlib.import_module(name)
    control = socket.socket(fileno=sock_fd)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    children: set[int] = set()
    while True:
        readable, _, _ = select.select([control, wake_read], [], [])
        if wake_read in readable:
            os.read(wake_read, 4096)
            _reap(control, children)
        if control in readable:
            message, fds, _, _ = socket.recv_fds(control, _PACKET, MAX_FDS)
            if not message:
                break
            request = pickle.loads(message)
            pid = os.fork()
            if pid == 0:
                control.close()
                os.close(wake_read)
                os.close(wake_write)
                _run_child(request, fds)
            for fd in fds:
                os.close(fd)
            children.add(pid)
            control.send(pickle.dumps(("forked", request[1], pid)))
    for pid in children:
        _core.kill(pid, signal.SIGKILL)


def _reap(control: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        control.send(pickle.dumps(("exited", pid, status)))


def _run_child(request: tuple[object, ...], fds: list[int]) -> None:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    code = 1
    try:
        # Die with the zygote: it is single-threaded, so its thread's end is its death.
        _core.set_parent_death_signal(signal.SIGKILL)
        if request[0] == "fork":
            from gilfree._worker import serve as serve_worker

            _, _, slot, epoch = request
            code = serve_worker(fds[0], slot, epoch)  # type: ignore[arg-type]
        else:
            from gilfree._process_child import run

            signal.signal(signal.SIGINT, signal.default_int_handler)  # as any Python process
            code = run(fds)
    finally:
        from gilfree._worker import exit_process

        exit_process(code)




class Zygote:
    """The parent's handle on a zygote: fork requests and exit notifications.

    ``fork`` does not wait for the zygote: the worker's rings exist before the worker does, so
    work can be queued at once; the pid and later the exit code arrive through the reader
    thread.
    """

    def __init__(self, preload: tuple[str, ...]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        code = (
            "import sys; sys.path[:] = " + repr(list(sys.path)) + "; "
            "from gilfree._zygote import serve; serve(" + str(theirs.fileno()) + ", "
            + repr(list(preload)) + ")"
        )
        self.pid = _core.spawn([sys.executable, "-c", code], [theirs.fileno()])
        self.owner = os.getpid()
        self._exit_code: int | None = None
        theirs.close()
        self._socket = ours
        self._lock = threading.Lock()
        self._request_ids = itertools.count()
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
        from ``fds`` (see ``_process_child``); ``handle`` as in ``fork``."""
        if len(fds) > MAX_FDS:
            raise ValueError(f"a process can inherit at most {MAX_FDS} descriptors, not {len(fds)}")
        self._request(("process",), fds, handle)

    def _request(self, request: tuple[object, ...], fds: list[int], handle: WorkerHandle) -> None:
        with self._lock:
            request_id = next(self._request_ids)
            self._forking[request_id] = handle
            message = pickle.dumps((request[0], request_id, *request[1:]))
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
            with self._lock:
                if event[0] == "forked":
                    handle = self._forking.pop(event[1])
                    self._running[event[2]] = handle
                    handle.started(event[2])
                    continue
                handle = self._running.pop(event[1])
            handle.ended(_core.exit_code_from_status(event[2]))
        # The zygote is gone, and its workers with it (they die with their parent).
        with self._lock:
            orphans = list(self._forking.values()) + list(self._running.values())
            self._forking.clear()
            self._running.clear()
        for handle in orphans:
            handle.ended(-signal.SIGKILL)

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


_zygotes: dict[tuple[str, ...], Zygote] = {}
_zygotes_lock = threading.Lock()


def get(preload: tuple[str, ...]) -> Zygote:
    """The zygote for ``preload``, started on first use (one per process and preload set)."""
    with _zygotes_lock:
        zygote = _zygotes.get(preload)
        if zygote is None or zygote.owner != os.getpid() or not zygote.alive():
            # None yet, one inherited through a fork of this process, or one that died.
            zygote = _zygotes[preload] = Zygote(preload)
        return zygote


def pids() -> list[int]:
    """The pids of this process's zygotes."""
    return [zygote.pid for zygote in _zygotes.values() if zygote.owner == os.getpid()]


#: Called at exit before the zygotes close (``gilfree.process`` joins its children there).
before_close: list[Callable[[], None]] = []


@atexit.register
def _close_all() -> None:
    for hook in before_close:
        hook()
    with _zygotes_lock:
        for zygote in _zygotes.values():
            zygote.close()
        _zygotes.clear()
