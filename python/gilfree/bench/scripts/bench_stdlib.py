"""A main script of ``python -m gilfree bench`` that imports only the stdlib's executor.

The script of a user who uses ``concurrent.futures`` and nothing heavy: no numpy, no pandas.
The "startup, stdlib-only main" row runs in a fresh interpreter started on it, so workers that
load the main script (gilfree's template process, spawn, forkserver) have little to load. The
measuring code is imported only under the ``__main__`` guard.

Run by the bench: ``python bench_stdlib.py REQUEST.json`` (see ``gilfree.bench.child``).
"""

import os
from concurrent.futures import ProcessPoolExecutor  # noqa: F401 - what such a script imports


def noop(_=None):
    """Do nothing: the task used to measure pure overhead."""


def process_id(_=None):
    """The worker's pid: the task that tells which worker ran it."""
    return os.getpid()


if __name__ == "__main__":
    from gilfree.bench.child import main

    raise SystemExit(main())
