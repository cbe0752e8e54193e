"""asyncio (issue #13): ``await executor.run(...)``, ``run_with(..., kill_on_cancel=True)``,
``async for ... in executor.amap(...)``, ``async with`` and ``ashutdown``, on the executor and
Pool, with the blocking API's semantics and errors; completions reach the loop in batches.

Each test runs its coroutine with ``asyncio.run`` under a ``wait_for`` bound, so a lost
completion fails the test instead of hanging it. Timing figures (the round trip, a ticker's
lag while 10 000 runs complete) live in the benchmark (``python -m gilfree bench --only
asyncio``), not here.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import textwrap
import threading
import time
from multiprocessing.pool import MaybeEncodingError, RemoteTraceback

import pytest

from conftest import IS_THREAD, create_executor
from support import tasks, values
from support.iterables import CountingEndless
from support.limits import RESULT_TIMEOUT
from support.processes import run_script, shutdown_within_deadline, terminate_within_deadline
from support.values import NAMES, build

pytestmark = [pytest.mark.gilfree_only, pytest.mark.timeout(90)]


def run(coroutine):
    """Runs ``coroutine`` on a fresh loop, failing past RESULT_TIMEOUT."""
    return asyncio.run(asyncio.wait_for(coroutine, RESULT_TIMEOUT))


def make_pool(start_method, **kwargs):
    import gilfree

    if IS_THREAD:
        return gilfree.Pool(2, backend="thread", **kwargs)
    return gilfree.Pool(2, context=start_method, **kwargs)


@pytest.fixture
def pool(start_method):
    the_pool = make_pool(start_method)
    yield the_pool
    terminate_within_deadline([the_pool])


def check(name, received):
    values.check(name, received, pickled=not IS_THREAD)


# --- run -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_run_carries_every_kind_of_value(shared_executor, name):
    async def main():
        sent = await shared_executor.run(values.identity, build(name))
        built = await shared_executor.run(values.build_in_worker, name)
        return sent, built

    sent, built = run(main())
    check(name, sent)
    check(name, built)


def test_run_passes_every_keyword_to_the_function(shared_executor):
    """``run`` takes no keyword of its own, so none of ``fn``'s names is taken; ``run_with``
    takes ``fn``'s keywords in a dict."""

    async def main():
        direct = await shared_executor.run(
            tasks.echo, 1, kill_on_cancel=2, timeout=3, retries=4, fn=5
        )
        via_dict = await shared_executor.run_with(
            tasks.echo, (1,), {"kill_on_cancel": True, "args": 6}
        )
        lambda_result = await shared_executor.run(lambda a, b=0: a + b, 1, b=2)
        return direct, via_dict, lambda_result

    direct, via_dict, lambda_result = run(main())
    assert direct == ((1,), {"kill_on_cancel": 2, "timeout": 3, "retries": 4, "fn": 5})
    assert via_dict == ((1,), {"kill_on_cancel": True, "args": 6})
    assert lambda_result == 3


def test_an_awaited_error_keeps_its_type_and_remote_traceback(shared_executor):
    async def main():
        with pytest.raises(tasks.CustomError) as raised:
            await shared_executor.run(tasks.raise_custom_error, "boom")
        return raised.value

    error = run(main())
    assert error.args == ("boom",)
    if not IS_THREAD:
        assert "raise_custom_error" in str(error.__cause__)


def test_an_unsendable_argument_raises_through_await(shared_executor):
    async def main():
        await shared_executor.run(tasks.echo, threading.Lock())

    if IS_THREAD:
        assert run(main()) is None  # nothing is pickled between threads
        return
    import gilfree

    with pytest.raises(gilfree.SerializationError, match="args\\[0\\]"):
        run(main())


def test_run_after_shutdown_raises_as_submit_does(make_executor, start_method):
    executor = make_executor(max_workers=1, start_method=start_method)
    executor.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        run(executor.run(tasks.square, 2))


