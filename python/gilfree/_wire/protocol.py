"""Message kinds exchanged over the rings, and the payload encodings.

Every message is ``Header(kind, epoch, task_id, arg)`` + payload (see ``gilfree._core``).
Arguments and results travel in gilfree's codec (``_core.encode``: builtin values natively,
anything else as pickle inside the same payload, through the hooks `gilfree._wire.values`
registers: its pickle fallback and the pandas reducers of `gilfree._wire.reducers`). Function
bodies and initializers are plain pickles; a function is sent once per worker in a ``DEFINE``
message and named by id afterwards.
"""

from __future__ import annotations

import os
import pickle
import traceback
from collections.abc import Callable
from typing import Any

from gilfree import _core
from gilfree._core import decode, encode

# A forked child must not inherit a shared-buffer registry lock held by another thread.
os.register_at_fork(
    before=_core.before_fork,
    after_in_parent=_core.after_fork_in_parent,
    after_in_child=_core.after_fork_in_child,
)

# Parent -> worker.
SETUP = 1  #: payload: cloudpickled WorkerSetup
DEFINE = 2  #: arg: function id; task_id: an id to forget (0: none); payload: the function
CALL = 3  #: arg: function id; payload: (args, kwargs)
CHUNK = 4  #: arg: function id; payload: (items, star): call fn(x) or fn(*x) per item
EXIT = 5  #: finish and exit with code 0
RELEASE = 6  #: task_id: the parent has decoded that task's reply; drop its shared buffers

# Worker -> parent.
READY = 11  #: arg: pid; the initializer succeeded
INIT_FAILED = 12  #: payload: (exception, traceback text)
RESULT = 13  #: arg: busy ns; payload: the return value
ERROR = 14  #: arg: busy ns; payload: (exception, traceback text)
CHUNK_RESULT = 15  #: arg: busy ns; payload: (results, [(index, (exception, traceback))])
RETIRE = 16  #: the worker's memory passed max_memory_per_child: send no more work, then EXIT
DECLINED = 17  #: task_id: not run (the worker is retiring): send it to another worker
PROGRESS = 18  #: task_id: a running chunk; arg: how many of its items are done so far
#: Or-ed into a reply's kind when its payload refers to shared buffers the worker keeps until
#: the parent answers RELEASE.
SHARED_FLAG = 0x100
#: Or-ed into a CHUNK's kind when someone watches its progress: the worker reports PROGRESS
#: while the chunk runs (``gilfree._workers.progress``).
WATCH_FLAG = 0x200

#: The function id of a function sent with the one call that uses it, then forgotten.
ONE_OFF = 0

KIND_NAMES = {
    SETUP: "SETUP",
    DEFINE: "DEFINE",
    CALL: "CALL",
    CHUNK: "CHUNK",
    EXIT: "EXIT",
    RELEASE: "RELEASE",
    READY: "READY",
    INIT_FAILED: "INIT_FAILED",
    RESULT: "RESULT",
    ERROR: "ERROR",
    CHUNK_RESULT: "CHUNK_RESULT",
    RETIRE: "RETIRE",
    DECLINED: "DECLINED",
    PROGRESS: "PROGRESS",
}


def kind_name(kind: int) -> str:
    """``RESULT``, ``CHUNK_RESULT+SHARED``, ``CHUNK+WATCH``: a message kind for people (debug
    traces)."""
    plain = kind & ~(SHARED_FLAG | WATCH_FLAG)
    name = KIND_NAMES.get(plain, str(plain))
    if kind & SHARED_FLAG:
        name += "+SHARED"
    return name + "+WATCH" if kind & WATCH_FLAG else name


PROTOCOL = pickle.HIGHEST_PROTOCOL


#: Encodes an argument or result payload: ``dumps(value, shared)`` puts large buffers, and the
#: whole payload when it is large, in shared memory and appends those buffers to the list
#: ``shared`` (to keep until the receiver decoded); ``dumps(value)`` keeps everything inline.
dumps: Callable[..., bytes] = encode
#: Decodes what ``dumps`` made.
loads: Callable[[bytes], Any] = decode
#: Decodes a function body or an initializer.
unpickle = pickle.loads


def dump_exception(error: BaseException) -> bytes:
    """Encodes an exception with its formatted traceback; never fails.

    An exception that cannot be pickled, or whose pickle cannot be loaded, is replaced by an
    ``UnpicklableExceptionError`` (see ``serialization.sendable_exception``), so the caller
    still gets its type, text and the traceback rather than a broken pool. The check decodes
    the message here, as the caller will: an exception is rare enough for that to cost
    nothing that matters.
    """
    from gilfree._wire.serialization import sendable_exception

    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    encoded: list[bytes] = []

    def encode(checked: BaseException) -> bytes:
        encoded.append(dumps((checked, text)))
        return encoded[-1]

    sendable = sendable_exception(error, encode, loads)
    return encoded[0] if sendable is error else dumps((sendable, text))
