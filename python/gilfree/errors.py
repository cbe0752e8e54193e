"""gilfree's exceptions. Each subclasses the standard exception that code written for the stdlib
already catches, so switching executors changes no ``except`` clause."""

from __future__ import annotations

import pickle
from concurrent.futures.process import BrokenProcessPool

__all__ = [
    "BrokenProcessPool",
    "SerializationError",
    "TaskTimeoutError",
    "UnpicklableExceptionError",
    "WorkerCrashedError",
]


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


class SerializationError(pickle.PicklingError, TypeError):
    """A value cannot be sent to another process.

    The message starts with where the value sits in what was being sent, for example
    ``args[1]['fh']: cannot send an open file object to another process``. ``path`` holds that
    location, ``value_repr`` the repr of the value sent (cut short), and ``__cause__`` the error
    pickle raised. Raised before any worker sees the task.
    It is a ``pickle.PicklingError`` and a ``TypeError``: pickle raises one or the other for
    what it refuses (a lock, a file, a generator: ``TypeError``), and code written for the
    stdlib's executor catches the one it met.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path
        #: The repr of the value that held the part (cut short), where it is known.
        self.value_repr: str | None = None


class UnpicklableExceptionError(RuntimeError):
    """A task raised an exception that could not be pickled to reach the caller, or whose
    pickle could not be loaded (its class's ``__init__`` does not take the arguments it gives
    ``Exception.__init__``).

    It stands in for that exception: the message gives the exception's type, its text and why
    it could not be sent (``BadError: disk full (the original exception could not be
    sent: cannot pickle '_thread.lock' object)``), and ``__cause__`` holds the remote
    traceback, as for any task's exception. ``type_name``, ``text`` and ``reason`` hold those
    three parts. ``gilfree.Pool`` raises multiprocessing's ``MaybeEncodingError`` instead, as
    the stdlib's pool does for an exception it cannot send back.
    """

    def __init__(self, type_name: str, text: str, reason: str) -> None:
        super().__init__(
            f"{type_name}: {text} (the original exception could not be sent: {reason})"
        )
        self.type_name = type_name
        self.text = text
        self.reason = reason

    def __reduce__(self) -> tuple[type[UnpicklableExceptionError], tuple[str, str, str]]:
        return type(self), (self.type_name, self.text, self.reason)
