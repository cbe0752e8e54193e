"""Message kinds exchanged over the rings, and the payload encodings.

Every message is ``Header(kind, epoch, task_id, arg)`` + payload (see ``gilfree._core``).
Arguments and results travel in gilfree's codec (``_core.encode``: builtin values natively,
anything else as pickle inside the same payload). Function bodies and initializers are plain
pickles; a function is sent once per worker in a ``DEFINE`` message and named by id afterwards.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any, Callable

from gilfree._core import decode, encode

# Parent -> worker.
SETUP = 1  #: payload: cloudpickled WorkerSetup
DEFINE = 2  #: arg: function id; task_id: an id to forget (0: none); payload: the function
CALL = 3  #: arg: function id; payload: (args, kwargs)
CHUNK = 4  #: arg: function id; payload: (items, star): call fn(x) or fn(*x) per item
EXIT = 5  #: finish and exit with code 0

# Worker -> parent.
READY = 11  #: arg: pid; the initializer succeeded
INIT_FAILED = 12  #: payload: (exception, traceback text)
RESULT = 13  #: arg: busy ns; payload: the return value
ERROR = 14  #: arg: busy ns; payload: (exception, traceback text)
CHUNK_RESULT = 15  #: arg: busy ns; payload: (results, (exception, traceback) or None)

#: The function id of a function sent with the one call that uses it, then forgotten.
ONE_OFF = 0

PROTOCOL = pickle.HIGHEST_PROTOCOL


def pickle_value(value: Any) -> bytes:
    """How the codec pickles what it does not encode natively: pickle, or cloudpickle (by
    value) for what pickle refuses, so lambdas and closures can be arguments and results too.
    Raises pickle's own error when both fail."""
    try:
        return pickle.dumps(value, PROTOCOL)
    except Exception as error:
        import cloudpickle

        try:
            return cloudpickle.dumps(value, PROTOCOL)
        except Exception:  # noqa: BLE001 - pickle's message is the one to show
            raise error from None


#: Encodes an argument or result payload.
dumps: Callable[[Any], bytes] = encode
#: Decodes what ``dumps`` made.
loads: Callable[[bytes], Any] = decode
#: Decodes a function body or an initializer.
unpickle = pickle.loads


def dump_exception(error: BaseException) -> bytes:
    """Encodes an exception with its formatted traceback; never fails.

    An exception that cannot be pickled is replaced by a RuntimeError that carries its type name
    and message, so the caller still gets the traceback text.
    """
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        return dumps((error, text))
    except Exception as pickling_error:  # noqa: BLE001 - any pickling failure is reported
        substitute = RuntimeError(
            f"{type(error).__qualname__}: {error} "
            f"(the original exception could not be pickled: {pickling_error})"
        )
        return dumps((substitute, text))
