"""What every cluster executor does (issue #14), run on each cluster: ``GILFREE_TEST_IMPL=dask``
and ``GILFREE_TEST_IMPL=ray`` (``make test-clusters``), on the session's cluster of two workers
(``support.clusters``). What only one engine does is in ``test_dask.py`` and ``test_ray.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import itertools
import os
import threading

import pytest

from conftest import IMPL, IS_CLUSTER
from support import clusters, tasks
from support.iterables import CountingEndless
from support.limits import RESULT_TIMEOUT

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not IS_CLUSTER, reason="run on each cluster: GILFREE_TEST_IMPL=dask, ray"),
    # distributed's own threads and sockets end with the cluster; its warnings are its own.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]


@pytest.fixture(scope="module")
def executor():
    the_executor = clusters.executor(IMPL)
    yield the_executor
    the_executor.shutdown(wait=True)


def test_calls_run_on_the_cluster_with_their_results(executor):
    assert executor.submit(tasks.square, 7).result(RESULT_TIMEOUT) == 49
    assert executor.submit(lambda a, b=1: a + b, 1, b=5).result(RESULT_TIMEOUT) == 6
    assert executor.submit(os.getpid).result(RESULT_TIMEOUT) != os.getpid()
    assert executor._max_workers == clusters.WORKERS  # the cluster's threads or CPUs


def test_identical_calls_all_run(executor):
    """Dask's own executor merges identical calls (``pure=True``); every call runs here."""
    futures = [executor.submit(tasks.unique_token) for _ in range(4)]
    tokens = {future.result(RESULT_TIMEOUT) for future in futures}
    assert len(tokens) == 4


def test_futures_work_with_wait_as_completed_and_asyncio(executor):
    futures = [executor.submit(tasks.square, x) for x in range(20)]
    _done, not_done = concurrent.futures.wait(futures, timeout=RESULT_TIMEOUT)
    assert not not_done
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == sorted(
        x * x for x in range(20)
    )

    async def main():
        wrapped = await asyncio.wrap_future(executor.submit(tasks.square, 3))
        ran = await executor.run(tasks.square, 4)
        mapped = [y async for y in executor.amap(tasks.square, range(10))]
        return wrapped, ran, mapped

    assert asyncio.run(main()) == (9, 16, [x * x for x in range(10)])


@pytest.mark.parametrize("chunksize", [None, 1, 64])
def test_map_keeps_order_and_chunks(executor, chunksize):
    results = list(executor.map(tasks.square, range(2000), chunksize=chunksize))
    assert results == [x * x for x in range(2000)]
    assert list(executor.map(tasks.add, range(5), [10] * 5)) == [10, 11, 12, 13, 14]


def test_map_reads_an_endless_generator_lazily(executor):
    endless = CountingEndless()

    results = executor.map(tasks.square, endless.items(), chunksize=2)
    taken = list(itertools.islice(results, 20))
    del results  # dropping the results stops the job
    gc.collect()
    assert taken == [x * x for x in range(20)]
    assert endless.read <= 20 + 4 * 2 * 2 + 2 + 1


def test_an_exception_keeps_its_type_and_remote_traceback(executor):
    with pytest.raises(tasks.CustomError) as raised:
        executor.submit(tasks.raise_custom_error, "boom").result(RESULT_TIMEOUT)
    assert raised.value.args == ("boom",)
    assert "raise_custom_error" in str(raised.value.__cause__)
    with pytest.raises(ValueError, match="bad value 3"):
        list(executor.map(tasks.raise_if_equal, range(6), [3] * 6))


def test_shutdown_can_cancel_what_has_not_started(tmp_path):
    gate = tmp_path / "gate"
    the_executor = clusters.executor(IMPL, max_workers=1)
    running = the_executor.submit(tasks.block_until_released, str(gate), "ran")
    pending = [the_executor.submit(tasks.square, x) for x in range(5)]
    the_executor.shutdown(wait=False, cancel_futures=True)
    gate.touch()
    assert running.result(RESULT_TIMEOUT) == "ran"
    assert all(future.cancelled() for future in pending)
    assert not running.cancel()


