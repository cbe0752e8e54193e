"""The numpy and pandas rows of issue 10: small matrix products, DataFrame group-bys, the codec.

Like every row, each contender runs in fresh interpreters started on the numpy+pandas main script,
whose functions (``gram_sum``, ``gram``, ``group_means``) are the tasks; these rows add
OPENBLAS_NUM_THREADS=1, OMP_NUM_THREADS=1 and MKL_NUM_THREADS=1 to those interpreters'
environment (`ONE_BLAS_THREAD`), so numpy starts with one BLAS thread in the main process and in
every worker alike. Two workers per pool. The contenders: gilfree, the stdlib's
ProcessPoolExecutor (default start method) and loky, each at its default chunksize and, as
``ppe_best`` / ``loky_best``, at the best chunksize of `CHUNKSIZE_SWEEP` (the sizes that give
each worker a chunk); the reference row: the plain loop in the main process (``sequential``);
and, on the map rows, the trick of sending nothing (``fork_inherit``: the stdlib's fork pool
started inside each map, once the items exist, mapping item numbers into them, so that only
the results are sent).

* ``matmul_sum``: ``map(gram_sum, arrays)`` over 3000 float64 arrays of 64x64 (600 with
  ``--quick``), ``gram_sum(a) = float((a @ a.T).sum())``;
* ``matmul_arrays``: the same map with ``gram(a) = a @ a.T`` (a 64x64 array back per item);
* ``groupby_frames``: ``map(group_means, frames)`` over 200 DataFrames (60 with ``--quick``) of
  20 000 rows (an int64 ``key`` in 0..99, float64 ``x`` and ``y``),
  ``group_means(df) = df.groupby("key").mean()``;
* ``groupby_big_frame``: ``submit(group_means, frame).result()`` on one DataFrame of 80 MB
  (20 MB with ``--quick``), timed whole (no chunksize to sweep: the stdlib at its default only);
* ``codec_ndarray_*``: no pool: ``decode(encode(a, shared))`` of gilfree's codec, encoding as
  gilfree sends every argument and result (messages of 64 KiB or more written into a recycled
  shared buffer and decoded where they lie), against ``pickle.loads(pickle.dumps(a, 5))`` (the
  reference row) on float64 arrays of 1 KiB, 64 KiB and 1 MiB, in the main process; the value is
  the time of one round trip, the best of a few batches;
* ``codec_small_frame``: the same on one DataFrame of 100 rows, what ``group_means`` returns
  (an int64 index named ``key``, float64 columns ``x`` and ``y``): the cost of a frame that
  pandas' pickling, not its bytes, makes dear.

The data is built once per interpreter (the same in every one: a fixed seed), outside the timed
region. Each pool is warmed up by a short map of the row's own task (a small frame for the
submit) before its repetitions; the best of them is kept (three even with ``--quick``: these
rows are cheap). Every map's results are checked outside the timed region against the loop's,
computed once in the measuring interpreter (values and order, within 1e-9 relative).
"""

from __future__ import annotations

import functools
import importlib
import math
import pickle
import time
from collections.abc import Callable
from typing import Any

from gilfree.bench.contenders import Contender
from gilfree.bench.main_scripts import tasks
from gilfree.bench.workloads import (
    ONE_BLAS_THREAD,
    Baseline,
    Measure,
    Settings,
    Target,
    Timed,
    Workload,
    WrongResult,
)

ISSUE = 10
MATRIX_SIDE = 64
FRAME_ROWS = 20_000
FRAME_KEYS = 100
#: Bytes per row of the frames: an int64 key and two float64 columns.
FRAME_ROW_BYTES = 24
SEED = 10
#: Repetitions kept under ``--quick`` too: these rows take well under a second each.
QUICK_REPETITIONS = 3
#: Items of the short map that warms a pool up.
WARM_UP_ITEMS = 8
#: How close a pool's results must be to the loop's.
RELATIVE_TOLERANCE = 1e-9
MAP_CONTENDERS = ("gilfree", "ppe", "ppe_best", "loky", "loky_best", "fork_inherit")
SUBMIT_CONTENDERS = ("gilfree", "ppe", "loky")
MAP_REFERENCES = ("sequential", "ppe_best")
SUBMIT_REFERENCES = ("sequential", "ppe")
#: The codec rows' array sizes in bytes, and how many round trips one timed batch makes.
CODEC_SIZES = (1 << 10, 1 << 16, 1 << 20)
CODEC_BATCH_BYTES = 64 << 20
CODEC_MIN_TRIPS = 64
CODEC_MAX_TRIPS = 10_000
CODEC_BATCHES = 5
#: Round trips per batch of the small frame (about 15 µs each through the codec).
CODEC_FRAME_TRIPS = 2000

