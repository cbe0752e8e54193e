"""``python -m gilfree run script.py [args...]``: runs an unchanged script on gilfree.

Before the script runs, the names a script reaches the stdlib's process pools through are
rebound to gilfree's classes:

* ``multiprocessing.Pool`` and ``multiprocessing.pool.Pool`` -> ``gilfree.Pool`` (contexts'
  ``get_context(...).Pool()`` go through ``multiprocessing.pool.Pool``, so they are covered and
  keep their start method);
* ``multiprocessing.Process`` -> ``gilfree.Process``;
* ``concurrent.futures.ProcessPoolExecutor`` and ``concurrent.futures.process.
  ProcessPoolExecutor`` -> ``gilfree.ProcessPoolExecutor``.

Then the script runs as ``__main__`` (``runpy.run_path``) with ``sys.argv`` and ``sys.path[0]``
as ``python script.py args...`` would set them.

Where this stops working: names bound before the rebinding (none, for a plain script; but a
module that did ``from multiprocessing import Pool`` at import time and was imported by
``sitecustomize`` keeps the stdlib's), subclasses of the stdlib's classes (they stay the
stdlib's), contexts' ``Process`` classes (``get_context().Process``, ``Manager`` servers), and
code that reads the stdlib pools' private attributes. Workers start from gilfree's zygote, so
they do not inherit the parent's memory: functions defined in the script travel by value with
the globals they refer to, but state kept elsewhere (another module's globals set by the
script) is not seen; a pool made from ``get_context("fork")`` still forks.
"""

from __future__ import annotations

import os
import runpy
import sys


def install() -> None:
    """Rebinds the stdlib's pool and process names to gilfree's (see the module docstring)."""
    import concurrent.futures
    import concurrent.futures.process
    import multiprocessing
    import multiprocessing.pool

    import gilfree

    multiprocessing.Pool = gilfree.Pool  # type: ignore[assignment]
    multiprocessing.pool.Pool = gilfree.Pool  # type: ignore[misc]
    multiprocessing.Process = gilfree.Process  # type: ignore[misc]
    concurrent.futures.ProcessPoolExecutor = gilfree.ProcessPoolExecutor  # type: ignore[misc]
    concurrent.futures.process.ProcessPoolExecutor = gilfree.ProcessPoolExecutor  # type: ignore[misc]


def main(argv: list[str]) -> int:
    """Runs ``argv[0]`` with ``argv[1:]`` as its arguments; returns the exit status."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m gilfree run script.py [args...]")
        print("Runs script.py with multiprocessing.Pool, multiprocessing.Process and")
        print("concurrent.futures.ProcessPoolExecutor replaced by gilfree's.")
        return 0 if argv else 2
    script = argv[0]
    if not os.path.isfile(script):
        print(f"python -m gilfree run: cannot open {script!r}: no such file", file=sys.stderr)
        return 2
    install()
    sys.argv[:] = argv
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exit_request:
        code = exit_request.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    return 0
