"""Command line and measurement loop of ``python -m gilfree bench``.

For each workload: time its baseline in this process (the sequential loop, pickle), if it has one,
then for each contender create a pool outside the timed region, warm it up, time a few repetitions
and keep the best. Anything a contender raises, or a hang past ``--timeout``, becomes an error row.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from gilfree.bench import contenders as contender_registry
from gilfree.bench import report
from gilfree.bench.contenders import Contender
from gilfree.bench.data_workloads import DATA_WORKLOADS
from gilfree.bench.tasks import noop
from gilfree.bench.workloads import WORKLOADS, Baseline, Settings, Workload

SUITE: tuple[Workload, ...] = (*WORKLOADS, *DATA_WORKLOADS)

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
    repetitions = settings.repetitions
    if contender.key != "gilfree" and workload.peer_repetitions is not None:
        repetitions = min(repetitions, workload.peer_repetitions)
    pool: Any = None
    try:
        with deadline(settings.timeout_seconds):
            if workload.uses_pool:
                pool = contender.create(settings.workers)
                contender.map(pool, noop, range(settings.workers * 4))
                contender.call(pool, noop, None)
            seconds = best_of(lambda: workload.measure(contender, pool, settings), repetitions)
            if pool is not None:
                contender.close(pool, graceful=True)
                pool = None
    except Exception as error:  # every failure is reported, none stops the bench
        if pool is not None:
            with contextlib.suppress(Exception), deadline(CLEANUP_TIMEOUT_SECONDS):
                contender.close(pool, graceful=False)
        return report.Row(workload, contender.key, contender.name, None, describe_error(error))
    return report.Row(workload, contender.key, contender.name, seconds, None)


def measure_baseline(workload: Workload, baseline: Baseline, settings: Settings) -> report.Row:
    """Time the workload's ``baseline`` in this process; a failure becomes an error row."""
    try:
        seconds = best_of(lambda: baseline.measure(settings), settings.repetitions)
    except Exception as error:  # every failure is reported, none stops the bench
        return report.Row(workload, baseline.key, baseline.name, None, describe_error(error))
    return report.Row(workload, baseline.key, baseline.name, seconds, None)


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
    workload_keys = ",".join(workload.key for workload in SUITE)
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help=f"workloads among {workload_keys} (a prefix such as 'echo' or 'codec' picks a group)",
    )
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


def matches(workload: Workload, name: str) -> bool:
    """Whether ``name`` ('-' or '_') is the key of ``workload`` or its group, such as ``echo``."""
    wanted = name.replace("-", "_").lower()
    return workload.key == wanted or workload.key.startswith(wanted + "_")


def select_workloads(names: list[str]) -> list[Workload]:
    """Return the workloads named (keys or groups), or all of them; raise on an unknown name."""
    if not names:
        return list(SUITE)
    unknown = [name for name in names if not any(matches(workload, name) for workload in SUITE)]
    if unknown:
        keys = ", ".join(workload.key for workload in SUITE)
        raise ValueError(f"unknown workload {', '.join(unknown)}; choose among {keys}")
    chosen = [workload for name in names for workload in SUITE if matches(workload, name)]
    return list(dict.fromkeys(chosen))


def prepare_workloads(workloads: list[Workload], settings: Settings) -> list[Workload]:
    """Title the workloads for this run's sizes; skip, with a note, those missing a module."""
    prepared: list[Workload] = []
    for workload in workloads:
        if workload.sized_title is not None:
            workload = dataclasses.replace(workload, title=workload.sized_title(settings))
        if workload.requires is not None and importlib.util.find_spec(workload.requires) is None:
            print(f"{workload.title}: skipped, {workload.requires} is not importable")
            continue
        prepared.append(workload)
    return prepared


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
    quick = arguments.quick
    return Settings(
        workers=arguments.workers,
        repetitions=1 if quick else 3,
        round_trips=500 if quick else 2000,
        tiny_task_count=100_000,
        startup_cycles=5 if quick else 10,
        timeout_seconds=arguments.timeout,
        quick=quick,
        echo_items=1_000_000 if quick else 3_000_000,
        array_items=6_250_000 if quick else 25_000_000,
        codec_items=1_000_000,
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
    workloads = prepare_workloads(workloads, settings)
    rows: list[report.Row] = []

    def record(row: report.Row) -> None:
        rows.append(row)
        progress = f"  {row.workload.title} / {row.contender_name}: {report.format_row_time(row)}"
        print(progress, file=sys.stderr, flush=True)

    for workload in workloads:
        if workload.baseline is not None:
            record(measure_baseline(workload, workload.baseline, settings))
        for contender in contenders:
            if workload.contenders is None or contender.key in workload.contenders:
                record(measure_contender(workload, contender, settings))
    print(report.format_table(rows, settings))
    if arguments.plot:
        print(report.write_plot(rows, arguments.plot, settings))
    return 0
