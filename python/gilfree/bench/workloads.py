"""The benchmark workloads: the model, and the pool workloads of issue 2.

Every measurement runs in a fresh interpreter started on one of the bench's main scripts (see
`gilfree.bench.main_scripts`; by default one that imports numpy and pandas), and the task
functions (`noop`, `fib`, ...) are that script's, taken through ``tasks()``: a worker that does
not inherit the parent's memory (zygote, spawn, forkserver, loky) loads what a user's main script
loads before it can run them. Each `Workload` says how to time one repetition against one
contender, which reference row (the sequential loop, if any) it is compared with, and which
targets gilfree must reach. The data workloads of issue 3 live in `gilfree.bench.data_workloads`,
the start-up and memory rows of issue 9 in `gilfree.bench.start_workloads`, the numpy and pandas
rows of issue 10 in `gilfree.bench.numeric_workloads`, the joblib rows of issue 12 in
`gilfree.bench.joblib_workloads`.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from gilfree.bench.contenders import Contender
from gilfree.bench.main_scripts import tasks
from gilfree.bench.tasks import fibonacci_fast

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
    matrix_count: int = 3000
    frame_count: int = 200
    big_frame_megabytes: int = 80
    joblib_megabytes: int = 100


@dataclass(frozen=True)
class Timed:
    """A measured value with a note for the table, such as the chunksize a sweep kept."""

    value: float
    detail: str


@dataclass(frozen=True)
class Target:
    """A goal of issue ``issue``: gilfree at least ``minimum`` times faster (or smaller) than the
    row ``reference`` of the same run, i.e. reference / gilfree >= ``minimum``.

    ``as_fraction`` shows the check as gilfree / reference, the way a label such as "≤0.4×
    PPE(forkserver)" reads (see `at_most`).
    """

    reference: str
    minimum: float
    label: str
    issue: int = 2
    as_fraction: bool = False


def at_most(reference: str, fraction: float, label: str, issue: int) -> Target:
    """The goal "gilfree's time (or memory) is at most ``fraction`` times ``reference``'s"."""
    return Target(reference, 1.0 / fraction, label, issue, as_fraction=True)


Measure = Callable[[Contender, object, Settings], float | Timed]
#: What the numpy rows set in their interpreter's environment before numpy is imported: one BLAS
#: (and OpenMP) thread per process, in the main process and in every worker alike.
ONE_BLAS_THREAD: tuple[tuple[str, str], ...] = (
    ("OPENBLAS_NUM_THREADS", "1"),
    ("OMP_NUM_THREADS", "1"),
    ("MKL_NUM_THREADS", "1"),
)


@dataclass(frozen=True)
class Baseline:
    """A reference row timed in this process rather than in a pool (the sequential loop, pickle).

    ``measure`` times one repetition and returns seconds; ``key`` is what targets refer to.
    A ``computed`` baseline is a figure worked out from the settings, not a timing: the runner
    does not start an interpreter for it.
    """

    key: str
    name: str
    measure: Callable[[Settings], float]
    computed: bool = False


def sequential(loop: Callable[[Settings], None]) -> Baseline:
    """Return the baseline that times ``loop`` in this process, as the "sequential" row."""

    def measure(settings: Settings) -> float:
        started = time.perf_counter()
        loop(settings)
        return time.perf_counter() - started

    return Baseline("sequential", "sequential (main process)", measure)


@dataclass(frozen=True)
class Workload:
    """One row group of the benchmark table.

    ``measure`` times one repetition and returns its value: seconds, or bytes when ``unit`` is
    ``"B"`` (lower is better either way), or a `Timed` (the value and a note for the table). It
    runs in a fresh interpreter started on the main script ``script`` (see
    `gilfree.bench.main_scripts`) and receives the pool created (and warmed up) there, or
    ``None`` when ``uses_pool`` is false and it creates pools itself. ``figure`` turns the value
    (and the baseline's, if any) into a per-unit figure.

    Interpreters: each contender measures each workload in an interpreter of its own, except that
    workloads with the same ``session`` share one per contender (run in suite order), and that
    with ``--quick`` the ``shareable`` ones without a session share one per contender and main
    script. A ``fresh`` workload is measured once per interpreter (a cold start can happen only
    once), so its repetitions are more interpreters; the others repeat in theirs.

    ``contenders`` limits the contenders that run it (the default set when ``None``);
    ``peer_repetitions`` caps the repetitions of every contender but gilfree (for slow ones),
    ``repetitions`` those of all; ``references`` are the two rows the table's ratio columns
    compare with; a workload whose ``requires`` module is not importable is skipped;
    ``sized_title`` gives the title for the sizes of a run when they vary; ``quick_repetitions``
    replaces the run's repetitions under ``--quick`` (for rows cheap enough to time more than
    once); ``environment`` is set in the interpreter's environment before it starts (workloads
    with different ones never share an interpreter); ``warm_up`` runs once on the pool after
    the runner's own warm-up, untimed (a short map of the row's task); ``subject`` is the
    contender whose row carries the targets (gilfree, or a variant of it).
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
    unit: str = "s"
    script: str = "numpy_pandas"
    session: str | None = None
    fresh: bool = False
    repetitions: int | None = None
    references: tuple[str, ...] = ("ppe", "pool")
    shareable: bool = True
    quick_repetitions: int | None = None
    environment: tuple[tuple[str, str], ...] = ()
    warm_up: Callable[[Contender, object, Settings], None] | None = None
    subject: str = "gilfree"