def test_run_with_checks_its_arguments(shared_executor):
    with pytest.raises(TypeError, match="kill_on_cancel must be True or False"):
        run(shared_executor.run_with(tasks.square, (2,), kill_on_cancel=1))
    with pytest.raises(ValueError, match="timeout must be more than 0"):
        run(shared_executor.run_with(tasks.square, (2,), timeout=0))


@pytest.mark.skipif(not IS_THREAD, reason="the thread backend's refusal")
def test_kill_on_cancel_is_refused_on_threads(shared_executor):
    with pytest.raises(ValueError, match="kill_on_cancel: process-only option"):
        run(shared_executor.run_with(tasks.square, (2,), kill_on_cancel=True))


def test_run_in_executor_and_wrap_future_keep_working(shared_executor):
    async def main():
        loop = asyncio.get_running_loop()
        in_executor = await loop.run_in_executor(shared_executor, tasks.square, 5)
        wrapped = await asyncio.wrap_future(shared_executor.submit(tasks.square, 6))
        return in_executor, wrapped

    assert run(main()) == (25, 36)


def test_many_concurrent_runs_complete(shared_executor):
    count = 10_000

    async def main():
        return await asyncio.gather(*(shared_executor.run(tasks.square, i) for i in range(count)))

    assert run(main()) == [i * i for i in range(count)]


def test_completions_that_arrive_while_the_loop_is_busy_share_one_wake_up(shared_executor):
    """Under load, completions reach the loop in batches (``LoopBridge``), not one
    ``call_soon_threadsafe`` each: while the loop's thread is busy, the results of 2000 runs
    arrive, and they cost a handful of wake-ups."""
    from gilfree._engine import aio

    count = 2000

    async def main():
        bridge = aio.bridge_for(asyncio.get_running_loop())
        runs = [asyncio.create_task(shared_executor.run(tasks.square, i)) for i in range(count)]
        await asyncio.sleep(0)  # every run is submitted
        before = bridge.wakeups
        time.sleep(1.0)  # the loop's thread is busy: the completions pile up meanwhile
        results = await asyncio.gather(*runs)
        return results, bridge.wakeups - before

    results, wakeups = run(main())
    assert results == [i * i for i in range(count)]
    assert wakeups <= count // 4, f"{wakeups} wake-ups for {count} results"


def test_a_bridge_hands_a_burst_over_in_bounded_drains():
    """1000 callbacks posted from another thread while the loop is blocked: one wake-up, and
    drains of at most DRAIN_BATCH callbacks, with the loop's other callbacks in between."""
    from gilfree._engine import aio

    async def main():
        loop = asyncio.get_running_loop()
        bridge = aio.LoopBridge(loop)
        order = []
        poster = threading.Thread(
            target=lambda: [bridge.post(order.append, i) for i in range(1000)]
        )
        poster.start()
        poster.join()  # in the loop's thread: nothing drains meanwhile
        loop.call_soon(order.append, "other")
        await asyncio.sleep(0.05)
        return order, bridge.wakeups

    order, wakeups = run(main())
    assert wakeups == 1
    assert [item for item in order if item != "other"] == list(range(1000))
    assert order.index("other") <= aio.DRAIN_BATCH  # not held up behind the whole burst


# --- cancellation --------------------------------------------------------------------------


def test_a_cancelled_run_that_started_finishes_and_its_result_is_dropped(
    make_executor, start_method, gate, tmp_path
):
    executor = make_executor(max_workers=1, start_method=start_method)
    started = gate.started_path()

    async def main():
        task = asyncio.create_task(
            executor.run(tasks.block_until_released, gate.path, "dropped", started)
        )
        await asyncio.to_thread(gate.wait_started, [started])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.release()
        return await executor.run(tasks.get_pid)

    first_pid = run(main())
    stats = executor.stats()
    assert sum(entry.tasks_done for entry in stats) == 2  # the cancelled call ran to its end
    assert sum(entry.crashes + entry.restarts for entry in stats) == 0
    if not IS_THREAD:
        assert first_pid in executor._processes


