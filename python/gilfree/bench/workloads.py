"""The benchmark workloads: the model, and the pool workloads of issue 2.

The task functions live in `gilfree.bench.tasks`, a module that imports nothing, so a worker that
must import it (zygote, spawn, forkserver) pays no more than one that inherits it (fork). Each
`Workload` says how to time one repetition against one contender, which reference timed in this
process (the sequential loop, if any) it is compared with, and which targets gilfree must reach.
The data workloads of issue 3 live in `gilfree.bench.data_workloads`.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from gilfree.bench.contenders import Contender
from gilfree.bench.tasks import fib, fibonacci_fast, noop, process_id

EQUAL_CPU_ARGUMENT = 27
EQUAL_CPU_TASK_COUNT = 40
IMBALANCED_RANGE = 32


class WrongResult(Exception):
    """A contender returned results that differ from the expected ones."""


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run."""

    workers: int
    repetitions: int
    round_trips: int
    tiny_task_count: int
    startup_cycles: int
    timeout_seconds: float
    quick: bool = False
    echo_items: int = 3_000_000
    array_items: int = 25_000_000
    codec_items: int = 1_000_000


@dataclass(frozen=True)
class Target:
    """A goal of issue ``issue``: gilfree at least ``minimum`` times faster than ``reference``."""

    reference: str
    minimum: float
    label: str
    issue: int = 2


Measure = Callable[[Contender, object, Settings], float]


@dataclass(frozen=True)
class Baseline:
    """A reference row timed in this process rather than in a pool (the sequential loop, pickle).

    ``measure`` times one repetition and returns seconds; ``key`` is what targets refer to.
    """

    key: str
    name: str
    measure: Callable[[Settings], float]


def sequential(loop: Callable[[Settings], None]) -> Baseline:
    """Return the baseline that times ``loop`` in this process, as the "sequential" row."""

    def measure(settings: Settings) -> float:
        started = time.perf_counter()
        loop(settings)
        return time.perf_counter() - started

    return Baseline("sequential", "sequential (parent)", measure)


@dataclass(frozen=True)
class Workload:
    """One row group of the benchmark table.

    ``measure`` times one repetition and returns seconds; it receives the pool created (and warmed
    up) by the runner, or ``None`` when ``uses_pool`` is false and it creates pools itself.
    ``figure`` turns those seconds (and the baseline's time, if any) into a per-unit figure.
    ``contenders`` limits the contenders that run it (all when ``None``); ``peer_repetitions``
    caps the repetitions of every contender but gilfree (for slow ones); a workload whose
    ``requires`` module is not importable is skipped; ``sized_title`` gives the title for the
    sizes of a run when they vary.
    """

    key: str
    title: str
    measure: Measure
    figure: Callable[[float, float | None, Settings], str]
    targets: tuple[Target, ...]
    uses_pool: bool = True
    baseline: Baseline | None = None
    contenders: tuple[str, ...] | None = None
    peer_repetitions: int | None = None
    requires: str | None = None
    sized_title: Callable[[Settings], str] | None = None


def measure_round_trip(contender: Contender, pool: object, settings: Settings) -> float:
    """Time ``settings.round_trips`` sequential submit→result calls of `noop`."""
    started = time.perf_counter()
    for _ in range(settings.round_trips):
        contender.call(pool, noop, None)
    return time.perf_counter() - started


def measure_tiny_tasks(contender: Contender, pool: object, settings: Settings) -> float:
    """Time one default-argument map of `noop` over ``settings.tiny_task_count`` integers."""
    started = time.perf_counter()
    results = contender.map(pool, noop, range(settings.tiny_task_count))
    elapsed = time.perf_counter() - started
    if len(results) != settings.tiny_task_count:
        raise WrongResult(f"{len(results)} results for {settings.tiny_task_count} tasks")
    return elapsed


def measure_equal_cpu(contender: Contender, pool: object, _settings: Settings) -> float:
    """Time a default-argument map of `fib` over equal arguments."""
    arguments = [EQUAL_CPU_ARGUMENT] * EQUAL_CPU_TASK_COUNT
    started = time.perf_counter()
    results = contender.map(pool, fib, arguments)
    elapsed = time.perf_counter() - started
    if results != [fibonacci_fast(EQUAL_CPU_ARGUMENT)] * EQUAL_CPU_TASK_COUNT:
        raise WrongResult("fib results differ from the expected ones")
    return elapsed


def measure_imbalanced(contender: Contender, pool: object, _settings: Settings) -> float:
    """Time the seed's ordered, imbalanced map of `fib` over ``range(32)``."""
    started = time.perf_counter()
    results = contender.map(pool, fib, range(IMBALANCED_RANGE))
    elapsed = time.perf_counter() - started
    if results != [fibonacci_fast(number) for number in range(IMBALANCED_RANGE)]:
        raise WrongResult("fib results differ from the expected ones, or are out of order")
    return elapsed


