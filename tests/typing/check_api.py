"""What a type checker sees of gilfree's public API: ``make lint`` runs mypy ``--strict
--warn-unused-ignores`` over this folder (never pytest: nothing here runs).

Each ``assert_type`` is a type the API must give. Each line ending in ``# type: ignore[code]``
is a mistake the API must reject: were it accepted, the ignore would be unused, which
``--warn-unused-ignores`` reports as an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import assert_type

import gilfree
from gilfree.pool import AsyncResult, IMapIterator, MapResult


def square(x: int) -> int:
    return x * x


def greet(name: str, *, punctuation: str = "!") -> str:
    return name + punctuation


def add(x: int, y: float) -> float:
    return x + y


def setup(level: int, name: str) -> None:
    pass


def executor_calls(executor: gilfree.ProcessPoolExecutor) -> None:
    assert_type(executor.submit(square, 3), gilfree.Future[int])
    assert_type(executor.submit(greet, "a", punctuation="?"), gilfree.Future[str])
    assert_type(executor.submit(square, 3).result(), int)
    assert_type(executor.submit_with(greet, ("a",)), gilfree.Future[str])
    assert_type(executor.map(square, [1, 2]), Iterator[int])
    assert_type(executor.map(add, [1], [2.0]), Iterator[float])
    assert_type(executor.map(square, [1, 2], progress=True, total=2), Iterator[int])
    executor.submit(square, "3")  # type: ignore[arg-type]
    executor.submit(square)  # type: ignore[call-arg]
    executor.submit(greet, "a", exclamation="?")  # type: ignore[call-arg]


async def executor_awaits(executor: gilfree.ProcessPoolExecutor) -> None:
    assert_type(await executor.run(square, 3), int)
    assert_type(await executor.run(greet, "a", punctuation="?"), str)
    assert_type(await executor.run_with(square, (3,), kill_on_cancel=True), int)
    assert_type(executor.amap(square, [1, 2]), gilfree.AsyncMapIterator[int])
    async for result in executor.amap(add, [1], [2.0], ordered=False):
        assert_type(result, float)
    await executor.run(square, "3")  # type: ignore[arg-type]
    await executor.run(greet, "a", punctuation=1)  # type: ignore[arg-type]
    await executor.run_with(square, (3,), kill_on_cancel="yes")  # type: ignore[arg-type]
    async with executor as entered:
        assert_type(entered, gilfree.ProcessPoolExecutor)
    await executor.ashutdown(cancel_futures=True)


async def pool_awaits(pool: gilfree.Pool) -> None:
    assert_type(await pool.run(square, 3), int)
    assert_type(await pool.run_with(square, (3,), kill_on_cancel=True), int)
    async for result in pool.amap(square, range(3)):
        assert_type(result, int)
    await pool.run(square, "3")  # type: ignore[arg-type]
    async with pool as entered:
        assert_type(entered, gilfree.Pool)
    await pool.ashutdown()


def where_work_runs() -> None:
    assert_type(gilfree.executor_at("local", max_workers=2), gilfree.ProcessPoolExecutor)
    gilfree.executor_at(42)  # type: ignore[arg-type]


def executor_construction() -> None:
    gilfree.ProcessPoolExecutor(2, initializer=setup, initargs=(1, "a"))
    gilfree.ProcessPoolExecutor(2, None, setup, (1, "a"))
    gilfree.ProcessPoolExecutor(2, task_timeout=1.0, retries=2, backend="thread")
    gilfree.ProcessPoolExecutor(2, initializer=setup, initargs=("a", 1))  # type: ignore[arg-type]
    gilfree.ProcessPoolExecutor(2, initializer=setup)  # type: ignore[arg-type]


def pool_calls(pool: gilfree.Pool) -> None:
    assert_type(pool.apply(square, (3,)), int)
    assert_type(pool.apply_async(square, (3,)), AsyncResult[int])
    assert_type(pool.apply_async(square, (3,)).get(), int)
    assert_type(pool.map(square, range(3)), list[int])
    assert_type(pool.map_async(square, range(3)), MapResult[int])
    assert_type(pool.map_async(square, range(3)).get(), list[int])
    assert_type(pool.starmap(add, [(1, 2.0)]), list[float])
    assert_type(pool.imap(square, range(3)), IMapIterator[int])
    assert_type(pool.map(square, range(3), progress=lambda done, total: None), list[int])
    assert_type(next(pool.imap_unordered(square, range(3))), int)
    pool.map(square, ["a"])  # type: ignore[arg-type]
    pool.apply_async(square, (3,), callback=len)  # type: ignore[misc]