def test_a_cancelled_run_that_had_not_started_never_runs(
    make_executor, start_method, gate, tmp_path
):
    executor = make_executor(max_workers=1, start_method=start_method)
    started = gate.started_path()
    record = tmp_path / "ran"

    async def main():
        blocker = asyncio.create_task(
            executor.run(tasks.block_until_released, gate.path, "first", started)
        )
        await asyncio.to_thread(gate.wait_started, [started])
        queued = asyncio.create_task(executor.run(tasks.record_call, str(record)))
        await asyncio.sleep(0.05)  # the queued call is submitted, waiting for the worker
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        gate.release()
        return await blocker, await executor.run(tasks.square, 3)

    assert run(main()) == ("first", 9)
    assert not record.exists()


@pytest.mark.process_only
@pytest.mark.parametrize("queued_behind", [False, True], ids=["running", "queued-behind"])
def test_kill_on_cancel_kills_the_worker_and_the_pool_goes_on(
    make_executor, start_method, tmp_path, queued_behind
):
    """Cancelling the awaiting task kills the worker running the call: its pid is gone within
    1 s, nothing counts as a crash, and the next run succeeds on a fresh worker. A call sent
    behind another on its worker is killed once it starts, and the one before it is kept."""
    executor = make_executor(max_workers=1, start_method=start_method)
    pid_path = tmp_path / "pid"

    async def main():
        loop_pid = await executor.run(tasks.get_pid)
        ahead = None
        if queued_behind:  # the one given up is sent behind another on the same worker
            for _ in range(20):  # measured quick: the worker is sent two units at a time
                await executor.run(tasks.square, 1)
            ahead = asyncio.create_task(executor.run(tasks.sleep_and_return, 0.3, "kept"))
        doomed = asyncio.create_task(
            executor.run_with(
                tasks.write_pid_and_block,
                (str(pid_path), str(tmp_path / "never")),
                kill_on_cancel=True,
            )
        )
        if queued_behind:
            await asyncio.sleep(0.05)
            (slot,) = executor._engine._slots
            assert len(slot.inflight) == 2, "the call is not queued behind the other"
            doomed.cancel()  # sent behind ``ahead``, not started yet
            assert await ahead == "kept"
        else:
            await asyncio.to_thread(tasks.wait_for_file, str(pid_path), RESULT_TIMEOUT)
            doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        if not queued_behind:
            await asyncio.to_thread(tasks.wait_for_file, str(pid_path), RESULT_TIMEOUT)
            assert int(pid_path.read_text()) == loop_pid
        # Queued behind, the call is killed as soon as the engine learns that it started:
        # maybe before it wrote its pid. The worker is the one the first call ran on.
        worker_pid = loop_pid
        deadline = time.monotonic() + 1.0
        while _alive(worker_pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not _alive(worker_pid), "the killed worker is still there after 1 s"
        return worker_pid, await executor.run(tasks.get_pid)

    killed_pid, next_pid = run(main())
    assert next_pid != killed_pid
    stats = executor.stats()
    assert (sum(e.crashes for e in stats), sum(e.timeouts for e in stats)) == (0, 0)
    assert sum(e.restarts for e in stats) == 1


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:  # gone before the open (FileNotFoundError) or the read (ProcessLookupError)
        return False


def test_shutdown_cancelling_futures_cancels_their_awaits(make_executor, start_method, gate):
    executor = make_executor(max_workers=1, start_method=start_method)
    started = gate.started_path()

    async def main():
        running = asyncio.create_task(
            executor.run(tasks.block_until_released, gate.path, "ran", started)
        )
        await asyncio.to_thread(gate.wait_started, [started])
        pending = asyncio.create_task(executor.run(tasks.square, 2))
        await asyncio.sleep(0.05)
        executor.shutdown(wait=False, cancel_futures=True)
        with pytest.raises(asyncio.CancelledError):
            await pending
        gate.release()
        return await running

    assert run(main()) == "ran"


# --- amap ----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [None, 1, 3])
def test_amap_gives_results_in_order(shared_executor, chunksize):
    async def main():
        ordered = [
            y async for y in shared_executor.amap(tasks.square, range(100), chunksize=chunksize)
        ]
        listed = [y async for y in shared_executor.amap(tasks.square, list(range(50)))]
        starred = [y async for y in shared_executor.amap(tasks.add, range(5), [10] * 5)]
        return ordered, listed, starred

    ordered, listed, starred = run(main())
    assert ordered == [x * x for x in range(100)]
    assert listed == [x * x for x in range(50)]
    assert starred == [10, 11, 12, 13, 14]


@pytest.mark.process_only  # threads get the object itself
@pytest.mark.parametrize("chunksize", [None, 1])
def test_amap_sends_each_state_of_an_object_the_input_refills(shared_executor, chunksize):
    """Each item is encoded before the next is read (it was read one ahead, and with adaptive
    chunks several items of one chunk were the one object)."""

    def refilled():
        row = [0]
        for number in range(30):
            row[0] = number
            yield row

    async def main():
        echoed = shared_executor.amap(tasks.echo, refilled(), chunksize=chunksize)
        return [args async for args, _kwargs in echoed]

    assert run(main()) == [([number],) for number in range(30)]


def test_amap_unordered_gives_every_result_once(shared_executor):
    async def main():
        items = (x for x in range(1000))
        return [y async for y in shared_executor.amap(tasks.square, items, ordered=False)]

    assert sorted(run(main())) == [x * x for x in range(1000)]


@pytest.mark.parametrize("ordered", [True, False])
def test_tasks_sharing_one_amap_iterator_share_its_results_and_all_end(shared_executor, ordered):
    # A fan-out of consumers over one iterator: a second waiting task used to replace the
    # first one's wake-up, and the first waited for ever.
    async def main():
        results = shared_executor.amap(
            tasks.slow_square, range(200), [0.001] * 200, ordered=ordered
        )

        async def consume():
            got = []
            async for result in results:
                got.append(result)
                await asyncio.sleep(0)  # let the other consumer take some
            return got

        return await asyncio.wait_for(asyncio.gather(consume(), consume()), RESULT_TIMEOUT)

    first, second = run(main())
    assert sorted(first + second) == [x * x for x in range(200)]
    assert first and second


SLOW_TEMPLATE_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import json
    import sys
    import time

    import gilfree

    if __name__ != "__main__":
        time.sleep(1.5)  # the template's run of the top level: heavy imports, loading data


    def square(x):
        return x * x


    async def ticker(lags):
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - started)


    async def main(how):
        lags = []
        ticking = asyncio.create_task(ticker(lags))
        await asyncio.sleep(0.05)
        if how == "pool":
            async with gilfree.Pool(2) as pool:
                lags.clear()
                result = [x async for x in pool.amap(square, range(3))]
        else:
            async with gilfree.ProcessPoolExecutor(2) as executor:
                lags.clear()
                if how == "run":
                    result = await executor.run(square, 3)
                else:
                    result = [x async for x in executor.amap(square, range(3))]
        ticking.cancel()
        print(json.dumps({"result": result, "worst_lag": max(lags)}))


    if __name__ == "__main__":
        asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.process_only
