"""The measuring side of ``python -m gilfree bench``, in a fresh interpreter on a main script.

The runner starts ``python <main script> REQUEST.json``; the script, under its ``__main__``
guard, calls `main`. The request names one contender (or a workload's baseline row), the
workloads to measure in order, the run's settings and a results file. For each workload this
writes one JSON line ``{"workload", "value", "error", "detail"}`` to that file as soon as it is
measured, so a later hang or crash loses nothing measured before it (``detail``: the note of a
`Timed` value, such as the chunksize a sweep kept, else null).

A pool workload: create the pool outside the timed region, warm it up (a short map of `noop`,
then the workload's own ``warm_up``), time a few repetitions (one for a ``fresh`` workload) and
keep the best. A workload with an ``environment`` refuses to run in an interpreter started
without it. Anything raised, or a hang past the timeout, becomes that workload's error.
"""

from __future__ import annotations

import contextlib
import json
import os
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
from gilfree.bench.workloads import Settings, Timed, Workload

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


def best_of(measure: Callable[[], float | Timed], repetitions: int) -> Timed:
    """Run ``measure`` up to ``repetitions`` times (stopping early past the budget); the best
    result, with its note (empty for a plain value)."""
    values: list[Timed] = []
    started = time.perf_counter()
    while len(values) < repetitions:
        value = measure()
        values.append(value if isinstance(value, Timed) else Timed(value, ""))
        if time.perf_counter() - started > CELL_BUDGET_SECONDS:
            break
    return min(values, key=lambda timed: timed.value)


def planned_repetitions(workload: Workload, settings: Settings) -> int:
    """The run's repetitions, or the workload's ``quick_repetitions`` under ``--quick``."""
    if settings.quick and workload.quick_repetitions is not None:
        return workload.quick_repetitions
    return settings.repetitions


def repetitions_in_interpreter(workload: Workload, contender_key: str, settings: Settings) -> int:
    """How many times ``workload`` repeats in one interpreter: once if ``fresh``, else the run's
    repetitions, capped by the workload's ``repetitions`` (and ``peer_repetitions`` for peers)."""
    if workload.fresh:
        return 1
    return repetitions_allowed(workload, contender_key, planned_repetitions(workload, settings))


def repetitions_allowed(workload: Workload, contender_key: str, repetitions: int) -> int:
    """``repetitions`` capped by ``workload.repetitions`` (all) and ``peer_repetitions`` (peers)."""
    if workload.repetitions is not None:
        repetitions = min(repetitions, workload.repetitions)
    if contender_key != "gilfree" and workload.peer_repetitions is not None:
        repetitions = min(repetitions, workload.peer_repetitions)
    return repetitions


def measure_contender(workload: Workload, contender: Contender, settings: Settings) -> Timed:
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
                if workload.warm_up is not None:
                    workload.warm_up(contender, pool, settings)
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


def measure_baseline(workload: Workload, settings: Settings) -> Timed:
    """Time ``workload``'s baseline row (the sequential loop, pickle) in this interpreter."""
    assert workload.baseline is not None
    measure = workload.baseline.measure
    with deadline(settings.timeout_seconds):
        return best_of(lambda: measure(settings), planned_repetitions(workload, settings))


def check_environment(workload: Workload) -> None:
    """Raise RuntimeError unless this interpreter was started with ``workload.environment``."""
    wrong = [
        f"{name}={value}" for name, value in workload.environment if os.environ.get(name) != value
    ]
    if wrong:
        raise RuntimeError(f"interpreter not started with {' '.join(wrong)}")


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
            measured: Timed | None = None
            error: str | None = None
            try:
                workload = find_workload(key)
                check_environment(workload)
                if baseline:
                    measured = measure_baseline(workload, settings)
                else:
                    if contender is None:
                        contender = contender_registry.find_entry(request["contender"]).load()
                    measured = measure_contender(workload, contender, settings)
            except Exception as failure:  # every failure is reported, none stops the bench
                error = describe_error(failure)
            result = {
                "workload": key,
                "value": None if measured is None else measured.value,
                "error": error,
                "detail": measured.detail if measured is not None and measured.detail else None,
            }
            results.write(json.dumps(result) + "\n")
            results.flush()
    return 0
