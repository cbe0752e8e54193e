"""The functions the benchmarks send to workers. This module imports nothing on purpose: workers
that start from a fresh interpreter or the zygote import it, and its cost would be timed."""


def noop(_: object = None) -> None:
    """Do nothing: the task used to measure pure overhead."""


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


def shape_of(array: object) -> object:
    """Return the shape of the array received: the task that passes a shared array around."""
    return getattr(array, "shape", None)


def process_id(_: object = None) -> int:
    """Return the worker's pid: the task that tells which worker ran it."""
    import os

    return os.getpid()