Check = Callable[[list[Any]], None]


def numpy() -> Any:
    """The numpy module (imported here, not at the top: the parent runner does not need it)."""
    return importlib.import_module("numpy")


def pandas() -> Any:
    """The pandas module (imported lazily, like numpy)."""
    return importlib.import_module("pandas")


# --- data, built once per interpreter ---------------------------------------------------------


@functools.lru_cache(maxsize=1)
def matrices(count: int) -> list[Any]:
    """``count`` float64 arrays of 64x64, uniform in [0, 1)."""
    generator = numpy().random.default_rng(SEED)
    return [generator.random((MATRIX_SIDE, MATRIX_SIDE)) for _ in range(count)]


def make_frame(rows: int, generator: Any) -> Any:
    """A DataFrame of ``rows`` rows: ``key`` (int64 in 0..99), ``x`` and ``y`` (float64)."""
    return pandas().DataFrame(
        {
            "key": generator.integers(0, FRAME_KEYS, rows),
            "x": generator.random(rows),
            "y": generator.standard_normal(rows),
        }
    )


@functools.lru_cache(maxsize=1)
def frames(count: int) -> list[Any]:
    """``count`` DataFrames of 20 000 rows."""
    generator = numpy().random.default_rng(SEED)
    return [make_frame(FRAME_ROWS, generator) for _ in range(count)]


def big_frame_rows(megabytes: int) -> int:
    """The rows of the submitted DataFrame of ``megabytes`` MB."""
    return megabytes * 10**6 // FRAME_ROW_BYTES


@functools.lru_cache(maxsize=1)
def big_frame(megabytes: int) -> Any:
    """The DataFrame of ``megabytes`` MB that the submit row sends."""
    return make_frame(big_frame_rows(megabytes), numpy().random.default_rng(SEED))


@functools.lru_cache(maxsize=1)
def small_frame() -> Any:
    """A DataFrame of 20 000 rows that warms the submit row's pools up."""
    return make_frame(FRAME_ROWS, numpy().random.default_rng(SEED + 1))


