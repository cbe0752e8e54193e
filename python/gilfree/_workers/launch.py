"""Start methods: how a worker process comes to exist.

* ``zygote`` (default on Linux and macOS): forked by the shared template process, which already
  imported gilfree and the ``preload`` modules. Fast, and safe in a threaded parent.
* ``spawn``: a fresh interpreter per worker (``python -c ...``). Slow to start, portable.
* ``fork``: ``os.fork()`` of the calling process. Fast, but unsafe once the parent has threads
  (Python warns about that from 3.12 on), as with multiprocessing.

Whatever the method, the worker runs ``gilfree._workers.worker.serve(fd, slot, epoch)``, and the
parent learns of its end through ``WorkerProcess.poll``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from gilfree import _core
from gilfree._wire import main as _main
from gilfree._workers import resources as _resources
from gilfree._workers import zygote as _zygote
from gilfree._workers.interpreter import python_command
from gilfree._workers.process_tree import kill_tree

START_METHODS = ("zygote", "spawn", "fork")
#: ``(initializer, initargs)``.
Initializer = tuple[Callable[..., Any] | None, tuple[Any, ...]]


#: The start method the script set for itself with ``gilfree.multiprocessing.set_start_method``
#: (``multiprocessing.set_start_method`` under ``python -m gilfree run``), in gilfree's names
#: (``"forkserver"`` is the zygote); None: gilfree's default.
script_start_method: str | None = None


def default_start_method() -> str:
    """The zygote where fork exists (it is only ever used from a single-threaded process)."""
    return "zygote" if hasattr(os, "fork") else "spawn"


class WorkerProcess:
    """A started worker: its pid, and its exit code once it has ended.

    Workers we started ourselves (spawn, fork) are reaped here, by ``poll``. A zygote-forked
    worker is the zygote's child: the zygote client fills in its pid and exit code.
    """

    def __init__(self, pid: int = 0, reaped_by_us: bool = False) -> None:
        self.pid = pid
        self._reaped_by_us = reaped_by_us
        self._pid_known = threading.Event()
        if pid:
            self._pid_known.set()
        self.exit_code: int | None = None
        self._ended = threading.Event()
        #: Called (from any thread) when a zygote-forked worker is known to have ended.
        self.on_exit: Callable[[], None] = lambda: None

    def started(self, pid: int) -> None:
        """Records the pid (zygote client)."""
        self.pid = pid
        self._pid_known.set()

    def ended(self, exit_code: int) -> None:
        """Records the exit code (zygote client)."""
        self.exit_code = exit_code
        self._pid_known.set()
        self._ended.set()
        self.on_exit()

    def poll(self) -> int | None:
        """The exit code if the worker has ended (negative: killed by that signal), else None."""
        if self.exit_code is None and self._reaped_by_us:
            try:
                self.exit_code = _core.try_wait(self.pid)
            except ChildProcessError:
                # Reaped by someone else (SIGCHLD ignored, a stray waitpid(-1)): it has ended,
                # but how is lost.
                self.exit_code = -signal.SIGKILL
        return self.exit_code

    def kill(self) -> None:
        """Sends SIGKILL to the worker and every process it started, which would run on
        orphaned (``process_tree``); no effect once it has ended."""
        self._pid_known.wait(5.0)
        if self.poll() is None and self.pid:
            kill_tree(self.pid)

    def terminate(self) -> None:
        """Sends SIGTERM (no effect once it has ended)."""
        self._signal(signal.SIGTERM)

    def _signal(self, number: int) -> None:
        self._pid_known.wait(5.0)
        if self.poll() is None and self.pid:
            _core.kill(self.pid, number)

    # multiprocessing.Process-like views, for code that reads ``executor._processes``.

    @property
    def exitcode(self) -> int | None:
        """As ``multiprocessing.Process.exitcode``."""
        return self.poll()

    def is_alive(self) -> bool:
        """As ``multiprocessing.Process.is_alive``."""
        return self.poll() is None

    def wait_for_pid(self, timeout: float | None = None) -> int:
        """The pid, once known (0 if it is not known within ``timeout``)."""
        self._pid_known.wait(timeout)
        return self.pid

    def join(self, timeout: float | None = None) -> None:
        """Waits until the worker has ended, at most ``timeout`` seconds."""
        if not self._reaped_by_us:
            self._ended.wait(timeout)
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.001)


class Launcher:
    """Starts workers for one executor with one start method."""

    def __init__(
        self, method: str, preload: tuple[str, ...], inherited: Initializer = (None, ())
    ) -> None:
        self.method = method
        self._preload = preload
        self._inherited = inherited  # the initializer, for workers that get it by fork
        #: Called (from any thread) when a zygote-forked worker is known to have ended.
        self.on_exit: Callable[[], None] = lambda: None

    def prepare(self) -> None:
        """Starts the zygote now, if this method uses one, so it boots while the caller works."""
        if self.method == "zygote":
            _zygote.get(self._preload)

    def main_names_known(self) -> bool:
        """Whether ``main_names`` returns at once."""
        return self.method != "zygote" or _zygote.get(self._preload).main_names_known()

    def main_names(self) -> frozenset[str] | None:
        """The top-level names of the main module the workers start with, where they are known
        before any worker exists (the zygote reports them); None elsewhere."""
        if self.method != "zygote":
            return None
        return _zygote.get(self._preload).main_names()

    def start(self, fd: int, slot: int, epoch: int) -> WorkerProcess:
        """Starts a worker on ``slot`` of the segment ``fd``; it reads its setup from the ring."""
        if self.method == "zygote":
            return self._start_from_zygote(fd, slot, epoch)
        _main.check_not_importing()
        if self.method == "spawn":
            code = "from gilfree._workers.worker import main; main()"
            argv = python_command(code, str(fd), str(slot), str(epoch))
            tracker = _resources.caller_fd()  # shared, as multiprocessing's spawn shares it
            if tracker is None:
                return WorkerProcess(_core.spawn(argv, [fd]), reaped_by_us=True)
            argv.append(str(tracker))
            return WorkerProcess(_core.spawn(argv, [fd, tracker]), reaped_by_us=True)
        return self._fork(fd, slot, epoch, self._inherited)

    def _start_from_zygote(self, fd: int, slot: int, epoch: int) -> WorkerProcess:
        handle = WorkerProcess()
        handle.on_exit = self.on_exit
        _zygote.get(self._preload).fork(fd, slot, epoch, handle)
        return handle

    @staticmethod
    def _fork(fd: int, slot: int, epoch: int, inherited: Initializer) -> WorkerProcess:
        _resources.caller_fd()  # the child inherits the tracker a shared_memory user needs
        child_fd = os.dup(fd)
        for stream in (sys.stdout, sys.stderr):  # else the child writes their buffers again
            try:
                stream.flush()
            except (AttributeError, ValueError, OSError):
                pass  # closed or removed, as multiprocessing's util._flush_std_streams allows
        with warnings.catch_warnings():
            # The user chose "fork" knowing it copies a threaded process (see the module doc);
            # the child only runs gilfree's worker loop.
            warnings.filterwarnings(
                "ignore", "This process .* is multi-threaded", DeprecationWarning
            )
            pid = os.fork()
        if pid == 0:
            code = 1
            from gilfree._workers.worker import exit_process, serve

            try:
                code = serve(child_fd, slot, epoch, inherited)
            finally:
                exit_process(code)
        os.close(child_fd)
        return WorkerProcess(pid, reaped_by_us=True)
