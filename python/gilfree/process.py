"""``gilfree.Process``: ``multiprocessing.Process``, started from the zygote.

It is a ``multiprocessing.Process`` (same constructor, attributes and methods: ``start``,
``join(timeout)``, ``is_alive``, ``exitcode``, ``pid``, ``terminate``, ``kill``, ``close``,
``daemon``, ``name``, ``sentinel``; subclasses may override ``run``) whose child is forked from
gilfree's zygote instead of from the calling process or a fresh interpreter:

* it starts in about a millisecond, and is safe to start from a threaded parent;
* the process object is pickled by value where needed, so ``target`` may be a lambda or a
  closure; its arguments may carry multiprocessing objects made for spawning (connections,
  and queues, locks, values from ``get_context("spawn")`` or ``"forkserver"``);
* like a spawned child, it does not inherit the parent's memory: it re-imports the main module.

When the process object cannot be sent that way (an argument made by the default ``fork``
context, such as a plain ``multiprocessing.Queue()`` on Linux, or no zygote on this platform),
``start`` falls back to what ``multiprocessing.Process`` does here, so code that works with the
stdlib keeps working. An exception in ``run`` prints its traceback and exits with code 1.
Children of the zygote die with it, so they end if the parent is killed (the stdlib's live on).
"""

from __future__ import annotations

import os
import threading
from multiprocessing import context, util
from typing import Any

from gilfree._wire.pickling import dump_for_worker
from gilfree._workers import launch as _launch
from gilfree._workers import process_child as _process_child
from gilfree._workers import zygote as _zygote

__all__ = ["Process"]

_started_any = False
#: The stdlib's own default context, where ``python -m gilfree run`` made forkserver the
#: default (for the locks a script sends to workers): a process object only ``fork`` can
#: carry still starts as ``multiprocessing.Process`` starts it unless the script chose a
#: start method (``gilfree._run.install`` sets it).
stdlib_default: Any = None


class ZygotePopen:
    """multiprocessing's ``Popen`` interface for a child forked by the zygote."""

    method = "zygote"
    DupFd = _process_child.InheritedFd

    def __init__(self, process_obj: Any, payload: int, fds: list[int]) -> None:
        """Starts the child of ``process_obj``, which reads ``payload`` (a memory file, see
        ``process_child``; closed here) and inherits ``fds``."""
        self.returncode: int | None = None
        self._handle = _launch.WorkerProcess()
        sentinel_read, sentinel_write = os.pipe()
        parent_read, parent_write = os.pipe()
        try:
            _zygote.get(()).start_process(
                [payload, sentinel_write, parent_read, *fds], self._handle
            )
        finally:
            for fd in (payload, sentinel_write, parent_read):
                os.close(fd)
        self.sentinel = sentinel_read
        close_fds = util.close_fds  # type: ignore[attr-defined]  # not in typeshed
        self.finalizer = util.Finalize(self, close_fds, (sentinel_read, parent_write))
        self.pid = self._handle.wait_for_pid()

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        """The exit code if the child has ended (waits for it when ``flag`` is 0)."""
        if self.returncode is None:
            if flag == 0:
                self._handle.join()
            self.returncode = self._handle.exit_code
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Waits up to ``timeout`` seconds for the child to end; its exit code or None."""
        if self.returncode is None:
            self._handle.join(timeout)
        return self.poll()

    def terminate(self) -> None:
        """Sends SIGTERM."""
        if self.poll() is None:
            self._handle.terminate()

    def kill(self) -> None:
        """Sends SIGKILL."""
        if self.poll() is None:
            self._handle.kill()

    def close(self) -> None:
        """Closes the sentinel (once the child has ended)."""
        self.finalizer()


class _Carrier:
    """The spawning popen while the process object is pickled: collects the descriptors its
    arguments carry, which then travel with the request."""

    DupFd = _process_child.InheritedFd

    def __init__(self) -> None:
        self.fds: list[int] = []

    def duplicate_for_child(self, fd: int) -> int:
        self.fds.append(fd)
        return len(self.fds) - 1


def _memory_file() -> int:
    """A descriptor of a new unnamed file."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("gilfree-process", os.MFD_CLOEXEC)
    import tempfile

    with tempfile.TemporaryFile() as file:
        return os.dup(file.fileno())


def _payload(setup: Any, process_obj: Any, carrier: _Carrier) -> int | None:
    """A memory file holding ``setup`` then ``process_obj``, pickled one after the other into
    it (a large argument is never a second copy in memory); None if the process object cannot
    be pickled for the zygote."""
    import pickle

    fd = _memory_file()
    try:
        with os.fdopen(os.dup(fd), "wb") as file:
            pickle.dump(setup, file, pickle.HIGHEST_PROTOCOL)
            dump_for_worker(process_obj, file, carrier)
    except Exception:  # noqa: BLE001 - not sendable to the zygote: multiprocessing's way
        os.close(fd)
        return None
    return fd


def _popen(process_obj: Any) -> Any:
    """Starts ``process_obj``'s child: from the zygote if its object can be sent there, else
    as multiprocessing would by default."""
    global _started_any
    if hasattr(os, "fork") and _launch.script_start_method in (None, "zygote"):
        from gilfree.executor import parent_setup

        carrier = _Carrier()
        setup = parent_setup("zygote")
        setup.authkey = bytes(process_obj.authkey)
        payload = _payload(setup, process_obj, carrier)
        if payload is not None:
            _started_any = True
            return ZygotePopen(process_obj, payload, carrier.fds)
    default = context._default_context  # noqa: SLF001 - multiprocessing's default context
    # Chosen by the script, not the default: the default is what any get_context() sets.
    actual = default._actual_context  # type: ignore[attr-defined]  # noqa: SLF001
    chosen = actual is not None and actual is not default._default_context  # type: ignore[attr-defined]  # noqa: SLF001
    fallback = default.get_context() if chosen or stdlib_default is None else stdlib_default
    return fallback.Process._Popen(process_obj)  # noqa: SLF001


class Process(context.Process):
    """``multiprocessing.Process`` started from gilfree's zygote (see the module docstring)."""

    _start_method = None

    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # noqa: N802 - multiprocessing's name
        return _popen(process_obj)


def _before_zygotes_close() -> None:
    """At exit, before the zygote (and its children with it) goes: multiprocessing's own exit
    steps: daemonic children are terminated, the others joined."""
    if _started_any and threading.current_thread() is threading.main_thread():
        util._exit_function()  # type: ignore[attr-defined]  # noqa: SLF001 - run at exit


_zygote.before_close.append(_before_zygotes_close)