@functools.cache
def codec_array(size: int) -> Any:
    """A float64 array of ``size`` bytes."""
    return numpy().arange(size // 8, dtype=numpy().float64)


@functools.lru_cache(maxsize=1)
def codec_frame() -> Any:
    """The small frame of ``codec_small_frame``: ``group_means`` of a 20 000-row frame."""
    return tasks().group_means(small_frame())


# --- the loop's results, and the checks against them --------------------------------------------


@functools.lru_cache(maxsize=1)
def expected_gram_sums(count: int) -> Any:
    """The loop's ``gram_sum`` of each of the ``count`` arrays, as a float64 array."""
    gram_sum = tasks().gram_sum
    return numpy().array([gram_sum(array) for array in matrices(count)])


@functools.lru_cache(maxsize=1)
def expected_frame_means(count: int) -> Any:
    """The loop's ``group_means`` of each of the ``count`` frames, stacked: (count, 100, 2)."""
    group_means = tasks().group_means
    return numpy().stack([group_means(frame).to_numpy() for frame in frames(count)])


@functools.lru_cache(maxsize=1)
def expected_big_frame_means(megabytes: int) -> Any:
    """The loop's ``group_means`` of the big frame."""
    return tasks().group_means(big_frame(megabytes))


def check_close(what: str, received: Any, expected: Any) -> None:
    """Raise `WrongResult` unless ``received`` has ``expected``'s shape and values."""
    received = numpy().asarray(received)
    if received.shape != expected.shape or not numpy().allclose(
        received, expected, rtol=RELATIVE_TOLERANCE, atol=0.0
    ):
        raise WrongResult(f"{what}: results differ from the loop's (or are out of order)")


def check_gram_sums(results: list[Any], count: int) -> None:
    """Check ``map(gram_sum)``'s results: floats equal to the loop's, in order."""
    if not all(type(result) is float for result in results):
        raise WrongResult("map(gram_sum) returned something else than floats")
    check_close("map(gram_sum)", results, expected_gram_sums(count))


def check_grams(results: list[Any], count: int) -> None:
    """Check ``map(gram)``'s results: 64x64 float64 arrays whose sums are the loop's, in order."""
    shape = (MATRIX_SIDE, MATRIX_SIDE)
    if not all(
        getattr(result, "shape", None) == shape and result.dtype == numpy().float64
        for result in results
    ):
        raise WrongResult("map(gram) returned something else than 64x64 float64 arrays")
    check_close("map(gram)", [float(result.sum()) for result in results], expected_gram_sums(count))


def check_frame_means(results: list[Any], count: int) -> None:
    """Check ``map(group_means)``'s results: each frame's means are the loop's, in order."""
    if not all(list(result.columns) == ["x", "y"] for result in results):
        raise WrongResult("map(group_means) returned frames without the columns x and y")
    received = numpy().stack([result.to_numpy() for result in results])
    check_close("map(group_means)", received, expected_frame_means(count))


def check_big_frame_means(result: Any, megabytes: int) -> None:
    """Check the submit's result: the loop's frame of means (index, columns, values)."""
    try:
        pandas().testing.assert_frame_equal(
            result, expected_big_frame_means(megabytes), rtol=RELATIVE_TOLERANCE
        )
    except AssertionError as error:
        raise WrongResult(f"submit(group_means) differs from the loop's: {error}") from None


# --- timing -----------------------------------------------------------------------------------


def chunksizes_to_try(contender: Contender, count: int, workers: int) -> tuple[int | None, ...]:
    """The chunksizes ``contender``'s map of ``count`` items is timed at: ``None`` (the pool's
    default) unless it sweeps; else those of its sweep that give each of the ``workers`` a
    chunk (the smallest when none does)."""
    sweep = contender.chunksize_sweep
    if not sweep:
        return (None,)
    return tuple(size for size in sweep if size * workers <= count) or sweep[:1]


def time_map(
    contender: Contender,
    pool: object,
    function: Callable[[Any], Any],
    items: list[Any],
    settings: Settings,
    check: Check,
) -> float | Timed:
    """Time ``list(map(function, items))`` on ``pool`` at each chunksize to try, checking every
    result outside the timed region; the best time (and, for a sweep, its chunksize)."""
    best: tuple[float, int | None] | None = None
    for chunksize in chunksizes_to_try(contender, len(items), settings.workers):
        started = time.perf_counter()
        results = contender.map(pool, function, items, chunksize=chunksize)
        elapsed = time.perf_counter() - started
        check(results)
        del results
        if best is None or elapsed < best[0]:
            best = (elapsed, chunksize)
    assert best is not None
    seconds, chunksize = best
    return seconds if chunksize is None else Timed(seconds, f"chunksize {chunksize}")


def measure_matmul_sum(contender: Contender, pool: object, settings: Settings) -> float | Timed:
    """Time ``map(gram_sum, arrays)``: 64x64 products reduced to a float, one per array."""
    count = settings.matrix_count
    return time_map(
        contender,
        pool,
        tasks().gram_sum,
        matrices(count),
        settings,
        lambda results: check_gram_sums(results, count),
    )


def measure_matmul_arrays(contender: Contender, pool: object, settings: Settings) -> float | Timed:
    """Time ``map(gram, arrays)``: the same products, each returned whole (32 KiB back)."""
    count = settings.matrix_count
    return time_map(
        contender,
        pool,
        tasks().gram,
        matrices(count),
        settings,
        lambda results: check_grams(results, count),
    )


def measure_groupby_frames(contender: Contender, pool: object, settings: Settings) -> float | Timed:
    """Time ``map(group_means, frames)``: one group-by per DataFrame of 20 000 rows."""
    count = settings.frame_count
    return time_map(
        contender,
        pool,
        tasks().group_means,
        frames(count),
        settings,
        lambda results: check_frame_means(results, count),
    )


def measure_groupby_big_frame(contender: Contender, pool: object, settings: Settings) -> float:
    """Time ``submit(group_means, frame).result()`` on the big frame: sending it, the group-by
    in a worker and the result's way back."""
    frame = big_frame(settings.big_frame_megabytes)
    started = time.perf_counter()
    result = contender.call(pool, tasks().group_means, frame)
    elapsed = time.perf_counter() - started
    check_big_frame_means(result, settings.big_frame_megabytes)
    return elapsed


def warm_up_map(task: str, items: Callable[[Settings], list[Any]]) -> Callable[..., None]:
    """The warm-up of a map row: the row's task mapped over its first few items."""

    def warm_up(contender: Contender, pool: object, settings: Settings) -> None:
        contender.map(pool, getattr(tasks(), task), items(settings)[:WARM_UP_ITEMS])

    return warm_up


def warm_up_submit(contender: Contender, pool: object, _settings: Settings) -> None:
    """The warm-up of the submit row: a group-by of a small frame."""
    contender.call(pool, tasks().group_means, small_frame())


def plain_loop(
    prepare: Callable[[Settings], Any], task: str, *, over_items: bool = True
) -> Baseline:
    """The reference row: the main script's ``task`` in a plain loop in this process, over the
    items ``prepare`` builds (built before the clock starts), or called once on what it builds
    (``over_items=False``)."""

    def measure(settings: Settings) -> float:
        data = prepare(settings)
        function = getattr(tasks(), task)
        started = time.perf_counter()
        results = [function(item) for item in data] if over_items else function(data)
        elapsed = time.perf_counter() - started
        del results
        return elapsed

    return Baseline("sequential", "sequential (main process)", measure)


def time_round_trips(round_trip: Callable[[Any], Any], data: Any, trips: int) -> float:
    """The time of one ``round_trip`` of ``data``: the best of `CODEC_BATCHES` batches of
    ``trips`` round trips."""
    best = math.inf
    for _ in range(CODEC_BATCHES):
        started = time.perf_counter()
        for _ in range(trips):
            round_trip(data)
        best = min(best, time.perf_counter() - started)
    return best / trips


def array_trips(size: int) -> int:
    """Round trips per batch for an array of ``size`` bytes: as many as fit in
    `CODEC_BATCH_BYTES`, within `CODEC_MIN_TRIPS` and `CODEC_MAX_TRIPS`."""
    return max(CODEC_MIN_TRIPS, min(CODEC_MAX_TRIPS, CODEC_BATCH_BYTES // size))


def measure_codec(make: Callable[[], Any], same: Callable[[Any, Any], bool], trips: int) -> Measure:
    """The measure of gilfree's ``decode(encode(x))`` on ``make()``, checked once to give back
    a value of the same type that is ``same`` as the sent one."""

    def measure(_contender: Contender, _pool: object, _settings: Settings) -> float:
        codec = importlib.import_module("gilfree._core")

        def round_trip(data: Any) -> Any:
            # As gilfree sends a value: with a list for the shared buffers the message uses
            # (from 64 KiB on, a recycled one holds the whole message), kept until decoded.
            shared: list[Any] = []
            return codec.decode(codec.encode(data, shared))

        sent = make()
        received = round_trip(sent)
        if type(received) is not type(sent):
            raise WrongResult(f"decode(encode(x)) gave a {type(received).__name__} back")
        if not same(received, sent):
            raise WrongResult("decode(encode(x)) differs from x")
        return time_round_trips(round_trip, sent, trips)

    return measure


def same_array(received: Any, sent: Any) -> bool:
    """Whether two arrays have the same dtype and values."""
    return bool(received.dtype == sent.dtype and numpy().array_equal(received, sent))


def same_frame(received: Any, sent: Any) -> bool:
    """Whether two frames are equal, index, columns and dtypes included."""
    return bool(received.equals(sent) and received.index.equals(sent.index))


def pickle_round_trips(make: Callable[[], Any], trips: int) -> Baseline:
    """The codec rows' reference: ``pickle.loads(pickle.dumps(x, 5))`` on the same value."""

    def round_trip(data: Any) -> Any:
        return pickle.loads(pickle.dumps(data, 5))

    return Baseline(
        "pickle",
        "pickle dumps+loads (protocol 5)",
        lambda _settings: time_round_trips(round_trip, make(), trips),
    )


# --- titles and figures -----------------------------------------------------------------------


def quick_note(settings: Settings) -> str:
    """The title suffix saying that a row was measured at the ``--quick`` size."""
    return " (--quick size)" if settings.quick else ""


def arrays_text(settings: Settings) -> str:
    """The map rows' items: ``3000 × 64×64 float64``."""
    return f"{settings.matrix_count} × {MATRIX_SIDE}×{MATRIX_SIDE} float64"


def matmul_sum_title(settings: Settings) -> str:
    """The title of ``matmul_sum`` at this run's size."""
    return f"map(float((a @ a.T).sum())), {arrays_text(settings)}{quick_note(settings)}"


def matmul_arrays_title(settings: Settings) -> str:
    """The title of ``matmul_arrays`` at this run's size."""
    return f"map(a @ a.T) → arrays, {arrays_text(settings)}{quick_note(settings)}"


def groupby_frames_title(settings: Settings) -> str:
    """The title of ``groupby_frames`` at this run's size."""
    return (
        f"map(df.groupby('key').mean()), {settings.frame_count} DataFrames × "
        f"{FRAME_ROWS // 1000}k rows{quick_note(settings)}"
    )


def groupby_big_frame_title(settings: Settings) -> str:
    """The title of ``groupby_big_frame`` at this run's size."""
    rows = big_frame_rows(settings.big_frame_megabytes)
    return (
        f"submit(df.groupby('key').mean()), one {settings.big_frame_megabytes} MB DataFrame "
        f"({rows / 1e6:.2g}M rows){quick_note(settings)}"
    )


def size_text(size: int) -> str:
    """``1 KiB``, ``64 KiB``, ``1 MiB``."""
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


def microseconds_per_array(seconds: float, _baseline: float | None, settings: Settings) -> str:
    """The matrix maps' figure."""
    return f"{seconds / settings.matrix_count * 1e6:.1f} µs/array"


def milliseconds_per_frame(seconds: float, _baseline: float | None, settings: Settings) -> str:
    """The frames map's figure."""
    return f"{seconds / settings.frame_count * 1e3:.2f} ms/frame"


def gigabytes_per_second_of_frame(
    seconds: float, _baseline: float | None, settings: Settings
) -> str:
    """The submit row's figure: the frame's size over the call's time."""
    return f"{settings.big_frame_megabytes / 1e3 / seconds:.2f} GB/s"


def microseconds_per_round_trip(
    seconds: float, _baseline: float | None, _settings: Settings
) -> str:
    """The small frame's figure."""
    return f"{seconds * 1e6:.1f} µs/trip"


def gigabytes_per_second_of_array(size: int) -> Callable[[float, float | None, Settings], str]:
    """The codec rows' figure: the array's size over one round trip's time."""

    def figure(seconds: float, _baseline: float | None, _settings: Settings) -> str:
        return f"{size / seconds / 1e9:.2f} GB/s"

    return figure


# --- the rows ---------------------------------------------------------------------------------


def target(reference: str, minimum: float, label: str) -> Target:
    """A target of issue 10 (the label gets the issue's number)."""
    return Target(reference, minimum, f"{label} (issue {ISSUE})", issue=ISSUE)


def codec_workload(**fields: Any) -> Workload:
    """A row comparing the codec with pickle, in the main process: ``fields`` and the rest."""
    return Workload(
        uses_pool=False,
        contenders=("gilfree",),
        session="codec_ndarray",
        references=("pickle",),
        quick_repetitions=QUICK_REPETITIONS,
        environment=ONE_BLAS_THREAD,
        **fields,
    )


def codec_ndarray_workload(size: int) -> Workload:
    """The row comparing the codec with pickle on the float64 array of ``size`` bytes."""
    make = functools.partial(codec_array, size)
    return codec_workload(
        key=f"codec_ndarray_{size_text(size).replace(' ', '').lower()}",
        title=f"codec vs pickle, {size_text(size)} float64 ndarray, per round trip",
        measure=measure_codec(make, same_array, array_trips(size)),
        figure=gigabytes_per_second_of_array(size),
        targets=(target("pickle", 3.0, "≥3× pickle"),),
        baseline=pickle_round_trips(make, array_trips(size)),
    )


def map_workload(**fields: Any) -> Workload:
    """A map row: the map contenders, references, repetitions and environment, and ``fields``."""
    return Workload(
        contenders=MAP_CONTENDERS,
        references=MAP_REFERENCES,
        quick_repetitions=QUICK_REPETITIONS,
        environment=ONE_BLAS_THREAD,
        **fields,
    )


NUMERIC_WORKLOADS: tuple[Workload, ...] = (
    *(codec_ndarray_workload(size) for size in CODEC_SIZES),
    codec_workload(
        key="codec_small_frame",
        title="codec vs pickle, a 100-row DataFrame (group-by result), per round trip",
        measure=measure_codec(codec_frame, same_frame, CODEC_FRAME_TRIPS),
        figure=microseconds_per_round_trip,
        targets=(),  # measured, no figure set: issue 10 asks for the overhead to be removed
        baseline=pickle_round_trips(codec_frame, CODEC_FRAME_TRIPS),
    ),
    map_workload(
        key="matmul_sum",
        title="map(float((a @ a.T).sum())), 3000 × 64×64 float64",
        sized_title=matmul_sum_title,
        measure=measure_matmul_sum,
        figure=microseconds_per_array,
        targets=(
            target("sequential", 1.0, "≥1× sequential"),
            target("ppe_best", 3.0, "≥3× PPE best chunksize"),
        ),
        baseline=plain_loop(lambda settings: matrices(settings.matrix_count), "gram_sum"),
        warm_up=warm_up_map("gram_sum", lambda settings: matrices(settings.matrix_count)),
    ),
    map_workload(
        key="matmul_arrays",
        title="map(a @ a.T) → arrays, 3000 × 64×64 float64",
        sized_title=matmul_arrays_title,
        measure=measure_matmul_arrays,
        figure=microseconds_per_array,
        targets=(target("sequential", 0.8, "≥0.8× sequential"),),
        baseline=plain_loop(lambda settings: matrices(settings.matrix_count), "gram"),
        warm_up=warm_up_map("gram", lambda settings: matrices(settings.matrix_count)),
    ),
    map_workload(
        key="groupby_frames",
        title="map(df.groupby('key').mean()), 200 DataFrames × 20k rows",
        sized_title=groupby_frames_title,
        measure=measure_groupby_frames,
        figure=milliseconds_per_frame,
        targets=(target("sequential", 1.6, "≥1.6× sequential"),),
        baseline=plain_loop(lambda settings: frames(settings.frame_count), "group_means"),
        warm_up=warm_up_map("group_means", lambda settings: frames(settings.frame_count)),
    ),
    Workload(
        key="groupby_big_frame",
        title="submit(df.groupby('key').mean()), one 80 MB DataFrame",
        sized_title=groupby_big_frame_title,
        measure=measure_groupby_big_frame,
        figure=gigabytes_per_second_of_frame,
        targets=(target("sequential", 0.8, "≥0.8× sequential, aim 0.87×"),),
        baseline=plain_loop(
            lambda settings: big_frame(settings.big_frame_megabytes),
            "group_means",
            over_items=False,
        ),
        warm_up=warm_up_submit,
        contenders=SUBMIT_CONTENDERS,
        references=SUBMIT_REFERENCES,
        quick_repetitions=QUICK_REPETITIONS,
        environment=ONE_BLAS_THREAD,
    ),
)
