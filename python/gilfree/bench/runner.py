"""Command line and measurement loop of ``python -m gilfree bench``.

For each workload: time the sequential loop in this process (if the workload has one), then for
each contender create a pool outside the timed region, warm it up, time a few repetitions and keep
the best. Anything a contender raises, or a hang past ``--timeout``, becomes an error row.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from gilfree.bench import contenders as contender_registry
from gilfree.bench import report
from gilfree.bench.contenders import Contender
from gilfree.bench.tasks import noop
from gilfree.bench.workloads import WORKLOADS, Settings, Workload

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
    timings: list[float] = []
    started = time.perf_counter()
    while len(timings) < repetitions:
        timings.append(measure())
        if time.perf_counter() - started > CELL_BUDGET_SECONDS:
            break
    return min(timings)


def measure_contender(workload: Workload, contender: Contender, settings: Settings) -> report.Row:
    """Measure one workload against one contender; failures become an error row."""
    pool: Any = None
    try:
        with deadline(settings.timeout_seconds):
            if workload.uses_pool:
                pool = contender.create(settings.workers)
                contender.map(pool, noop, range(settings.workers * 4))
                contender.call(pool, noop, None)
            seconds = best_of(
                lambda: workload.measure(contender, pool, settings), settings.repetitions
            )
            if pool is not None:
                contender.close(pool, graceful=True)
                pool = None
    except Exception as error:  # every failure is reported, none stops the bench
        if pool is not None:
            with contextlib.suppress(Exception), deadline(CLEANUP_TIMEOUT_SECONDS):
                contender.close(pool, graceful=False)
        return report.Row(workload, contender.key, contender.name, None, describe_error(error))
    return report.Row(workload, contender.key, contender.name, seconds, None)


def measure_sequential(
    workload: Workload, run_loop: Callable[[Settings], None], settings: Settings
) -> report.Row:
    """Time the workload's sequential loop ``run_loop`` in this process."""

    def measure() -> float:
        started = time.perf_counter()
        run_loop(settings)
        return time.perf_counter() - started

    seconds = best_of(measure, settings.repetitions)
    return report.Row(workload, "sequential", "sequential (parent)", seconds, None)


def split_names(text: str | None) -> list[str]:
    """Split a comma-separated option into its non-empty names."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line of ``python -m gilfree bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m gilfree bench",
        description="Compare gilfree with the stdlib pools (and loky, mpire when installed).",
    )
    parser.add_argument("--quick", action="store_true", help="one repetition, fewer round trips")
    parser.add_argument("--plot", metavar="FILE", help="write a PNG bar chart (needs matplotlib)")
    parser.add_argument("--workers", type=int, default=2, help="workers per pool (default 2)")
    workload_keys = ",".join(workload.key for workload in WORKLOADS)
    parser.add_argument("--only", metavar="NAME[,NAME]", help=f"workloads among {workload_keys}")
    contender_keys = ",".join(entry.key for entry in contender_registry.REGISTRY)
    parser.add_argument(
        "--contenders", metavar="NAME[,NAME]", help=f"contenders among {contender_keys}"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds before a measurement is abandoned"
    )
    arguments = parser.parse_args(argv)
    if arguments.workers < 1:
        parser.error("--workers must be at least 1")
    return arguments


def select_workloads(names: list[str]) -> list[Workload]:
    """Return the workloads named (keys, '-' or '_'), or all of them; raise on an unknown name."""
    if not names:
        return list(WORKLOADS)
    by_key = {workload.key: workload for workload in WORKLOADS}
    unknown = [name for name in names if name.replace("-", "_").lower() not in by_key]
    if unknown:
        raise ValueError(f"unknown workload {', '.join(unknown)}; choose among {', '.join(by_key)}")
    return [by_key[name.replace("-", "_").lower()] for name in names]


def select_entries(names: list[str]) -> list[contender_registry.Entry]:
    """Return the registry entries named, or all of them; raise on an unknown name."""
    if not names:
        return list(contender_registry.REGISTRY)
    entries = [contender_registry.find_entry(name) for name in names]
    unknown = [name for name, entry in zip(names, entries, strict=True) if entry is None]
    if unknown:
        keys = ", ".join(entry.key for entry in contender_registry.REGISTRY)
        raise ValueError(f"unknown contender {', '.join(unknown)}; choose among {keys}")
    return [entry for entry in entries if entry is not None]


def build_settings(arguments: argparse.Namespace) -> Settings:
    """Return the sizes of this run: the full suite, or a shorter one with ``--quick``."""
    return Settings(
        workers=arguments.workers,
        repetitions=1 if arguments.quick else 3,
        round_trips=500 if arguments.quick else 2000,
        tiny_task_count=100_000,
        startup_cycles=5 if arguments.quick else 10,
        timeout_seconds=arguments.timeout,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark suite, print the table (and write the chart); return the exit status."""
    arguments = parse_arguments(argv)
    try:
        workloads = select_workloads(split_names(arguments.only))
        entries = select_entries(split_names(arguments.contenders))
    except ValueError as error:
        print(f"gilfree bench: {error}", file=sys.stderr)
        return 2
    contenders, notes = contender_registry.load_contenders(
        entries, explicit=bool(arguments.contenders)
    )
    for note in notes:
        print(note)
    settings = build_settings(arguments)
    rows: list[report.Row] = []

    def record(row: report.Row) -> None:
        rows.append(row)
        progress = f"  {row.workload.title} / {row.contender_name}: {report.format_row_time(row)}"
        print(progress, file=sys.stderr, flush=True)

    for workload in workloads:
        if workload.sequential is not None:
            record(measure_sequential(workload, workload.sequential, settings))
        for contender in contenders:
            record(measure_contender(workload, contender, settings))
    print(report.format_table(rows, settings))
    if arguments.plot:
        print(report.write_plot(rows, arguments.plot, settings))
    return 0
