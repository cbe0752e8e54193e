"""gilfree's benchmark suite: ``python -m gilfree bench [--quick] [--plot FILE]``.

It times each workload against gilfree, the stdlib's ``ProcessPoolExecutor`` and
``multiprocessing.Pool`` (and loky, mpire when installed) in one process, and prints a table of
times and ratios with the targets of issue 2. ``python -m gilfree seed`` runs the seed workloads
(see `gilfree.bench.seed`). Importing this package imports nothing else, so workers that import
`gilfree.bench.tasks` stay cheap to start.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark suite (see ``gilfree.bench.runner``)."""
    from gilfree.bench.runner import main as run

    return run(argv)
