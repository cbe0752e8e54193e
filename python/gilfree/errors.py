"""gilfree's exceptions. Each subclasses the standard exception that code written for the stdlib
already catches, so switching executors changes no ``except`` clause."""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool

__all__ = ["BrokenProcessPool", "WorkerCrashedError"]


class WorkerCrashedError(BrokenProcessPool):
    """The worker running a task died before the task finished.

    The message names the worker's pid, how it ended (``signal SIGKILL`` or ``exit code 3``) and
    the task's function. The executor replaces the worker and stays usable.
    """
