"""The functions ``python -m gilfree seed`` sends to workers, and a result check.

This module imports nothing on purpose: the seed runs from ``python -m gilfree``, not from a
script, so its workers import this module by name. The benchmark's tasks (``python -m gilfree
bench``) are not here: they are defined in its main scripts (``gilfree/bench/scripts/bench_*.py``)
so that workers load what a user's main script loads (see `gilfree.bench.main_scripts`).
"""


def fib(number: int) -> int:
    """Return the Fibonacci number of ``number`` by naive recursion (CPU-bound on purpose)."""
    if number < 2:
        return number
    return fib(number - 1) + fib(number - 2)


def fibonacci_fast(number: int) -> int:
    """Return the Fibonacci number of ``number`` iteratively, to check results cheaply."""
    previous, current = 0, 1
    for _ in range(number):
        previous, current = current, previous + current
    return previous


def echo(value: object) -> object:
    """Return ``value`` unchanged: the task used to measure the cost of moving data."""
    return value
