"""``python -m gilfree bench|seed|run``: the benchmark table, the seed workloads, and running an
unchanged script on gilfree (see ``gilfree._run``)."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    """Dispatches the sub-command."""
    if not argv or argv[0] not in ("bench", "seed", "run"):
        print("usage: python -m gilfree {bench,seed,run} [options]  (--help after a command)")
        return 2
    if argv[0] == "run":
        from gilfree._run import main as run

        return run(argv[1:])
    if argv[0] == "bench":
        from gilfree.bench import main as bench
    else:
        from gilfree.bench.seed import main as bench
    return bench(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
