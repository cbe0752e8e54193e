"""The asyncio rows of issue 13: awaiting work from an event loop.

gilfree's executor is awaited through its own API (``await executor.run(noop, i)``, ``async for
... in executor.amap(noop, ...)``); every other contender the only way asyncio offers, which is
also what a gilfree user had before: ``await loop.run_in_executor(pool, noop, i)``. Each
measurement runs in a fresh interpreter on the numpy+pandas main script, with the pool warm.

* ``asyncio_round_trip``: ``settings.round_trips`` sequential awaits of ``noop``;
* ``asyncio_map``: ``echo`` (which returns its argument) over
  ``range(settings.tiny_task_count)``: gilfree's ``amap`` (defaults) against ``asyncio.gather``
  of one ``run_in_executor`` per item, the way to fan out without ``amap``;
* ``asyncio_ticker_lag``: 10 000 concurrent awaits of ``echo``, while a task on the same loop
  sleeps 1 ms in a loop and records how late each wake-up is; the value is the worst lateness,
  checked against 50 ms (a computed row: the target is a bound, not a peer). A contender that
  hands each completion to the loop on its own wakes the loop once per result. The awaits are
  started ``TICKER_BURST`` at a time, the loop running between bursts, as requests reaching a
  server would: ``asyncio.gather`` of 10 000 coroutines starts them all in one turn of the loop,
  and that turn (about 30 µs a call: asyncio's Task, then the submit) holds any ticker back
  for 300 ms whatever the executor.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gilfree.bench.contenders import Contender
from gilfree.bench.main_scripts import tasks
from gilfree.bench.workloads import (
    Baseline,
    Settings,
    Target,
    Timed,
    Workload,
    WrongResult,
    microseconds_per_trip,
    tasks_per_second,
)

ISSUE = 13
CONTENDERS = ("gilfree", "ppe", "tpe")
#: Concurrent awaits while the ticker runs, started this many at a time.
TICKER_RUNS = 10_000
TICKER_BURST = 100
TICKER_PERIOD_SECONDS = 0.001
#: The worst lateness the issue allows the ticker.
TICKER_LAG_LIMIT_SECONDS = 0.05


def _own_api(pool: object) -> bool:
    """Whether ``pool`` is gilfree's executor (awaited through its own API)."""
    import gilfree

    return isinstance(pool, gilfree.ProcessPoolExecutor)


async def _await_one(pool: Any, function: Any, argument: object) -> Any:
    if _own_api(pool):
        return await pool.run(function, argument)
    return await asyncio.get_running_loop().run_in_executor(pool, function, argument)


def measure_round_trip(_contender: Contender, pool: object, settings: Settings) -> float:
    """Time ``settings.round_trips`` sequential awaits of ``noop``."""
    noop = tasks().noop

    async def trips() -> float:
        started = time.perf_counter()
        for index in range(settings.round_trips):
            await _await_one(pool, noop, index)
        return time.perf_counter() - started

    return asyncio.run(trips())


def measure_map(_contender: Contender, pool: object, settings: Settings) -> float:
    """Time ``echo`` over ``range(settings.tiny_task_count)``, every result taken in a loop."""
    echo, count = tasks().echo, settings.tiny_task_count

    async def mapped() -> tuple[float, list[Any]]:
        started = time.perf_counter()
        if _own_api(pool):
            results = [result async for result in pool.amap(echo, range(count))]  # type: ignore[attr-defined]
        else:
            loop = asyncio.get_running_loop()
            calls = (loop.run_in_executor(pool, echo, index) for index in range(count))  # type: ignore[arg-type]
            results = list(await asyncio.gather(*calls))
        return time.perf_counter() - started, results

    elapsed, results = asyncio.run(mapped())
    if results != list(range(count)):
        raise WrongResult("the awaited map's results differ from its input")
    return elapsed


def measure_ticker_lag(_contender: Contender, pool: object, _settings: Settings) -> Timed:
    """The worst lateness of a 1 ms ticker while ``TICKER_RUNS`` awaits complete."""
    echo = tasks().echo

    async def lagging() -> tuple[float, float, int]:
        done = asyncio.Event()
        worst = 0.0
        ticks = 0

        async def ticker() -> None:
            nonlocal worst, ticks
            while not done.is_set():
                before = time.perf_counter()
                await asyncio.sleep(TICKER_PERIOD_SECONDS)
                worst = max(worst, time.perf_counter() - before - TICKER_PERIOD_SECONDS)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0.01)  # the ticker is running
        started = time.perf_counter()
        runs = []
        for first in range(0, TICKER_RUNS, TICKER_BURST):
            last = min(first + TICKER_BURST, TICKER_RUNS)
            runs += [asyncio.create_task(_await_one(pool, echo, i)) for i in range(first, last)]
            await asyncio.sleep(0)  # the loop runs what is ready, the ticker included
        results = await asyncio.gather(*runs)
        elapsed = time.perf_counter() - started
        done.set()
        await ticking
        if list(results) != list(range(TICKER_RUNS)):
            raise WrongResult("the awaited runs' results differ from their arguments")
        return worst, elapsed, ticks

    worst, elapsed, ticks = asyncio.run(lagging())
    return Timed(worst, f"{TICKER_RUNS} runs in {elapsed * 1e3:.0f} ms, {ticks} ticks")


def lag_milliseconds(seconds: float, _reference: float | None, _settings: Settings) -> str:
    """Format the ticker's worst lateness."""
    return f"{seconds * 1e3:.1f} ms worst lag"


def _lag_limit(_settings: Settings) -> float:
    return TICKER_LAG_LIMIT_SECONDS


ASYNCIO_WORKLOADS: tuple[Workload, ...] = (
    Workload(
        key="asyncio_round_trip",
        title="await run(noop) (others: run_in_executor)",
        measure=measure_round_trip,
        figure=microseconds_per_trip,
        targets=(Target("ppe", 5.0, "≥5× PPE run_in_executor", issue=ISSUE),),
        contenders=CONTENDERS,
        references=("ppe", "tpe"),
    ),
    Workload(
        key="asyncio_map",
        title="async for in amap(echo) (others: gather(run_in_executor))",
        sized_title=lambda settings: (
            f"amap(echo, range({settings.tiny_task_count:_})) (others: gather(run_in_executor))"
        ),
        measure=measure_map,
        figure=tasks_per_second,
        targets=(Target("ppe", 10.0, "≥10× PPE gather(run_in_executor)", issue=ISSUE),),
        contenders=CONTENDERS,
        references=("ppe", "tpe"),
        peer_repetitions=1,
    ),
    Workload(
        key="asyncio_ticker_lag",
        title=f"1 ms ticker's worst lag while {TICKER_RUNS:_} awaits complete",
        measure=measure_ticker_lag,
        figure=lag_milliseconds,
        targets=(Target("limit", 1.0, "≤50 ms", issue=ISSUE),),
        contenders=CONTENDERS,
        references=("limit", "ppe"),
        baseline=Baseline("limit", "limit (50 ms)", _lag_limit, computed=True),
        peer_repetitions=1,
    ),
)
