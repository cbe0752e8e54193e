"""The seed workloads, run with gilfree: ``python -m gilfree seed [--n N] [--echo N]``.

1. ``list(executor.map(fib, range(N)))`` with ``gilfree.ProcessPoolExecutor(os.cpu_count())``;
2. one process per core, each running ``fib(N)``;
3. the seed's two scripts (``gilfree/bench/scripts``), written for the stdlib, run three ways:
   with the stdlib, with only their import changed to ``gilfree.multiprocessing``, and unchanged
   under ``python -m gilfree run``; their results must agree;
4. issue 3's ``submit(echo, [complex(i, i) for i in range(N)]).result()``, 15 M by default, on
   a fresh executor (its first large message). With ``--stdlib-echo`` the stdlib's
   ProcessPoolExecutor echoes the same list in the same run (most of a minute for 15 M) and the
   ratio is printed; without it, the stdlib's figure from DESIGN.md is shown as a reference.

Each parallel time is printed beside an estimate of the sequential time: the cost of one call of
the naive fib, measured on a small argument, times the number of calls the workload makes
(running the sequential loop itself would take longer than the parallel runs together).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import multiprocessing
import os
import time
from typing import Any

from gilfree.bench.data_workloads import check_echo
from gilfree.bench.scripts import SCRIPTS, run_three_ways
from gilfree.bench.tasks import echo, fib, fibonacci_fast

CALIBRATION_ARGUMENT = 25
DEFAULT_ECHO_ITEMS = 15_000_000
STDLIB_ECHO_REFERENCE = "ProcessPoolExecutor takes ~8.5 s for 3 M here (DESIGN.md)"


def process_class() -> type[Any]:
    """Return the Process class for the seed's one-process-per-core run.

    ``multiprocessing.Process`` until ``gilfree.Process`` arrives with issue #4.
    """
    gilfree = importlib.import_module("gilfree")
    return getattr(gilfree, "Process", multiprocessing.Process)


def call_count(number: int) -> int:
    """Return how many calls ``fib(number)`` makes by naive recursion."""
    return 2 * fibonacci_fast(number + 1) - 1


def seconds_per_call() -> float:
    """Measure the cost of one naive fib call in this process (best of three)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        fib(CALIBRATION_ARGUMENT)
        best = min(best, time.perf_counter() - started)
    return best / call_count(CALIBRATION_ARGUMENT)


def run_map(executor_class: type[Any], number: int, workers: int) -> float:
    """Time ``list(executor.map(fib, range(number)))`` on a started executor; check the results."""
    with executor_class(max_workers=workers) as executor:
        executor.submit(fibonacci_fast, 1).result()
        started = time.perf_counter()
        results = list(executor.map(fib, range(number)))
        elapsed = time.perf_counter() - started
    if results != [fibonacci_fast(argument) for argument in range(number)]:
        raise RuntimeError("map(fib, ...) returned wrong or out-of-order results")
    return elapsed


def run_processes(number: int, count: int) -> float:
    """Time ``count`` processes each running ``fib(number)``, from start to join."""
    started = time.perf_counter()
    processes = [process_class()(target=fib, args=(number,)) for _ in range(count)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    failed = [process.exitcode for process in processes if process.exitcode != 0]
    if failed:
        raise RuntimeError(f"fib({number}) processes exited with codes {failed}")
    return elapsed


def run_echo(executor_class: type[Any], count: int, workers: int) -> float:
    """Time ``submit(echo, data).result()`` of ``count`` complex numbers; check the result."""
    data = [complex(number, number) for number in range(count)]
    with executor_class(max_workers=workers) as executor:
        executor.submit(fibonacci_fast, 1).result()
        started = time.perf_counter()
        result = executor.submit(echo, data).result()
        elapsed = time.perf_counter() - started
    check_echo(data, result)
    return elapsed


def format_line(label: str, parallel: float, sequential: float) -> str:
    """Format one result line: parallel time, sequential estimate and speed-up."""
    return (
        f"{label:<38} parallel {parallel:6.2f} s   sequential estimate {sequential:6.2f} s   "
        f"speed-up {sequential / parallel:.2f}×"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the seed workloads with gilfree and print their timings; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m gilfree seed", description="Run issue 2's seed workloads with gilfree."
    )
    parser.add_argument("--n", type=int, default=35, help="fib argument and map range (35)")
    parser.add_argument(
        "--echo",
        type=int,
        default=DEFAULT_ECHO_ITEMS,
        metavar="N",
        help=f"complex numbers to echo ({DEFAULT_ECHO_ITEMS:_}; 0 skips the echo)",
    )
    parser.add_argument(
        "--stdlib-echo",
        action="store_true",
        help="also echo with the stdlib's ProcessPoolExecutor in this run and print the ratio",
    )
    arguments = parser.parse_args(argv)
    if arguments.echo < 0:
        parser.error("--echo must be 0 or more")
    try:
        executor_class = importlib.import_module("gilfree").ProcessPoolExecutor
    except (ImportError, AttributeError) as error:
        print(f"seed: gilfree is not importable ({error})")
        return 1
    cores = os.cpu_count() or 1
    per_call = seconds_per_call()
    number = arguments.n
    print(f"seed: naive fib, {cores} cores, {per_call * 1e9:.0f} ns per call in this process")
    try:
        map_time = run_map(executor_class, number, cores)
        process_time = run_processes(number, cores)
        script_runs = {name: run_three_ways(name, number) for name in SCRIPTS}
        echo_time = run_echo(executor_class, arguments.echo, cores) if arguments.echo else None
        stdlib_echo_time = (
            run_echo(concurrent.futures.ProcessPoolExecutor, arguments.echo, cores)
            if arguments.echo and arguments.stdlib_echo
            else None
        )
    except Exception as error:  # a failed seed run is reported, not raised
        print(f"seed: error: {type(error).__name__}: {error}")
        return 1
    map_calls = sum(call_count(argument) for argument in range(number))
    print(format_line(f"map(fib, range({number}))", map_time, map_calls * per_call))
    chosen = process_class()
    process_label = f"{cores} × {chosen.__module__.split('.')[0]}.Process(fib({number}))"
    print(format_line(process_label, process_time, cores * call_count(number) * per_call))
    for name, runs in script_runs.items():
        stdlib = runs[0]
        agree = all(run.results == stdlib.results for run in runs)
        timings = "   ".join(
            f"{run.how} {run.seconds:5.2f} s ({stdlib.seconds / run.seconds:.2f}×)" for run in runs
        )
        same = "yes" if agree else "NO"
        print(f"{name + '.py ' + str(number):<38} {timings}   same results: {same}")
        if not agree:
            print("\n".join(f"  {run.how}: {run.results}" for run in runs))
            return 1
    if echo_time is not None:
        echo_label = f"submit(echo, {arguments.echo / 1e6:g} M complex)"
        if stdlib_echo_time is None:
            reference = f"stdlib: {STDLIB_ECHO_REFERENCE}"
        else:
            reference = (
                f"ProcessPoolExecutor {stdlib_echo_time:6.2f} s   "
                f"gilfree {stdlib_echo_time / echo_time:.1f}× faster"
            )
        print(f"{echo_label:<38} gilfree  {echo_time:6.2f} s   {reference}")
    return 0