@pytest.mark.parametrize("how", ["run", "amap", "pool"])
def test_the_first_awaited_call_leaves_the_loop_running_while_the_template_boots(tmp_path, how):
    # Encoding a function of __main__ waits for the template to report the script's names:
    # the first run or amap used to wait for that in the loop's thread, the whole boot long.
    import json

    returncode, stdout, stderr = run_script(tmp_path, SLOW_TEMPLATE_SCRIPT, how)
    assert returncode == 0, stderr
    output = json.loads(stdout)
    assert output["result"] in (9, [0, 1, 4])
    assert output["worst_lag"] < 0.75, output  # the boot takes 1.5 s


SHUTDOWN_WHILE_THE_TEMPLATE_BOOTS_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys
    import time

    import gilfree

    if __name__ != "__main__":
        time.sleep(1.0)  # the template's run of the top level


    def square(x):
        return x * x


    async def main(cancel):
        async with gilfree.ProcessPoolExecutor(2) as executor:
            calls = [asyncio.create_task(executor.run(square, x)) for x in range(4)]
            await asyncio.sleep(0.1)  # each call awaits the template now
            if cancel:
                await executor.ashutdown(cancel_futures=True)
        results = await asyncio.gather(*calls, return_exceptions=True)
        print([type(result).__name__ if isinstance(result, BaseException) else result
               for result in results])


    if __name__ == "__main__":
        asyncio.run(main(sys.argv[1] == "cancel"))
    """
)


@pytest.mark.process_only
@pytest.mark.parametrize(
    ("how", "expected"),
    [("wait", "[0, 1, 4, 9]"), ("cancel", str(["CancelledError"] * 4))],
)
def test_a_shutdown_while_the_template_boots_waits_for_the_calls_awaited(tmp_path, how, expected):
    """Calls awaited before the shutdown, still waiting for the template to boot, run (or are
    cancelled, with ``cancel_futures``), as once the template is up; they failed with
    "cannot schedule new futures after shutdown"."""
    returncode, stdout, stderr = run_script(tmp_path, SHUTDOWN_WHILE_THE_TEMPLATE_BOOTS_SCRIPT, how)
    assert returncode == 0, stderr
    assert stdout == f"{expected}\n"


AMAP_BEFORE_A_SHUTDOWN_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import gc
    import sys
    import time

    import gilfree

    if __name__ != "__main__":
        time.sleep(0.5)  # the template's run of the top level


    def square(x):
        return x * x


    read = []


    def numbers():
        for x in range(100):
            read.append(x)
            yield x


    async def main(how):
        if how in ("pool", "terminate"):
            pool = gilfree.Pool(2)
            squares = pool.amap(square, numbers())
            pool.close() if how == "pool" else pool.terminate()
            try:
                result = [x async for x in squares]
            except Exception as error:
                print(type(error).__name__, error)
                return
            pool.join()
        else:
            executor = gilfree.ProcessPoolExecutor(2)
            squares = executor.amap(square, numbers())
            if how == "dropped":
                del squares
                gc.collect()  # the reader's start holds it in a cycle until its job begins
            await executor.ashutdown(wait=True, cancel_futures=how == "cancel")
            try:
                result = [] if how == "dropped" else [x async for x in squares]
            except Exception as error:
                print(type(error).__name__, error)
                return
        print(sum(result), len(read))


    if __name__ == "__main__":
        asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.process_only
@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("executor", "328350 100"),
        ("pool", "328350 100"),
        ("cancel", "CancelledError"),
        ("terminate", "CancelledError the pool was terminated"),
        ("dropped", "0 0"),
    ],
)
def test_an_amap_made_before_a_shutdown_while_the_template_boots_runs(tmp_path, how, expected):
    """An ``amap`` made while the template boots starts at its first ``__anext__``; made before
    a shutdown and read after it, it raised "cannot schedule new futures after shutdown",
    where one made once the template is up runs (shutdown queues the whole input, or cancels
    it with ``cancel_futures``, as terminate does). One dropped unread is not started."""
    returncode, stdout, stderr = run_script(tmp_path, AMAP_BEFORE_A_SHUTDOWN_SCRIPT, how)
    assert returncode == 0, stderr
    assert stdout.startswith(expected), stdout


@pytest.mark.parametrize("name", ["ndarray_2d", "ndarray_large", "dataframe", "hostile"])
def test_amap_carries_values_users_send(shared_executor, name):
    async def main():
        return [y async for y in shared_executor.amap(values.identity, [build(name)] * 3)]

    for received in run(main()):
        check(name, received)


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_a_parked_amap_goes_on_when_its_reader_moves_on(shared_executor, ordered):
    """The reader pauses until the window is full and the job parks, and the collector, with
    nothing outstanding, goes idle; taking results again resumes the job, which must wake the
    collector, since nobody else collects for an ``amap``."""

    async def main():
        results = []
        async for y in shared_executor.amap(tasks.square, range(40), chunksize=1, ordered=ordered):
            results.append(y)
            if len(results) == 1:
                await asyncio.sleep(0.3)
        return results

    assert sorted(run(main())) == [x * x for x in range(40)]


def test_amap_of_an_empty_input_ends_at_once(shared_executor):
    async def main():
        return [y async for y in shared_executor.amap(tasks.square, iter(()))]

    assert run(main()) == []


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_amap_reads_an_endless_input_lazily_with_bounded_read_ahead(shared_executor, ordered):
    """Taking 20 results of an endless generator reads at most a window of chunks more (4
    chunks per worker, of ``chunksize`` items, plus the one item kept in hand); leaving the
    loop stops the job."""
    endless = CountingEndless()
    taken = []

    async def main():
        results = shared_executor.amap(tasks.square, endless.items(), chunksize=2, ordered=ordered)
        async for y in results:
            taken.append(y)
            if len(taken) == 20:
                break
        await results.aclose()
        await asyncio.sleep(0.1)

    run(main())
    read = endless.read
    assert len(taken) == 20
    assert read <= 20 + 4 * 2 * 2 + 2 + 1, f"{read} items read for 20 taken"
    if ordered:
        assert taken == [x * x for x in range(20)]


@pytest.mark.parametrize("api", ["executor", "pool"])
@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_leaving_an_amap_loop_stops_its_work_and_shutdown_runs_none_of_the_rest(
    make_executor, pool, start_method, api, ordered
):
    """``break`` out of ``async for`` closes nothing (Python calls no ``aclose``), but it
    drops the iterator, which stops the job: the rest of a long input is never read, neither
    while the pool is open nor when ``ashutdown`` waits for the outstanding work. The job must
    not keep its reader alive, or the rest would run at shutdown."""
    mapper = pool if api == "pool" else make_executor(max_workers=2, start_method=start_method)
    counted = CountingEndless()

    async def main():
        items = itertools.islice(counted.items(), 5000)
        taken = 0
        async for _ in mapper.amap(tasks.square, items, chunksize=1, ordered=ordered):
            taken += 1
            if taken == 20:
                break
        await asyncio.sleep(0.3)  # a job that went on would read on meanwhile
        read_while_open = counted.read
        await mapper.ashutdown()
        return read_while_open

    read_while_open = run(main())
    assert read_while_open <= 100, f"{read_while_open} of 5000 items read for 20 taken"
    assert counted.read <= 100, f"{counted.read} of 5000 items read once shut down"


ABANDONED_ENDLESS_AMAP_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import itertools
    import sys

    import gilfree

    def square(x):
        return x * x

    async def main(method):
        where = {"backend": method} if method == "thread" else {"start_method": method}
        for ordered in (True, False):
            async with gilfree.ProcessPoolExecutor(2, **where) as executor:
                async for x in executor.amap(square, itertools.count(), ordered=ordered):
                    if x > 2500:
                        break
                await asyncio.sleep(0.3)  # the job parks, its window full
            pool_where = {"backend": "thread"} if method == "thread" else {"context": method}
            pool = gilfree.Pool(2, **pool_where)
            async for x in pool.amap(square, itertools.count(), ordered=ordered):
                if x > 2500:
                    break
            await asyncio.sleep(0.3)
            await pool.ashutdown()
        print("done")

    if __name__ == "__main__":
        asyncio.run(main(sys.argv[1]))
    """
)


