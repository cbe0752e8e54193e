"""Progress (issue #13): ``progress=`` on the executor's ``map`` and ``amap``, and on
``Pool.map`` / ``starmap`` / ``imap`` / ``imap_unordered`` / ``amap``: a tqdm bar
(``tqdm.auto``), a tqdm class, or a callable ``(done, total)``.

What is checked: counts never go down and end at the total (from ``len()``, a length hint,
``total=``, or the input's end); items are counted one by one, and a long chunk moves the count
while it runs (its worker reports); the display refreshes at most 10 times a second; tqdm's
``process_map`` under ``python -m gilfree run``; the widget in a notebook; the errors.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from conftest import IS_THREAD
from support import tasks
from support.limits import RESULT_TIMEOUT, SCRIPT_TIMEOUT
from support.notebooks import notebook_outputs
from support.processes import run_script, terminate_within_deadline

pytestmark = [pytest.mark.gilfree_only, pytest.mark.timeout(90)]


class Recorder:
    """A ``progress=`` callable: records ``(done, total, time)`` of each call, and checks it is
    called from one thread at a time."""

    def __init__(self):
        self.calls = []
        self._lock = threading.Lock()

    def __call__(self, done, total):
        assert self._lock.acquire(blocking=False), "called from two threads at once"
        try:
            self.calls.append((done, total, time.monotonic()))
        finally:
            self._lock.release()

    def counts(self):
        return [done for done, _, _ in self.calls]

    def check_complete(self, total):
        counts = self.counts()
        assert counts == sorted(counts), f"the count went down: {counts}"
        assert counts[0] == 0 and counts[-1] == total, counts
        assert self.calls[-1][1] == total


@pytest.fixture
def pool(start_method):
    import gilfree

    the_pool = (
        gilfree.Pool(2, backend="thread") if IS_THREAD else gilfree.Pool(2, context=start_method)
    )
    yield the_pool
    terminate_within_deadline([the_pool])


# --- what is counted -------------------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [None, 1, 7])
def test_executor_map_counts_every_item(shared_executor, chunksize):
    progress = Recorder()
    results = list(
        shared_executor.map(tasks.square, range(500), chunksize=chunksize, progress=progress)
    )
    assert results == [x * x for x in range(500)]
    progress.check_complete(500)


def test_a_long_chunk_moves_the_count_while_it_runs(shared_executor):
    """One chunk of 10 000 items (about 0.5 s): its worker's reports move the count before
    the chunk ends, by items, not by chunk."""
    progress = Recorder()
    results = list(
        shared_executor.map(tasks.tick, range(10_000), chunksize=10_000, progress=progress)
    )
    assert results == list(range(10_000))
    progress.check_complete(10_000)
    between = [done for done in progress.counts() if 0 < done < 10_000]
    assert between, f"no count while the chunk ran: {progress.counts()}"


def test_the_display_refreshes_at_most_ten_times_a_second(shared_executor):
    progress = Recorder()
    list(shared_executor.map(tasks.tick, range(10_000), chunksize=50, progress=progress))
    times = [at for _, _, at in progress.calls[:-1]]  # the final count comes at once
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 0.099 for gap in gaps), gaps
    progress.check_complete(10_000)


class Hinted:
    """An iterator of ``range(count)`` with no ``len()``, whose length hint says ``hint``."""

    def __init__(self, count, hint):
        self._items = iter(range(count))
        self._hint = hint

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._items)

    def __length_hint__(self):
        return self._hint


def test_the_total_comes_from_len_then_the_hint_then_total_then_the_inputs_end(pool):
    def generator(count):
        yield from range(count)

    totals = {}
    for name, iterable, total in [
        ("len", list(range(30)), None),
        ("hint", Hinted(30, 30), None),
        ("given", generator(30), 30),
        ("input end", generator(30), None),
    ]:
        progress = Recorder()
        assert list(pool.imap(tasks.square, iterable, progress=progress, total=total)) == [
            x * x for x in range(30)
        ]
        progress.check_complete(30)
        totals[name] = progress.calls[0][1]
    assert totals == {"len": 30, "hint": 30, "given": 30, "input end": None}


def test_a_total_too_small_is_corrected_at_the_inputs_end_and_the_display_stays_open(
    shared_executor, pool
):
    """The display closed once the count reached the hint, a third of the way through (small
    chunks: the count reaches the hint before the input's end is read)."""
    squares = [x * x for x in range(300)]
    for run in (
        lambda progress: list(
            pool.imap(tasks.square, Hinted(300, 100), progress=progress, chunksize=10)
        ),
        lambda progress: sorted(
            pool.imap_unordered(tasks.square, Hinted(300, 100), progress=progress, chunksize=10)
        ),
        lambda progress: list(
            pool.imap(tasks.square, iter(range(300)), progress=progress, total=100, chunksize=10)
        ),
    ):
        progress = Recorder()
        assert run(progress) == squares
        progress.check_complete(300)

    async def amap(progress):
        return [
            y
            async for y in shared_executor.amap(
                tasks.square, Hinted(300, 100), progress=progress, chunksize=10
            )
        ]

    progress = Recorder()
    assert asyncio.run(amap(progress)) == squares
    progress.check_complete(300)


def test_a_generator_with_no_total_gets_it_when_it_runs_out(pool):
    progress = Recorder()
    results = list(pool.imap_unordered(tasks.square, (x for x in range(200)), progress=progress))
    assert sorted(results) == [x * x for x in range(200)]
    progress.check_complete(200)
    assert progress.calls[0][1] is None


@pytest.mark.parametrize("api", ["map", "map_async", "starmap", "imap", "imap_unordered"])
def test_every_pool_map_counts_its_items(pool, api):
    progress = Recorder()
    if api == "starmap":
        results = pool.starmap(tasks.add, [(x, 1) for x in range(100)], progress=progress)
        expected = [x + 1 for x in range(100)]
    elif api == "map_async":
        results = pool.map_async(tasks.square, range(100), progress=progress).get(RESULT_TIMEOUT)
        expected = [x * x for x in range(100)]
    else:
        results = list(getattr(pool, api)(tasks.square, range(100), progress=progress))
        expected = [x * x for x in range(100)]
    assert sorted(results) == expected
    progress.check_complete(100)


def test_amap_counts_its_items(shared_executor, pool):
    async def main():
        first = Recorder()
        second = Recorder()
        a = [y async for y in shared_executor.amap(tasks.square, range(50), progress=first)]
        b = [y async for y in pool.amap(tasks.square, range(50), progress=second)]
        return a, b, first, second

    a, b, first, second = asyncio.run(asyncio.wait_for(main(), RESULT_TIMEOUT))
    assert a == b == [x * x for x in range(50)]
    first.check_complete(50)
    second.check_complete(50)


def test_an_empty_input_shows_a_complete_count_of_zero(shared_executor):
    progress = Recorder()
    assert list(shared_executor.map(tasks.square, [], progress=progress)) == []
    assert progress.counts() == [0]


def test_a_failing_map_stops_its_display(shared_executor):
    progress = Recorder()
    with pytest.raises(ValueError, match="bad"):
        list(shared_executor.map(tasks.raise_if_equal, range(20), [5] * 20, progress=progress))
    counts = progress.counts()
    assert counts == sorted(counts)
    calls = len(progress.calls)
    time.sleep(0.3)
    assert len(progress.calls) == calls  # closed: nothing more is shown


class FailingDisplay(Recorder):
    """A ``progress=`` callable that raises once the count has moved."""

    def __call__(self, done, total):
        super().__call__(done, total)
        if done > 0:
            raise RuntimeError(f"display bug at {done}")


@pytest.mark.parametrize("reader", ["map", "amap", "pool"])
def test_a_display_that_raises_is_reported_once_and_the_work_goes_on(
    shared_executor, pool, reader, capfd
):
    # Shown from the thread collecting every call's results: raising there used to end that
    # thread, and every later call waited for ever.
    progress = FailingDisplay()
    if reader == "map":
        results = shared_executor.map(tasks.slow_square, range(60), [0.002] * 60, progress=progress)
        time.sleep(0.2)  # nobody reads: the collector thread shows the count
        got = list(results)
    elif reader == "pool":
        pending = pool.starmap_async(
            tasks.slow_square, [(n, 0.002) for n in range(60)], progress=progress
        )
        got = pending.get(RESULT_TIMEOUT)
    else:

        async def read():
            work = shared_executor.amap(
                tasks.slow_square, range(60), [0.002] * 60, progress=progress
            )
            return [result async for result in work]

        got = asyncio.run(asyncio.wait_for(read(), RESULT_TIMEOUT))
    assert got == [n * n for n in range(60)]
    assert shared_executor.submit(tasks.square, 7).result(timeout=RESULT_TIMEOUT) == 49
    counts = progress.counts()
    assert counts[0] == 0 and len([count for count in counts if count > 0]) == 1, counts
    error = capfd.readouterr().err
    assert error.count("Exception in a gilfree progress display") == 1, error
    assert "RuntimeError: display bug at" in error


# --- tqdm ------------------------------------------------------------------------------------


def recording_tqdm(bars):
    """A tqdm class writing to os.devnull, each bar made appended to ``bars``."""
    tqdm = pytest.importorskip("tqdm")

    class Recorded(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed below
            super().__init__(*args, **kwargs)
            bars.append(self)

        def close(self):
            super().close()
            self.fp.close()

    return Recorded


def test_a_tqdm_class_gets_a_bar_that_ends_complete(shared_executor):
    bars = []
    recorded = recording_tqdm(bars)
    list(shared_executor.map(tasks.square, range(300), progress=recorded))
    [bar] = bars
    assert (bar.n, bar.total) == (300, 300)
    assert bar.disable  # closed


def test_leaving_an_amap_loop_closes_its_bar(make_executor, start_method, pool):
    """``break`` out of ``async for`` drops the iterator, which stops its job and closes its
    bar, with the pool still open."""
    bars = []
    recorded = recording_tqdm(bars)
    executor = make_executor(max_workers=2, start_method=start_method)

    async def main():
        for mapper in (executor, pool):
            items = (x for x in range(10_000))
            async for _ in mapper.amap(tasks.square, items, chunksize=1, progress=recorded):
                break

    asyncio.run(asyncio.wait_for(main(), RESULT_TIMEOUT))
    assert len(bars) == 2
    assert all(bar.disable for bar in bars), [bar.n for bar in bars]  # closed


def test_a_partial_of_a_tqdm_class_gets_a_bar_with_its_options(shared_executor):
    import functools

    bars = []
    recorded = functools.partial(recording_tqdm(bars), desc="squares", leave=False)
    assert list(shared_executor.map(tasks.square, range(50), progress=recorded)) == [
        n * n for n in range(50)
    ]
    (bar,) = bars
    assert (bar.desc, bar.leave, bar.n, bar.total) == ("squares", False, 50, 50)


def test_progress_true_without_tqdm_says_what_to_install(shared_executor, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import tqdm.auto raises ImportError
    with pytest.raises(ImportError, match="pip install tqdm"):
        shared_executor.map(tasks.square, range(3), progress=True)


def test_bad_progress_and_total_are_refused(shared_executor, pool):
    with pytest.raises(TypeError, match="progress must be True, False, a tqdm class"):
        shared_executor.map(tasks.square, range(3), progress="yes")
    with pytest.raises(ValueError, match="total must be a number of items"):
        pool.map(tasks.square, range(3), progress=Recorder(), total=-1)


BAR_SCRIPT = """
import gilfree

def square(x):
    return x * x

if __name__ == "__main__":
    with gilfree.ProcessPoolExecutor(2) as executor:
        results = list(executor.map(square, range(300), progress=True))
    with gilfree.Pool(2) as pool:
        results += list(pool.imap(square, (x for x in range(200)), progress=True))
    print(len(results))
"""


@pytest.mark.process_only
def test_progress_true_in_a_script_draws_tqdm_bars_that_end_complete(tmp_path):
    pytest.importorskip("tqdm")
    code, out, err = run_script(tmp_path, BAR_SCRIPT)
    assert code == 0, err
    assert out.strip() == "500"
    shown = [part.split("|")[2].split()[0] for part in re.split("[\r\n]", err) if "|" in part]
    assert [count for count in shown if count.endswith("/300")][-1] == "300/300", shown
    assert shown[-1] == "200/200", shown


TQDM_SCRIPT = """
from tqdm.contrib.concurrent import process_map

def square(x):
    return x * x

if __name__ == "__main__":
    results = process_map(square, range(200), max_workers=2)
    assert results == [x * x for x in range(200)], results[:5]
    print("results ok")
"""


@pytest.mark.process_only
def test_tqdm_process_map_under_gilfree_run_gives_a_complete_bar(tmp_path):
    """``process_map`` hands the workers an ``mp.RLock()`` as initargs and counts its bar by
    wrapping ``submit``: both must work with gilfree's executor swapped in."""
    pytest.importorskip("tqdm")
    script = tmp_path / "bar.py"
    script.write_text(TQDM_SCRIPT)
    code, out, err = run_script_with_gilfree_run(tmp_path, script)
    assert code == 0, err
    assert "results ok" in out
    assert "200/200" in err.split("\r")[-1], err[-300:]


def run_script_with_gilfree_run(tmp_path, script):
    """``python -m gilfree run script``: (return code, stdout, stderr), through files (a
    worker left behind would hold a pipe open)."""
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        completed = subprocess.run(
            [sys.executable, "-m", "gilfree", "run", str(script)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            timeout=SCRIPT_TIMEOUT,
            cwd=tmp_path,
            check=False,
        )
    return completed.returncode, out_path.read_text(), err_path.read_text()


NOTEBOOK_CELLS = [
    "import gilfree\nexecutor = gilfree.ProcessPoolExecutor(2)",
    "results = list(executor.map(abs, range(-500, 0), progress=True))\n"
    "executor.shutdown()\nprint(sum(results))",
]


@pytest.mark.process_only
def test_progress_true_in_a_notebook_renders_the_widget_bar(tmp_path):
    pytest.importorskip("ipywidgets")
    outputs = notebook_outputs(tmp_path, NOTEBOOK_CELLS, timeout=SCRIPT_TIMEOUT)
    kinds = [kind for output in outputs for kind in output.get("data", {})]
    assert "application/vnd.jupyter.widget-view+json" in kinds, outputs
    text = "".join(output.get("text", "") for output in outputs)
    assert str(sum(range(1, 501))) in text


def test_a_submit_wrapped_on_the_executor_sees_every_item_of_map(make_executor, start_method):
    """concurrent.futures builds ``map`` on ``submit``; code that wraps ``submit`` on an
    executor (tqdm's ``process_map`` does, to count) sees each item go through it."""
    executor = make_executor(max_workers=2, start_method=start_method)
    submitted = []
    original = executor.submit

    def counting_submit(fn, /, *args, **kwargs):
        submitted.append(args)
        return original(fn, *args, **kwargs)

    executor.submit = counting_submit
    assert list(executor.map(tasks.square, range(40), chunksize=8)) == [x * x for x in range(40)]
    assert submitted == [(x,) for x in range(40)]
