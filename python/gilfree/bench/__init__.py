"""gilfree's benchmark suite: ``python -m gilfree bench [--quick] [--plot FILE]``.

It times each workload against gilfree, the stdlib's ``ProcessPoolExecutor`` and
``multiprocessing.Pool`` (and loky, mpire when installed) in one process, and prints a table of
times and ratios with the targets of issue 2. ``python -m gilfree seed`` runs the seed workloads
(see `gilfree.bench.seed`).
"""

from __future__ import annotations

from gilfree.bench.runner import main

__all__ = ["main"]