def test_shutdown_after_leaving_an_amap_of_an_endless_input_returns(tmp_path, start_method):
    """Leaving ``async for`` over an endless input, then ``async with`` (or ``ashutdown``),
    ends: the shutdown runs none of the endless rest. In a script: a hang is a timeout."""
    returncode, stdout, stderr = run_script(tmp_path, ABANDONED_ENDLESS_AMAP_SCRIPT, start_method)
    assert returncode == 0, stderr
    assert stdout.strip() == "done"


def test_amap_raises_the_first_failure_after_the_results_before_it(shared_executor):
    async def main():
        taken = []
        with pytest.raises(ValueError, match="bad") as raised:
            async for y in shared_executor.amap(tasks.raise_if_equal, range(10), [4] * 10):
                taken.append(y)
        return taken, raised.value

    taken, error = run(main())
    assert taken == [0, 1, 2, 3]
    if not IS_THREAD:
        assert "raise_if_equal" in str(error.__cause__)


def test_amap_raises_the_inputs_own_error_in_its_turn(shared_executor):
    def failing_input():
        yield 1
        yield 2
        raise KeyError("input broke")

    async def main():
        taken = []
        with pytest.raises(KeyError, match="input broke"):
            async for y in shared_executor.amap(tasks.square, failing_input(), chunksize=1):
                taken.append(y)
        return taken

    assert run(main()) == [1, 4]


