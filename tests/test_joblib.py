"""``gilfree.joblib``: joblib's ``Parallel`` on a gilfree executor."""

from __future__ import annotations

import multiprocessing
import os
import time

import numpy as np
import pandas as pd
import pytest

joblib = pytest.importorskip("joblib")

import gilfree.joblib as gilfree_joblib  # noqa: E402 - after the skip
from support import tasks  # noqa: E402
from support.notebooks import run_notebook  # noqa: E402

pytestmark = [pytest.mark.gilfree_only, pytest.mark.process_only, pytest.mark.timeout(60)]


def column_sums(frame):
    return frame.sum().to_numpy()


def fail_on(x, bad):
    if x == bad:
        raise tasks.CustomError(f"item {x}")
    return x


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


@pytest.fixture
def config():
    """Runs the test's Parallel calls on the gilfree backend; its executor goes at the end."""
    with joblib.parallel_config(backend="gilfree", n_jobs=2):
        yield


def test_parallel_runs_in_worker_processes(config):
    pids = joblib.Parallel()(joblib.delayed(tasks.get_pid)() for _ in range(20))
    assert os.getpid() not in pids
    squares = joblib.Parallel()(joblib.delayed(tasks.square)(x) for x in range(1000))
    assert squares == [x * x for x in range(1000)]


def test_lambdas_arrays_and_frames(config):
    offset = 3
    assert joblib.Parallel()(joblib.delayed(lambda x: x + offset)(x) for x in range(5)) == [
        3,
        4,
        5,
        6,
        7,
    ]
    arrays = [np.arange(12.0).reshape(3, 4)[:, ::2] * k for k in range(4)]  # non-contiguous
    doubled = joblib.Parallel()(joblib.delayed(np.multiply)(a, 2) for a in arrays)
    for got, sent in zip(doubled, arrays, strict=True):
        np.testing.assert_array_equal(got, sent * 2, strict=True)
    frames = [pd.DataFrame({"a": np.arange(100) * k, "b": np.ones(100)}) for k in range(3)]
    sums = joblib.Parallel()(joblib.delayed(column_sums)(frame) for frame in frames)
    assert [list(s) for s in sums] == [[4950.0 * k, 100.0] for k in range(3)]


@pytest.mark.parametrize("return_as", ["generator", "generator_unordered"])
def test_generators(config, return_as):
    results = joblib.Parallel(return_as=return_as)(
        joblib.delayed(tasks.square)(x) for x in range(200)
    )
    got = list(results)
    expected = [x * x for x in range(200)]
    assert got == expected if return_as == "generator" else sorted(got) == expected


def test_an_error_arrives_with_its_type_and_the_backend_stays_usable(config):
    with pytest.raises(tasks.CustomError, match="item 7"):
        joblib.Parallel()(joblib.delayed(fail_on)(x, 7) for x in range(50))
    # scikit-learn's searches call Parallel again in the same block after an abort.
    assert joblib.Parallel()(joblib.delayed(tasks.square)(x) for x in range(10)) == [
        x * x for x in range(10)
    ]


def test_an_error_aborts_the_batches_not_started(config, tmp_path):
    """Batches queued behind the failing one do not all run: the abort cancels them."""
    marks = tmp_path / "ran"
    marks.mkdir()
    calls = [joblib.delayed(fail_on)(0, 0)] + [
        joblib.delayed(tasks.sleep_then_touch)(str(marks / str(i)), 0.02) for i in range(100)
    ]
    with pytest.raises(tasks.CustomError):
        joblib.Parallel(batch_size=1, pre_dispatch="all")(calls)
    # Without the abort the 100 batches, all queued, would have run by now (2 s of work on 2
    # workers takes 1 s); with it only those already started ran.
    time.sleep(1.5)
    assert len(list(marks.iterdir())) < 20


def test_timeout(config):
    with pytest.raises(multiprocessing.TimeoutError):  # what joblib raises, as with loky
        joblib.Parallel(timeout=0.2)(joblib.delayed(sleep_then)(5, x) for x in range(2))
    assert joblib.Parallel()(joblib.delayed(tasks.square)(x) for x in range(4)) == [0, 1, 4, 9]


def test_one_job_falls_back_to_the_sequential_backend():
    with joblib.parallel_config(backend="gilfree", n_jobs=1):
        assert (
            joblib.Parallel()(joblib.delayed(tasks.get_pid)() for _ in range(3))
            == [os.getpid()] * 3
        )


def test_n_jobs_counts_as_joblib_counts():
    backend = gilfree_joblib.GilfreeBackend()
    cpus = os.cpu_count() or 1
    assert backend.effective_n_jobs(-1) == cpus
    assert backend.effective_n_jobs(None) == 1
    assert backend.effective_n_jobs(3) == 3
    with pytest.raises(ValueError, match="n_jobs == 0"):
        backend.effective_n_jobs(0)


def test_register_is_idempotent_and_the_nested_backend_pickles():
    import pickle

    gilfree_joblib.register()
    gilfree_joblib.register()
    backend, _ = gilfree_joblib.GilfreeBackend(nesting_level=0).get_nested_backend()
    assert pickle.loads(pickle.dumps(backend)) is not None


NOTEBOOK_CELLS = [
    "import joblib, numpy as np, gilfree.joblib",
    "scale = 3\ndef scaled_sum(a):\n    return float(a.sum()) * scale",
    "arrays = [np.full((100, 100), k, dtype=float) for k in range(6)]\n"
    "with joblib.parallel_config(backend='gilfree', n_jobs=2):\n"
    "    sums = joblib.Parallel()(joblib.delayed(scaled_sum)(a) for a in arrays)\n"
    "print(sums)",
]


@pytest.mark.timeout(120)
def test_a_notebook_function_runs_on_the_backend(tmp_path):
    """A function defined in a notebook cell, reading a notebook global, in the workers."""
    text = run_notebook(tmp_path, NOTEBOOK_CELLS)
    assert text.strip() == str([30000.0 * k for k in range(6)])
