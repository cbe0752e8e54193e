"""The seed's Process example, written for the stdlib: ``python seed_process.py [N]``.

One ``multiprocessing.Process(target=fib, args=(N,))`` per core (N = 35 by default). Unchanged
on gilfree: ``python -m gilfree run seed_process.py [N]``; or change only its import to
``import gilfree.multiprocessing as multiprocessing``. ``python -m gilfree seed`` runs it all
three ways and compares. Prints the exit codes and the seconds from the first start to the last
join.
"""

import multiprocessing
import sys
import time


def fib(n):
    return n if n < 2 else fib(n - 2) + fib(n - 1)


if __name__ == "__main__":
    N = int(sys.argv[1]) if len(sys.argv) > 1 else 35
    started = time.perf_counter()
    processes = [
        multiprocessing.Process(target=fib, args=(N,)) for _ in range(multiprocessing.cpu_count())
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    print(f"exit codes {[process.exitcode for process in processes]}")
    print(f"seconds {elapsed:.3f} process {type(processes[0]).__module__}")