def test_a_cancelled_amap_reader_stops_its_job(shared_executor):
    endless = CountingEndless()

    async def main():
        async def consume():
            async for _ in shared_executor.amap(
                tasks.sleep_and_return, endless.items(), chunksize=1
            ):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)
        read = endless.read
        await asyncio.sleep(0.2)
        return read, endless.read

    before, after = run(main())
    assert after == before  # nothing more was read once the reader went away


# --- lifecycle -----------------------------------------------------------------------------


def test_async_with_shuts_the_executor_down(start_method):
    executor = create_executor(max_workers=2, start_method=start_method)

    async def main():
        async with executor as entered:
            assert entered is executor
            return await executor.run(tasks.get_pid)

    try:
        run(main())
        with pytest.raises(RuntimeError, match="after shutdown"):
            executor.submit(tasks.square, 2)
        if not IS_THREAD:
            assert not any(process.is_alive() for process in executor._processes.values())
    finally:
        shutdown_within_deadline([executor])


def test_ashutdown_waits_without_blocking_the_loop(make_executor, start_method, gate):
    """While ``ashutdown`` waits for a running task, the loop keeps running other tasks."""
    executor = make_executor(max_workers=1, start_method=start_method)
    started = gate.started_path()

    async def main():
        future = executor.submit(tasks.block_until_released, gate.path, "done", started)
        await asyncio.to_thread(gate.wait_started, [started])
        shutting = asyncio.create_task(executor.ashutdown())
        ticks = 0
        while ticks < 10:
            await asyncio.sleep(0.01)
            ticks += 1
        assert not shutting.done()
        gate.release()
        await shutting
        return future.result(timeout=0), ticks

    assert run(main()) == ("done", 10)


