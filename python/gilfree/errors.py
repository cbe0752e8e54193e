"""gilfree's exceptions. Each subclasses the standard exception that code written for the stdlib
already catches, so switching executors changes no ``except`` clause."""

from __future__ import annotations

import pickle
from concurrent.futures.process import BrokenProcessPool

__all__ = ["BrokenProcessPool", "SerializationError", "TaskTimeoutError", "WorkerCrashedError"]


class WorkerCrashedError(BrokenProcessPool):
    """The worker running a task died before the task finished.

    The message names the worker's pid, how it ended (``signal SIGKILL`` or ``exit code 3``) and
    the task's function. The executor replaces the worker and stays usable.
    """


class TaskTimeoutError(TimeoutError):
    """A task ran longer than its timeout (``task_timeout``, or ``submit_with(timeout=...)``).

    Its worker was killed and is replaced; the message names the function, the timeout and the
    worker's pid. Other tasks are not affected.
    """


class SerializationError(pickle.PicklingError):
    """A value cannot be sent to another process.

    The message starts with where the value sits in what was being sent, for example
    ``args[1]['fh']: cannot send an open file object to another process``. ``path`` holds that
    location and ``__cause__`` the error pickle raised. Raised before any worker sees the task.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path
