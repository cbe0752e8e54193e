"""The data workloads of issue 3: echoing large arguments, and the codec against pickle.

``echo_complex`` and ``echo_ndarray`` time ``submit(echo, data).result()`` on each pool, ``echo``
being the main script's (each contender in a fresh interpreter on the numpy+pandas main script,
see `gilfree.bench.workloads`). The data is built once, outside the timed region, and the echoed
result is checked outside it too (type, length and a few sampled items). The ``codec_*``
workloads start no worker: they time gilfree's ``decode(encode(x))`` against
``pickle.loads(pickle.dumps(x, 5))``, their reference row, all four in one interpreter per row
kind. numpy is not a dependency of gilfree: the ndarray workloads import it lazily, and the
runner skips them when numpy is not importable.
"""

from __future__ import annotations

import functools
import importlib
import pickle
import time
from collections.abc import Callable
from typing import Any

from gilfree.bench.contenders import Contender
from gilfree.bench.main_scripts import tasks
from gilfree.bench.workloads import Baseline, Measure, Settings, Target, Workload, WrongResult

# The stdlib takes ~8 s to echo 3 M complex numbers: one repetition of it is enough.
SLOW_PEER_REPETITIONS = 1
# How many items of an echoed sequence are compared with the ones sent, besides its length.
SAMPLED_ITEMS = 8
FLOAT64_BYTES = 8
LIST_BUILDERS: dict[str, Callable[[int], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "complex": lambda number: complex(number, number),
}


@functools.lru_cache(maxsize=1)
def dataset(kind: str, count: int) -> Any:
    """Return ``count`` items of ``kind`` (a list, or a float64 ndarray); keeps the latest alive."""
    if kind == "ndarray":
        numpy = importlib.import_module("numpy")
        return numpy.arange(count, dtype=numpy.float64)
    return list(map(LIST_BUILDERS[kind], range(count)))


def check_echo(sent: Any, received: Any) -> None:
    """Raise `WrongResult` unless ``received`` looks like ``sent``: type, length, dtype, samples."""
    if type(received) is not type(sent) or len(received) != len(sent):
        raise WrongResult(f"echo returned a {type(received).__name__}, not the one sent")
    if getattr(received, "dtype", None) != getattr(sent, "dtype", None):
        raise WrongResult(f"echo returned dtype {received.dtype}, not {sent.dtype}")
    length = len(sent)
    for index in {0, length - 1, *(length * k // SAMPLED_ITEMS for k in range(SAMPLED_ITEMS))}:
        if 0 <= index < length and received[index] != sent[index]:
            raise WrongResult(f"echo changed item {index}")


def time_echo(contender: Contender, pool: object, data: Any) -> float:
    """Time one ``submit(echo, data).result()``; check the result outside the timed region."""
    started = time.perf_counter()
    result = contender.call(pool, tasks().echo, data)
    elapsed = time.perf_counter() - started
    check_echo(data, result)
    return elapsed


def measure_echo_complex(contender: Contender, pool: object, settings: Settings) -> float:
    """Time echoing the list of ``settings.echo_items`` complex numbers."""
    return time_echo(contender, pool, dataset("complex", settings.echo_items))


def measure_echo_ndarray(contender: Contender, pool: object, settings: Settings) -> float:
    """Time echoing the float64 ndarray of ``settings.array_items`` items."""
    return time_echo(contender, pool, dataset("ndarray", settings.array_items))


def measure_codec(kind: str) -> Measure:
    """Return the measure of gilfree's ``decode(encode(x))`` on the list of ``kind``."""

    def measure(_contender: Contender, _pool: object, settings: Settings) -> float:
        codec = importlib.import_module("gilfree._core")
        data = dataset(kind, settings.codec_items)
        started = time.perf_counter()
        result = codec.decode(codec.encode(data))
        elapsed = time.perf_counter() - started
        if result != data:
            raise WrongResult(f"decode(encode(x)) differs from x for the list of {kind}")
        return elapsed

    return measure


def pickle_baseline(kind: str) -> Baseline:
    """Return the reference row: ``pickle.loads(pickle.dumps(x, 5))`` on the list of ``kind``."""

    def measure(settings: Settings) -> float:
        data = dataset(kind, settings.codec_items)
        started = time.perf_counter()
        pickle.loads(pickle.dumps(data, 5))
        return time.perf_counter() - started

    return Baseline("pickle", "pickle dumps+loads (protocol 5)", measure)


# The shared array passed around: 400 MB, far above any size that could be copied in 1 ms.
SHARED_ARRAY_ITEMS = 50_000_000
SHARED_ARRAY_TRIPS = 200
SHARED_ARRAY_BUDGET_SECONDS = 0.001


@functools.lru_cache(maxsize=1)
def shared_array() -> Any:
    """The 400 MB shared array (made once)."""
    gilfree = importlib.import_module("gilfree")
    return gilfree.shared_ndarray(SHARED_ARRAY_ITEMS)


def measure_shared_array(contender: Contender, pool: object, _settings: Settings) -> float:
    """Time round trips of a task that receives the 400 MB shared array."""
    array = shared_array()
    shape_of = tasks().shape_of
    contender.call(pool, shape_of, array)  # the worker maps it once
    started = time.perf_counter()
    for _ in range(SHARED_ARRAY_TRIPS):
        if contender.call(pool, shape_of, array) != array.shape:
            raise WrongResult("the worker saw another array")
    return time.perf_counter() - started


def shared_array_budget() -> Baseline:
    """The reference row: the issue's budget of 1 ms per round trip (a figure, not a run)."""
    return Baseline(
        "budget",
        "budget: 1 ms per round trip",
        lambda _settings: SHARED_ARRAY_BUDGET_SECONDS * SHARED_ARRAY_TRIPS,
        computed=True,
    )


def microseconds_per_trip(seconds: float, _baseline: float | None, _settings: Settings) -> str:
    """Format the shared array's figure."""
    return f"{seconds / SHARED_ARRAY_TRIPS * 1e6:.0f} µs/trip"


def millions(count: int) -> str:
    """Format an item count such as ``3M`` or ``0.5M``."""
    return f"{count / 1e6:g}M"


def quick_note(settings: Settings) -> str:
    """Return the title suffix saying that a row was measured at the ``--quick`` size."""
    return " (--quick size)" if settings.quick else ""


def echo_complex_title(settings: Settings) -> str:
    """Title of the complex echo at this run's size."""
    return f"echo {millions(settings.echo_items)} complex{quick_note(settings)}"


def echo_ndarray_title(settings: Settings) -> str:
    """Title of the ndarray echo at this run's size."""
    megabytes = settings.array_items * FLOAT64_BYTES / 1e6
    return f"echo {megabytes:g} MB float64 ndarray{quick_note(settings)}"


def nanoseconds_per_echoed_item(
    seconds: float, _baseline_seconds: float | None, settings: Settings
) -> str:
    """Format the complex echo's figure."""
    return f"{seconds / settings.echo_items * 1e9:.0f} ns/item"


def megabytes_per_second(
    seconds: float, _baseline_seconds: float | None, settings: Settings
) -> str:
    """Format the ndarray echo's figure: the array's size over the round trip's time."""
    return f"{settings.array_items * FLOAT64_BYTES / seconds / 1e6:.0f} MB/s"


def nanoseconds_per_coded_item(
    seconds: float, _baseline_seconds: float | None, settings: Settings
) -> str:
    """Format a codec figure."""
    return f"{seconds / settings.codec_items * 1e9:.0f} ns/item"


def codec_workload(kind: str) -> Workload:
    """Return the workload comparing the codec with pickle on the list of ``kind``."""
    return Workload(
        key=f"codec_{kind}",
        title=f"codec vs pickle, 1M {kind}",
        sized_title=lambda settings: f"codec vs pickle, {millions(settings.codec_items)} {kind}",
        measure=measure_codec(kind),
        figure=nanoseconds_per_coded_item,
        targets=(Target("pickle", 1.0, ">1× pickle (issue 3)", issue=3),),
        uses_pool=False,
        baseline=pickle_baseline(kind),
        contenders=("gilfree",),
        session="codec",
        references=("pickle",),
    )


DATA_WORKLOADS: tuple[Workload, ...] = (
    Workload(
        key="echo_complex",
        title="echo 3M complex",
        sized_title=echo_complex_title,
        measure=measure_echo_complex,
        figure=nanoseconds_per_echoed_item,
        targets=(Target("ppe", 20.0, "≥20× PPE (issue 3)", issue=3),),
        peer_repetitions=SLOW_PEER_REPETITIONS,
    ),
    Workload(
        key="echo_ndarray",
        title="echo 200 MB float64 ndarray",
        sized_title=echo_ndarray_title,
        measure=measure_echo_ndarray,
        figure=megabytes_per_second,
        targets=(Target("ppe", 15.0, "≥15× PPE (issue 3)", issue=3),),
        requires="numpy",
    ),
    Workload(
        key="shared_array",
        title="pass a 400 MB shared array",
        measure=measure_shared_array,
        figure=microseconds_per_trip,
        targets=(Target("budget", 1.0, "≤1 ms/trip (issue 3)", issue=3),),
        baseline=shared_array_budget(),
        contenders=("gilfree",),
        requires="numpy",
    ),
    *(codec_workload(kind) for kind in LIST_BUILDERS),
)