def test_a_value_the_cluster_cannot_send_fails_its_call_alone(executor):
    """A lock cannot be pickled: the call or map fails with the error gilfree raises on one
    machine, naming the argument or the map item (Dask's own is "Could not serialize object
    of type LLGExpr"), and the executor goes on (a refused submit once hung Dask's lane and
    then shutdown)."""
    from gilfree import SerializationError

    future = executor.submit(tasks.echo, threading.Lock())
    error = future.exception(RESULT_TIMEOUT)
    assert isinstance(error, SerializationError)
    assert str(error).startswith("args[0]: cannot send a thread lock to another process")
    with pytest.raises(SerializationError, match=r"^map item 4: cannot send a thread lock"):
        list(executor.map(tasks.echo, [0, 1, 2, 3, threading.Lock(), 5], chunksize=2))
    assert executor.submit(tasks.square, 8).result(RESULT_TIMEOUT) == 64


def test_a_task_changing_a_big_argument_changes_its_own_copy(executor):
    """A value of 1 MiB or more is placed on the cluster once; each call, and each map item,
    must still get a copy of its own, as from pickle (Dask handed every task the stored
    object, so each call saw the changes of the calls before it)."""
    import numpy

    big = numpy.zeros(200_000)  # 1.6 MB
    assert list(executor.map(tasks.add_one_in_place, [big] * 4)) == [1.0] * 4
    assert [
        executor.submit(tasks.add_one_in_place, big).result(RESULT_TIMEOUT) for _ in range(3)
    ] == [1.0] * 3
    assert big[0] == 0.0


def test_values_arrive_as_the_stdlib_sends_them(executor):
    """Read-only arrays arrive writeable, a big bytearray stays one, a record array one, as
    through the stdlib's executor (the clusters' own serializers kept arrays read-only, made
    bytes and plain arrays of them)."""
    import numpy

    small, big = numpy.arange(10.0), numpy.arange(200_000.0)
    small.flags.writeable = big.flags.writeable = False
    values = [small, big, bytearray(2 << 20), bytearray(8), tasks.make_record_array(100_000)]
    kinds = [
        executor.submit(tasks.kind_and_writeable, value).result(RESULT_TIMEOUT) for value in values
    ]
    assert kinds == [
        ("ndarray", True),
        ("ndarray", True),
        ("bytearray", None),
        ("bytearray", None),
        ("recarray", True),
    ]
    made = executor.submit(tasks.make_record_array, 100).result(RESULT_TIMEOUT)
    assert type(made).__name__ == "recarray" and made.flags.writeable


def test_a_result_or_exception_that_cannot_come_back_fails_its_call_alone(executor):
    """As on one machine: a result that cannot be pickled is a SerializationError naming it, an
    exception an UnpicklableExceptionError with its type and text (both left the call waiting
    for ever, and its lane with it)."""
    from gilfree import SerializationError, UnpicklableExceptionError

    error = executor.submit(tasks.return_lock).exception(RESULT_TIMEOUT)
    assert isinstance(error, SerializationError)
    assert str(error).startswith("result: cannot send a thread lock to another process")
    raised = executor.submit(tasks.raise_unpicklable_error).exception(RESULT_TIMEOUT)
    assert isinstance(raised, UnpicklableExceptionError)
    assert (raised.type_name, raised.text) == ("UnpicklableError", "cannot travel back")
    assert "raise_unpicklable_error" in str(raised.__cause__)
    # Its __init__ takes two arguments: rebuilt where an exception's state is pickled (Dask's
    # workers), else sent as UnpicklableExceptionError; it arrives either way.
    mismatched = executor.submit(tasks.raise_mismatched_init_error).exception(RESULT_TIMEOUT)
    assert "MismatchedInitError" in (
        type(mismatched).__name__,
        getattr(mismatched, "type_name", ""),
    )
    assert executor.submit(tasks.square, 6).result(RESULT_TIMEOUT) == 36


def test_an_argument_whose_attributes_raise_travels_as_it_is(executor):
    value = tasks.RaisingAttributes()
    kind = executor.submit(tasks.kind_and_writeable, value).result(RESULT_TIMEOUT)
    assert kind == ("RaisingAttributes", None)