def test_ashutdown_can_cancel_the_pending_futures(make_executor, start_method, gate):
    executor = make_executor(max_workers=1, start_method=start_method)
    started = gate.started_path()

    async def main():
        running = executor.submit(tasks.block_until_released, gate.path, "done", started)
        await asyncio.to_thread(gate.wait_started, [started])
        pending = executor.submit(tasks.square, 3)
        shutting = asyncio.create_task(executor.ashutdown(cancel_futures=True))
        await asyncio.sleep(0.05)
        gate.release()
        await shutting
        return running.result(timeout=0), pending.cancelled()

    assert run(main()) == ("done", True)


# --- Pool ----------------------------------------------------------------------------------


def test_pool_run_and_amap(pool):
    async def main():
        single = await pool.run(tasks.square, 7)
        keywords = await pool.run(tasks.echo, 1, kill_on_cancel=2)
        mapped = [y async for y in pool.amap(tasks.square, range(20))]
        unordered = [y async for y in pool.amap(tasks.square, range(20), ordered=False)]
        return single, keywords, mapped, unordered

    single, keywords, mapped, unordered = run(main())
    assert single == 49
    assert keywords == ((1,), {"kill_on_cancel": 2})
    assert mapped == [x * x for x in range(20)]
    assert sorted(unordered) == mapped