def measure_startup(contender: Contender, _pool: object, settings: Settings) -> float:
    """Return the median time of create pool + one task + shutdown, after one warm-up cycle."""

    def cycle() -> float:
        started = time.perf_counter()
        pool = contender.create(settings.workers)
        try:
            contender.call(pool, noop, None)
        except BaseException:
            contender.close(pool, graceful=False)
            raise
        contender.close(pool, graceful=True)
        return time.perf_counter() - started

    cycle()
    return statistics.median(cycle() for _ in range(settings.startup_cycles))


def measure_crash_recovery(contender: Contender, _pool: object, settings: Settings) -> float:
    """Return the median time from SIGKILL of a one-worker pool's worker until a task has run on
    its replacement (death noticed, replacement started and ready, one round trip)."""
    pool = contender.create(1)
    try:
        durations = []
        for _ in range(settings.startup_cycles):
            victim = contender.call(pool, process_id, None)
            started = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            while True:  # a task sent before the death is seen fails with WorkerCrashedError
                try:
                    replacement = contender.call(pool, process_id, None)
                except Exception:  # noqa: BLE001 - the crash being recovered from
                    continue
                if replacement != victim:
                    break
            durations.append(time.perf_counter() - started)
    finally:
        contender.close(pool, graceful=True)
    return statistics.median(durations)


def run_equal_cpu_sequentially(_settings: Settings) -> None:
    """Run the equal CPU-bound tasks in a loop in this process."""
    for _ in range(EQUAL_CPU_TASK_COUNT):
        fib(EQUAL_CPU_ARGUMENT)


def run_imbalanced_sequentially(_settings: Settings) -> None:
    """Run the imbalanced tasks in a loop in this process."""
    for number in range(IMBALANCED_RANGE):
        fib(number)


def microseconds_per_trip(
    seconds: float, _sequential_seconds: float | None, settings: Settings
) -> str:
    """Format a round-trip figure."""
    return f"{seconds / settings.round_trips * 1e6:.1f} µs/trip"


def tasks_per_second(seconds: float, _sequential_seconds: float | None, settings: Settings) -> str:
    """Format a throughput figure."""
    rate = settings.tiny_task_count / seconds
    if rate >= 1e6:
        return f"{rate / 1e6:.2f} M tasks/s"
    return f"{rate / 1e3:.1f} k tasks/s"


def speed_up(seconds: float, sequential_seconds: float | None, _settings: Settings) -> str:
    """Format the speed-up over the sequential loop."""
    if sequential_seconds is None:
        return ""
    return f"{sequential_seconds / seconds:.2f}× sequential"


def milliseconds_per_start(
    seconds: float, _sequential_seconds: float | None, _settings: Settings
) -> str:
    """Format a startup figure."""
    return f"{seconds * 1e3:.1f} ms/start"


def milliseconds_per_recovery(
    seconds: float, _sequential_seconds: float | None, _settings: Settings
) -> str:
    """Format a crash-recovery figure."""
    return f"{seconds * 1e3:.1f} ms/recovery"


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        key="round_trip",
        title="round trip (no-op)",
        measure=measure_round_trip,
        figure=microseconds_per_trip,
        targets=(Target("ppe", 8.0, "≥8× PPE"),),
    ),
    Workload(
        key="tiny_tasks",
        title="tiny tasks map(noop)",
        measure=measure_tiny_tasks,
        figure=tasks_per_second,
        targets=(Target("pool", 1.0, "≥1× Pool"), Target("ppe", 100.0, "≥100× PPE")),
    ),
    Workload(
        key="equal_cpu",
        title=f"{EQUAL_CPU_TASK_COUNT}×fib({EQUAL_CPU_ARGUMENT})",
        measure=measure_equal_cpu,
        figure=speed_up,
        targets=(Target("sequential", 1.85, "≥1.85× sequential"),),
        baseline=sequential(run_equal_cpu_sequentially),
    ),
    Workload(
        key="imbalanced",
        title=f"map(fib, range({IMBALANCED_RANGE}))",
        measure=measure_imbalanced,
        figure=speed_up,
        targets=(Target("ppe", 1.0, "≤ PPE time"),),
        baseline=sequential(run_imbalanced_sequentially),
    ),
    Workload(
        key="startup",
        title="startup (create+1 task+shutdown)",
        measure=measure_startup,
        figure=milliseconds_per_start,
        targets=(Target("pool", 1.0, "≤ Pool(fork) time"),),
        uses_pool=False,
    ),
    Workload(
        key="crash_recovery",
        title="crash recovery (kill → replacement ran a task)",
        measure=measure_crash_recovery,
        figure=milliseconds_per_recovery,
        targets=(),
        uses_pool=False,
        contenders=("gilfree",),
    ),
)
