"""gilfree's benchmark suite: ``python -m gilfree bench [--quick] [--plot FILE]``.

It times each workload against gilfree, the stdlib's ``ProcessPoolExecutor`` (with each start
method for the start-up rows) and ``multiprocessing.Pool`` (and loky, mpire when installed), each
contender in a fresh interpreter started on a main script that imports numpy and pandas (see
`gilfree.bench.runner`), and prints a table of values and ratios with the targets of issues 2, 3,
9 and 10 (the numpy and pandas rows, also against a plain loop). ``python -m gilfree seed`` runs
the seed workloads (see `gilfree.bench.seed`). Importing this package imports nothing else, so
workers that import `gilfree.bench.tasks` (the seed's) stay cheap to start.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark suite (see ``gilfree.bench.runner``)."""
    from gilfree.bench.runner import main as run

    return run(argv)