def measure_round_trip(contender: Contender, pool: object, settings: Settings) -> float:
    """Time ``settings.round_trips`` sequential submit→result calls of `noop`."""
    noop = tasks().noop
    started = time.perf_counter()
    for _ in range(settings.round_trips):
        contender.call(pool, noop, None)
    return time.perf_counter() - started


def measure_tiny_tasks(contender: Contender, pool: object, settings: Settings) -> float:
    """Time one default-argument map of `noop` over ``settings.tiny_task_count`` integers."""
    noop = tasks().noop
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
    results = contender.map(pool, tasks().fib, arguments)
    elapsed = time.perf_counter() - started
    if results != [fibonacci_fast(EQUAL_CPU_ARGUMENT)] * EQUAL_CPU_TASK_COUNT:
        raise WrongResult("fib results differ from the expected ones")
    return elapsed


def measure_imbalanced(contender: Contender, pool: object, _settings: Settings) -> float:
    """Time the seed's ordered, imbalanced map of `fib` over ``range(32)``."""
    started = time.perf_counter()
    results = contender.map(pool, tasks().fib, range(IMBALANCED_RANGE))
    elapsed = time.perf_counter() - started
    if results != [fibonacci_fast(number) for number in range(IMBALANCED_RANGE)]:
        raise WrongResult("fib results differ from the expected ones, or are out of order")
    return elapsed


def measure_startup(contender: Contender, _pool: object, settings: Settings) -> float:
    """Return the median time of create pool + one task + shutdown, after one warm-up cycle.

    The warm-up cycle starts what a process starts once (gilfree's template process, which loads
    the main script); the median is what every later executor of the process pays.
    """
    noop = tasks().noop

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
    process_id = tasks().process_id
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
                except Exception:
                    continue
                if replacement != victim:
                    break
            durations.append(time.perf_counter() - started)
    finally:
        contender.close(pool, graceful=True)
    return statistics.median(durations)


def run_equal_cpu_sequentially(_settings: Settings) -> None:
    """Run the equal CPU-bound tasks in a loop in this process."""
    fib = tasks().fib
    for _ in range(EQUAL_CPU_TASK_COUNT):
        fib(EQUAL_CPU_ARGUMENT)


def run_imbalanced_sequentially(_settings: Settings) -> None:
    """Run the imbalanced tasks in a loop in this process."""
    fib = tasks().fib
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


def tiny_tasks_title(settings: Settings) -> str:
    """Title of the tiny-task map, with its size when ``--quick`` shrinks it."""
    if settings.quick:
        return f"tiny tasks map(noop), {settings.tiny_task_count // 1000}k (--quick size)"
    return "tiny tasks map(noop)"


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        key="round_trip",
        title="round trip (no-op)",
        measure=measure_round_trip,
        figure=microseconds_per_trip,
        targets=(Target("ppe", 8.0, "≥8× PPE"),),
    ),
    Workload(
        key="thread_round_trip",
        title="round trip (no-op), threads",
        measure=measure_round_trip,
        figure=microseconds_per_trip,
        targets=(Target("tpe", 1.0, "≤ ThreadPoolExecutor time", issue=11),),
        contenders=("gthread", "tpe"),
        references=("tpe", "tpe"),
        subject="gthread",
    ),
    Workload(
        key="tiny_tasks",
        title="tiny tasks map(noop)",
        sized_title=tiny_tasks_title,
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
        title="startup (create+1 task+shutdown), numpy+pandas main",
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
