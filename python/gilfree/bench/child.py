"""The measuring side of ``python -m gilfree bench``, in a fresh interpreter on a main script.

The runner starts ``python <main script> REQUEST.json``; the script, under its ``__main__``
guard, calls `main`. The request names one contender (or a workload's baseline row), the
workloads to measure in order, the run's settings and a results file. For each workload this
writes one JSON line ``{"workload", "value", "error"}`` to that file as soon as it is measured,
so a later hang or crash loses nothing measured before it.

A pool workload: create the pool outside the timed region, warm it up, time a few repetitions
(one for a ``fresh`` workload) and keep the best. Anything raised, or a hang past the timeout,
becomes that workload's error.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from gilfree.bench import contenders as contender_registry
from gilfree.bench.contenders import Contender
from gilfree.bench.main_scripts import tasks
from gilfree.bench.suite import find_workload
from gilfree.bench.workloads import Settings, Workload

# Stop repeating a measurement once its repetitions have taken this long in total.
CELL_BUDGET_SECONDS = 15.0
# How long a pool that failed may take to be torn down before we give up on it.
CLEANUP_TIMEOUT_SECONDS = 10.0


class BenchTimeout(Exception):
    """A measurement ran past its deadline."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise `BenchTimeout` in the main thread if the block runs longer than ``seconds``.

    Does nothing where interval timers are not available or off the main thread.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def expire(_signal: int, _frame: Any) -> None:
        raise BenchTimeout(f"no result after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def describe_error(error: BaseException) -> str:
    """Return a one-line description of ``error`` for the table."""
    message = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {message}"[:200]


def best_of(measure: Callable[[], float], repetitions: int) -> float:
    """Run ``measure`` up to ``repetitions`` times (stopping early past the budget); best result."""
    values: list[float] = []
    started = time.perf_counter()
    while len(values) < repetitions:
        values.append(measure())
        if time.perf_counter() - started > CELL_BUDGET_SECONDS:
            break
    return min(values)


def repetitions_in_interpreter(workload: Workload, contender_key: str, settings: Settings) -> int:
    """How many times ``workload`` repeats in one interpreter: once if ``fresh``, else the run's
    repetitions, capped by the workload's ``repetitions`` (and ``peer_repetitions`` for peers)."""
    if workload.fresh:
        return 1
    return repetitions_allowed(workload, contender_key, settings.repetitions)


def repetitions_allowed(workload: Workload, contender_key: str, repetitions: int) -> int:
    """``repetitions`` capped by ``workload.repetitions`` (all) and ``peer_repetitions`` (peers)."""
    if workload.repetitions is not None:
        repetitions = min(repetitions, workload.repetitions)
    if contender_key != "gilfree" and workload.peer_repetitions is not None:
        repetitions = min(repetitions, workload.peer_repetitions)
    return repetitions


def measure_contender(workload: Workload, contender: Contender, settings: Settings) -> float:
    """Measure ``workload`` on ``contender``: the best of its repetitions in this interpreter."""
    repetitions = repetitions_in_interpreter(workload, contender.key, settings)
    pool: Any = None
    try:
        with deadline(settings.timeout_seconds):
            if workload.uses_pool:
                noop = tasks().noop
                pool = contender.create(settings.workers)
                contender.map(pool, noop, range(settings.workers * 4))
                contender.call(pool, noop, None)
            value = best_of(lambda: workload.measure(contender, pool, settings), repetitions)
            if pool is not None:
                contender.close(pool, graceful=True)
                pool = None
    except BaseException:
        if pool is not None:
            with contextlib.suppress(Exception), deadline(CLEANUP_TIMEOUT_SECONDS):
                contender.close(pool, graceful=False)
        raise
    return value


def measure_baseline(workload: Workload, settings: Settings) -> float:
    """Time ``workload``'s baseline row (the sequential loop, pickle) in this interpreter."""
    assert workload.baseline is not None
    measure = workload.baseline.measure
    with deadline(settings.timeout_seconds):
        return best_of(lambda: measure(settings), settings.repetitions)


def main(argv: list[str] | None = None) -> int:
    """Measure what the request file ``argv[0]`` asks; write each result as it comes."""
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1:
        print("usage: python <bench main script> REQUEST.json", file=sys.stderr)
        return 2
    with open(arguments[0]) as file:
        request = json.load(file)
    settings = Settings(**request["settings"])
    baseline = request["baseline"]
    contender: Contender | None = None
    with open(request["results"], "a") as results:
        for key in request["workloads"]:
            value: float | None = None
            error: str | None = None
            try:
                workload = find_workload(key)
                if baseline:
                    value = measure_baseline(workload, settings)
                else:
                    if contender is None:
                        contender = contender_registry.find_entry(request["contender"]).load()
                    value = measure_contender(workload, contender, settings)
            except Exception as failure:  # every failure is reported, none stops the bench
                error = describe_error(failure)
            results.write(json.dumps({"workload": key, "value": value, "error": error}) + "\n")
            results.flush()
    return 0
