"""The main script of ``python -m gilfree bench``: it imports numpy and pandas, as users' do.

Every measurement of the suite runs in a fresh interpreter started on this script (or on
``bench_stdlib.py``), and the functions the workers run are defined here, at the top level. So a
worker that does not inherit the parent's memory (gilfree's template process, the stdlib's spawn
and forkserver, loky) must load numpy and pandas to run them, as it must for a user's script:
that cost is part of what is measured. The measuring code is imported only under the
``__main__`` guard, so workers never load it.

Run by the bench: ``python bench_numpy_pandas.py REQUEST.json`` (see ``gilfree.bench.child``).
"""

import os
import time

import numpy as np
import pandas as pd


def noop(_=None):
    """Do nothing: the task used to measure pure overhead."""


def fib(n):
    """The Fibonacci number of ``n`` by naive recursion (CPU-bound on purpose)."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def echo(value):
    """Return ``value`` unchanged: the task used to measure the cost of moving data."""
    return value


def shape_of(array):
    """The shape of the array received: the task that passes a shared array around."""
    return getattr(array, "shape", None)


def process_id(_=None):
    """The worker's pid: the task that tells which worker ran it."""
    return os.getpid()


def numpy_pandas(i):
    """A small task that uses both numpy and pandas; returns ``4950.0 * i``."""
    return float(pd.Series(np.arange(100.0) * i).sum())


def gram_sum(array):
    """``float((a @ a.T).sum())``: a small matrix product reduced to one float (issue 10)."""
    return float((array @ array.T).sum())


def gram(array):
    """``a @ a.T``: the same product, returned whole (issue 10)."""
    return array @ array.T


def group_means(frame):
    """``frame.groupby("key").mean()``: a DataFrame's per-key means (issue 10)."""
    return frame.groupby("key").mean()


def check_in(request):
    """Run `numpy_pandas`, then record this worker's pid in ``folder`` and wait (at most
    ``seconds``) until ``count`` workers have: a barrier that makes every worker run a task.

    ``request`` is ``(folder, count, seconds)``; returns the pid.
    """
    folder, count, seconds = request
    numpy_pandas(1)
    pid = os.getpid()
    with open(os.path.join(folder, str(pid)), "w"):
        pass
    deadline = time.monotonic() + seconds
    while len(os.listdir(folder)) < count and time.monotonic() < deadline:
        time.sleep(0.002)
    return pid


if __name__ == "__main__":
    from gilfree.bench.child import main

    raise SystemExit(main())