def test_pool_errors_are_the_blocking_apis(pool):
    async def main():
        with pytest.raises(tasks.CustomError) as raised:
            await pool.run(tasks.raise_custom_error, "x")
        if not IS_THREAD:
            assert type(raised.value.__cause__) is RemoteTraceback
            with pytest.raises(MaybeEncodingError):
                await pool.run(tasks.return_lock)
            with pytest.raises(MaybeEncodingError):
                async for _ in pool.amap(lambda _: threading.Lock(), [1], chunksize=1):
                    pass
        with pytest.raises(ValueError, match="bad"):
            async for _ in pool.amap(tasks.raise_value_error, ["bad"]):
                pass

    run(main())


def test_pool_async_with_terminates_and_ashutdown_joins(start_method):
    async def main():
        async with make_pool(start_method) as entered:
            first = await entered.run(tasks.square, 2)
        with pytest.raises(ValueError, match="Pool not running"):
            await entered.run(tasks.square, 2)
        other = make_pool(start_method)
        result = other.apply_async(tasks.sleep_and_return, (0.1, "finished"))
        await other.ashutdown()
        return first, result.get(timeout=0), entered, other

    first, finished, entered, other = run(main())
    assert (first, finished) == (4, "finished")
    terminate_within_deadline([entered, other])


def test_a_finished_loop_is_not_kept_alive(shared_executor):
    """The bridge of each loop is kept only as long as the loop lives."""
    import gc
    import weakref

    loops = []

    async def main():
        loops.append(weakref.ref(asyncio.get_running_loop()))
        return await shared_executor.run(tasks.square, 4)

    assert run(main()) == 16
    gc.collect()
    assert loops[0]() is None


def test_loops_on_other_threads_get_their_own_completions(shared_executor):
    """Two event loops, each on its own thread, await the same executor at once."""
    outcomes = {}

    def loop_thread(tag):
        async def main():
            return await asyncio.gather(
                *(shared_executor.run(tasks.add, tag, i) for i in range(200))
            )

        outcomes[tag] = run(main())

    threads = [threading.Thread(target=loop_thread, args=(tag,)) for tag in (1000, 2000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RESULT_TIMEOUT)
    assert outcomes == {tag: [tag + i for i in range(200)] for tag in (1000, 2000)}


def test_no_task_runs_in_the_event_loops_thread(shared_executor):
    """Work goes to workers: a thread backend's task runs on a pool thread, a process's in
    another process."""

    async def main():
        return await shared_executor.run(_where)

    pid, thread_id = run(main())
    if IS_THREAD:
        assert thread_id != threading.get_ident()
    else:
        assert pid != os.getpid()


def _where():
    return os.getpid(), threading.get_ident()


NOTEBOOK_CELLS = [
    "import gilfree\nexecutor = gilfree.ProcessPoolExecutor(2)",
    "first = await executor.run(abs, -3)\n"
    "values = [x async for x in executor.amap(abs, range(-5, 0))]",
    "await executor.ashutdown()\nprint(first, values)",
]


@pytest.mark.process_only
def test_top_level_await_in_a_notebook(tmp_path):
    """In a notebook (IPython's loop, top-level ``await``): ``run``, ``amap`` and
    ``ashutdown``."""
    from support.notebooks import run_notebook

    assert run_notebook(tmp_path, NOTEBOOK_CELLS).strip() == "3 [5, 4, 3, 2, 1]"
