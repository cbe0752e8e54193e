"""The seed's Pool example, written for the stdlib: ``python seed_pool.py [N]``.

Unchanged on gilfree: ``python -m gilfree run seed_pool.py [N]``; or change only its import to
``import gilfree.multiprocessing as multiprocessing``. ``python -m gilfree seed`` runs it all
three ways and compares. Prints the results (the same whichever runs it) and the seconds the
pool took.
"""

import multiprocessing
import sys
import time


def fib(n):
    return n if n < 2 else fib(n - 2) + fib(n - 1)


if __name__ == "__main__":
    N = int(sys.argv[1]) if len(sys.argv) > 1 else 35
    started = time.perf_counter()
    with multiprocessing.Pool(processes=multiprocessing.cpu_count()) as pool:
        results = pool.map(fib, range(N))
    elapsed = time.perf_counter() - started
    print(f"results {sum(results)} {results[-3:]}")
    print(f"seconds {elapsed:.3f} pool {type(pool).__module__}")
