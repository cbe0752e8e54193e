"""Debug tracing: the ``gilfree`` logger, switched on by ``GILFREE_DEBUG=1``.

With it on, the parent logs at DEBUG level each unit of work sent and each reply, each worker
started, ended or replaced (with its exit status), each kill of a task past its timeout, and
what happened to the work a dead worker had (sent again, or failed with which error). Lines go
to stderr, prefixed with the process id, unless the application configured the ``gilfree``
logger itself.

Off (the default), the only cost on the hot path is one test of `ENABLED` per event: no message
is formatted and no logging call is made.
"""

from __future__ import annotations

import logging
import os
import sys

#: Whether tracing is on; read once, at import.
ENABLED = os.environ.get("GILFREE_DEBUG", "") not in ("", "0")
log = logging.getLogger("gilfree")

if ENABLED:
    log.setLevel(logging.DEBUG)
    if not log.handlers:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(logging.Formatter("gilfree[%(process)d] %(message)s"))
        log.addHandler(_handler)
