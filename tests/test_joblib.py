"""``gilfree.joblib``: joblib's ``Parallel`` on a gilfree executor."""

from __future__ import annotations

import json
import multiprocessing
import os
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

joblib = pytest.importorskip("joblib")

import gilfree  # noqa: E402 - after the skip
import gilfree.joblib as gilfree_joblib  # noqa: E402
from gilfree import WorkerCrashedError, _core, shared_ndarray  # noqa: E402
from gilfree.joblib.arrays import CallArrays  # noqa: E402
from support import tasks  # noqa: E402
from support.frames import shared_ranges  # noqa: E402
from support.notebooks import run_notebook  # noqa: E402
from support.processes import run_script, wait_until_gone  # noqa: E402

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


def view_facts(array):
    """What a worker sees of an array: writeable, in gilfree's shared memory, its sum."""
    address = array.__array_interface__["data"][0]
    shared = any(start <= address < end for start, end in shared_ranges())
    return array.flags.writeable, shared, float(array.sum())


def try_write(array, index, value):
    """Writes ``value`` at ``array.flat[index]``; False if the array is read-only."""
    try:
        array.flat[index] = value
    except ValueError:
        return False
    return float(array.flat[index])


def sleep_then_read(seconds, array, index):
    time.sleep(seconds)
    return float(array.flat[index])


def fill(out, index, value):
    """Workers writing results into a memmap the parent made (joblib's documented idiom)."""
    out[index] = value
    return True


def thread_limits():
    """This worker's BLAS and OpenMP thread counts (threadpoolctl) and OMP_NUM_THREADS."""
    from threadpoolctl import threadpool_info

    counts = {pool["user_api"]: pool["num_threads"] for pool in threadpool_info()}
    return counts, os.environ.get("OMP_NUM_THREADS")


def buffer_descriptors():
    """How many of gilfree's shared-memory files this process holds open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += "gilfree-buffer" in os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            pass
    return count


_initialized = []


def initialize(value):
    _initialized.append(value)


def initialized_with(_):
    return list(_initialized)


def fail_at_once():
    raise tasks.CustomError("no tasks")
    yield  # a generator


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


def test_auto_batches_grow_to_the_cap_and_a_given_batch_size_is_kept(config, monkeypatch):
    sizes = []
    submit = gilfree_joblib.GilfreeBackend.submit

    def recording(self, batch, callback=None):
        sizes.append(len(batch))
        return submit(self, batch, callback)

    monkeypatch.setattr(gilfree_joblib.GilfreeBackend, "submit", recording)
    assert joblib.Parallel()(joblib.delayed(abs)(-x) for x in range(50_000)) == list(range(50_000))
    assert max(sizes) == gilfree_joblib.MAX_AUTO_BATCH  # doubled up to it, not past it
    sizes.clear()
    joblib.Parallel(batch_size=2000)(joblib.delayed(abs)(x) for x in range(10_000))
    assert max(sizes) == 2000


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
    with pytest.raises(tasks.CustomError, match="item 7") as raised:
        joblib.Parallel()(joblib.delayed(fail_on)(x, 7) for x in range(50))
    # The remote traceback, as concurrent.futures gives it: the worker's frames, as text.
    assert "in fail_on" in str(raised.value.__cause__)
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
    # workers takes 1 s); with it only those already started ran: a handful, a score or so
    # with both cores busy (the abort waits for the thread that collects results).
    time.sleep(1.5)
    assert len(list(marks.iterdir())) < 50


@pytest.mark.parametrize(("batch_size", "batch"), [(1, "1 task:"), (4, "4 tasks starting with")])
def test_a_worker_crash_raises_worker_crashed_error_naming_the_function(config, batch_size, batch):
    """The error names the user's function and the batch, not the backend's batch runner.
    (With ``pre_dispatch="all"``, joblib cuts the first ``batch_size * n_jobs`` tasks into
    batches of ``batch_size``; task 3 is in the first.)"""
    with pytest.raises(WorkerCrashedError) as caught:
        joblib.Parallel(batch_size=batch_size, pre_dispatch="all")(
            joblib.delayed(tasks.crash_if)(x, 3) for x in range(100)
        )
    name = f"{tasks.crash_if.__module__}.crash_if"
    assert str(caught.value).endswith(f"while running a joblib batch of {batch} {name}")
    assert joblib.Parallel()(joblib.delayed(tasks.square)(x) for x in range(4)) == [0, 1, 4, 9]


def test_a_batch_that_cannot_be_sent_fails_with_serialization_error(config):
    import threading

    lock = threading.Lock()
    with pytest.raises(gilfree.SerializationError, match="_thread.lock"):
        joblib.Parallel()(joblib.delayed(id)(np.zeros(3), lock) for _ in range(4))
    assert joblib.Parallel()(joblib.delayed(abs)(-x) for x in range(3)) == [0, 1, 2]


def test_an_empty_iterable_and_one_failing_at_once(config):
    assert joblib.Parallel()(joblib.delayed(abs)(x) for x in []) == []
    with pytest.raises(tasks.CustomError, match="no tasks"):
        joblib.Parallel()(fail_at_once())
    assert joblib.Parallel()(joblib.delayed(abs)(x) for x in [-1]) == [1]


def test_an_initializer_runs_once_in_each_worker():
    with joblib.parallel_config(
        backend="gilfree", n_jobs=2, initializer=initialize, initargs=("config",)
    ):
        assert (
            joblib.Parallel()(joblib.delayed(initialized_with)(x) for x in range(6))
            == [["config"]] * 6
        )
    if tuple(int(part) for part in joblib.__version__.split(".")[:2]) < (1, 5):
        return  # Parallel takes an initializer from joblib 1.5 on
    in_parallel = joblib.Parallel(
        backend="gilfree", n_jobs=2, initializer=initialize, initargs=("parallel",)
    )
    assert in_parallel(joblib.delayed(initialized_with)(x) for x in range(4)) == [["parallel"]] * 4


NESTED_LOKY_SCRIPT = textwrap.dedent(
    """
    import multiprocessing

    import joblib
    import gilfree.joblib


    def square(x):
        return x * x


    def nested(n):
        squares = joblib.Parallel(n_jobs=2, backend="loky")(
            joblib.delayed(square)(x) for x in range(n)
        )
        return squares, sorted(process.pid for process in multiprocessing.active_children())


    if __name__ == "__main__":
        on_gilfree = joblib.Parallel(n_jobs=2, backend="gilfree")
        done = on_gilfree(joblib.delayed(nested)(4) for _ in range(2))
        print(" ".join(str(pid) for _, group in done for pid in group))
        print([squares for squares, _ in done])
    """
)


@pytest.mark.timeout(120)
def test_loky_started_inside_a_task_ends_with_the_worker(tmp_path):
    """A task that runs joblib's default backend leaves loky's executor in the worker; the
    worker shuts it down as it exits, as a multiprocessing child does, so the script ends at
    once and no loky process outlives it (they waited 300 s for loky's idle timeout). The
    nested call runs a function of the main script, sent by value as from the main process
    (by the name ``__mp_main__``, it failed in loky's processes)."""
    returncode, stdout, stderr = run_script(tmp_path, NESTED_LOKY_SCRIPT)
    assert returncode == 0, stderr
    pid_line, squares = stdout.splitlines()
    assert squares == str([[0, 1, 4, 9]] * 2)
    loky_pids = [int(pid) for pid in pid_line.split()]
    assert loky_pids
    assert not wait_until_gone(loky_pids)


REDEFINED_SCRIPT = textwrap.dedent(
    """
    import json

    import joblib
    import gilfree.joblib

    if __name__ == "__main__":
        runs = []
        with joblib.parallel_config(backend="gilfree", n_jobs=2):
            def f(x):
                return x + 10

            class Scaler:
                factor = 2

            def scale(x):
                return x * Scaler.factor

            runs.append(joblib.Parallel()(joblib.delayed(f)(x) for x in range(6)))
            runs.append(joblib.Parallel()(joblib.delayed(scale)(x) for x in range(6)))

            def f(x):
                return x + 20

            class Scaler:
                factor = 3

            runs.append(joblib.Parallel()(joblib.delayed(f)(x) for x in range(6)))
            runs.append(joblib.Parallel()(joblib.delayed(scale)(x) for x in range(6)))
        print(json.dumps(runs))
    """
)


def test_a_function_redefined_between_calls_gives_the_new_results(tmp_path):
    """Each batch carries its function by value; the workers that got the first definition
    run the second one when the script redefines it, as loky's do."""
    returncode, stdout, stderr = run_script(tmp_path, REDEFINED_SCRIPT)
    assert returncode == 0, stderr
    numbers = range(6)
    assert json.loads(stdout) == [
        [x + 10 for x in numbers],
        [x * 2 for x in numbers],
        [x + 20 for x in numbers],
        [x * 3 for x in numbers],
    ]


PRESTARTED_TEMPLATE_SCRIPT = textwrap.dedent(
    """
    import json
    import os
    import sys

    import gilfree.joblib
    from gilfree._workers import zygote

    EXECUTOR = "gilfree.executor"
    executor_at_import = EXECUTOR in sys.modules


    def parent(_):
        with open(f"/proc/{os.getpid()}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1]), EXECUTOR in sys.modules


    if __name__ == "__main__":
        import joblib

        prestarted = zygote.pids()
        preloads = [list(template.preload) for template in zygote._zygotes]
        with joblib.parallel_config(backend="gilfree", n_jobs=2):
            seen = joblib.Parallel()(joblib.delayed(parent)(x) for x in range(4))
        parents = sorted({pid for pid, _ in seen})
        executor_in_workers = any(loaded for _, loaded in seen)
        print(
            json.dumps(
                [prestarted, preloads, parents, zygote.pids(), executor_at_import,
                 executor_in_workers]
            )
        )
    """
)


def test_the_workers_come_from_the_template_started_at_import(tmp_path):
    """Importing gilfree.joblib starts the template process, with gilfree.joblib (and so
    joblib) preloaded for the workers, and the backend's executor forks its workers from that
    one: no second template process. Neither the import nor the template loads the executor's
    machinery (the parent imports it at its first ``Parallel`` call, while the template boots):
    the template is ready that much sooner."""
    returncode, stdout, stderr = run_script(tmp_path, PRESTARTED_TEMPLATE_SCRIPT)
    assert returncode == 0, stderr
    prestarted, preloads, parents, after, executor_at_import, executor_in_workers = json.loads(
        stdout
    )
    assert len(prestarted) == 1
    assert preloads == [list(gilfree_joblib.PRELOAD)] == [["gilfree.joblib"]]
    assert parents == prestarted == after
    assert executor_at_import is False
    assert executor_in_workers is False


def test_a_call_with_other_n_jobs_leaves_a_running_generator_call_to_finish():
    # The second call needs an executor of three workers: the first one's was shut down under
    # the generator, whose next batches failed in joblib's callback, and reading it hung.
    with joblib.parallel_config(backend="gilfree"):
        first = joblib.Parallel(n_jobs=2, return_as="generator", batch_size=1)(
            joblib.delayed(sleep_then)(0.02, i) for i in range(10)
        )
        head = next(first)
        other = joblib.Parallel(n_jobs=3)(joblib.delayed(abs)(-i) for i in range(4))
        rest = list(first)
    assert [head, *rest] == list(range(10))
    assert other == [0, 1, 2, 3]


def test_timeout(config):
    """The call raises once its timeout has passed (it fired after twice the time: the backend
    waited the whole timeout for a first batch before joblib's own clock started)."""
    started = time.monotonic()
    with pytest.raises(multiprocessing.TimeoutError):  # what joblib raises, as with loky
        joblib.Parallel(timeout=1.0)(joblib.delayed(sleep_then)(5, x) for x in range(2))
    assert time.monotonic() - started < 1.9
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


# --- big arrays, shared once per call ------------------------------------------------------


def test_a_100_mb_argument_across_50_tasks_is_copied_once(config):
    x = np.random.default_rng(0).random((100_000, 125))  # 100 MB
    before = _core.copied_to_shared()
    sums = joblib.Parallel()(joblib.delayed(np.sum)(x) for _ in range(50))
    copied = _core.copied_to_shared() - before
    assert sums == [x.sum()] * 50
    assert copied < 2 * x.nbytes, f"{copied / x.nbytes:.1f} times the array copied"


def test_without_max_nbytes_each_batch_copies_the_array():
    """The control of the test above: sharing off, every batch copies its array."""
    x = np.ones((1000, 1000))  # 8 MB
    with joblib.parallel_config(backend="gilfree", n_jobs=2, max_nbytes=None):
        before = _core.copied_to_shared()
        sums = joblib.Parallel(batch_size=1)(joblib.delayed(np.sum)(x) for _ in range(10))
        copied = _core.copied_to_shared() - before
    assert sums == [1e6] * 10
    assert copied >= 10 * x.nbytes


def test_shared_segments_return_to_their_count_after_each_call(config):
    """Each call's shared copies are released when it ends, so the regions a call used serve
    the next call's new arrays: the count of shared-memory files stays where the first call
    left it (gilfree keeps idle ones for reuse), instead of growing by one per array."""
    rng = np.random.default_rng(1)
    joblib.Parallel()(joblib.delayed(np.sum)(rng.random(500_000)) for _ in range(4))
    counts = []
    for _ in range(5):
        arrays = [rng.random(500_000) for _ in range(3)]  # 4 MB each, new every call
        joblib.Parallel()(joblib.delayed(np.sum)(a) for a in arrays for _ in range(4))
        counts.append(buffer_descriptors())
    assert max(counts) - min(counts) <= 1, counts


@pytest.mark.parametrize(
    ("mmap_mode", "writeable", "seen_by_others"),
    [
        ("r", False, False),
        ("r+", True, True),
        ("w+", True, True),
        ("c", True, False),
        (None, True, False),
    ],
)
def test_mmap_mode_decides_what_workers_get(mmap_mode, writeable, seen_by_others):
    """Every mode gives a view of the one shared copy (copy-on-write for "c" and None); only
    "r+" and "w+" let a write reach the other tasks of the call; the original stays as is."""
    x = np.arange(500_000, dtype=np.float64)  # 4 MB
    with joblib.parallel_config(backend="gilfree", n_jobs=2, mmap_mode=mmap_mode):
        facts = joblib.Parallel()(joblib.delayed(view_facts)(x) for _ in range(4))
        assert facts == [(writeable, True, float(x.sum()))] * 4
        # The first task writes at once; the others read once it surely has.
        calls = [joblib.delayed(try_write)(x, 5, -1.0)] + [
            joblib.delayed(sleep_then_read)(0.5, x, 5) for _ in range(3)
        ]
        written, *reads = joblib.Parallel(batch_size=1)(calls)
    assert written == (-1.0 if writeable else False)
    assert reads == [-1.0 if seen_by_others else 5.0] * 3
    assert x[5] == 5.0


@pytest.mark.parametrize("mmap_mode", ["r+", "w+"])
def test_writable_modes_never_write_an_array_the_parent_received(mmap_mode):
    """An array received from a worker lies in shared memory too: the call shares a copy of
    it, as of any other array, so the workers' writes stay out of the parent's (as loky's)."""
    with joblib.parallel_config(backend="gilfree", n_jobs=2, mmap_mode=mmap_mode):
        (received,) = joblib.Parallel()([joblib.delayed(np.zeros)(500_000)])  # 4 MB
        written = joblib.Parallel()(joblib.delayed(try_write)(received, 5, -1.0) for _ in range(2))
    assert written == [-1.0, -1.0]
    assert received[5] == 0.0


def test_arrays_in_any_layout_arrive_equal(config):
    big = np.arange(2_000_000, dtype=np.float32).reshape(1000, 2000)
    for array in [big, np.asfortranarray(big), big[::2, ::3], big.astype(">f8"), big[:, :0]]:
        got = joblib.Parallel()(joblib.delayed(np.copy)(array) for _ in range(2))
        for copy in got:
            np.testing.assert_array_equal(copy, array, strict=True)


def test_object_arrays_stay_in_band(config):
    """An object array's bytes are pointers: it is pickled with each batch, never shared."""
    objects = np.array([{"k": i} for i in range(200_000)], dtype=object)  # 1.6 MB of pointers
    got = joblib.Parallel()(joblib.delayed(lambda a: a[12345]["k"])(objects) for _ in range(2))
    assert got == [12345, 12345]
    arrays = CallArrays(max_nbytes=1, mmap_mode="r")
    floats = np.zeros(10)
    arrays.dumps([objects, floats])
    assert arrays.shared_count == 1  # the float array only (while it lives)
    del floats
    assert arrays.shared_count == 0


def test_an_array_already_in_shared_memory_is_not_copied(config):
    x = shared_ndarray((1000, 1000))
    x += 2.0
    before = _core.copied_to_shared()
    assert joblib.Parallel()(joblib.delayed(np.sum)(x) for _ in range(8)) == [2e6] * 8
    assert _core.copied_to_shared() - before < x.nbytes


@pytest.mark.parametrize("mode", ["w+", "r+"])
def test_workers_write_into_a_memmap_the_parent_sees(config, tmp_path, mode):
    path = tmp_path / "out.mmap"
    np.memmap(path, dtype=np.float64, mode="w+", shape=(40,))[:] = -1
    out = np.memmap(path, dtype=np.float64, mode=mode, shape=(40,))
    assert all(joblib.Parallel()(joblib.delayed(fill)(out, i, i * 1.5) for i in range(40)))
    np.testing.assert_array_equal(out, np.arange(40) * 1.5)
    # Slices (what scikit-learn passes) reopen the same bytes: a strided view at an offset.
    view = out[3::4]
    assert all(joblib.Parallel()(joblib.delayed(fill)(view, i, -i) for i in range(len(view))))
    np.testing.assert_array_equal(out[3::4], -np.arange(10.0))


def test_a_read_only_memmap_stays_read_only(config, tmp_path):
    path = tmp_path / "in.mmap"
    np.memmap(path, dtype=np.int32, mode="w+", shape=(10, 10))[:] = 7
    x = np.memmap(path, dtype=np.int32, mode="r", shape=(10, 10))
    assert joblib.Parallel()(joblib.delayed(try_write)(x[2:], 0, 1) for _ in range(2)) == [
        False,
        False,
    ]


def test_big_arrays_a_generator_makes_are_not_kept_until_the_call_ends(config):
    # Each shared copy was keyed by the array and kept it alive for the whole call: 60 arrays
    # of 8 MB made one by one all stayed in the parent (loky holds a few at a time).
    import weakref

    made = []
    most = [0]

    def arrays():
        for index in range(40):
            array = np.full(1_000_000, float(index))  # 8 MB
            made.append(weakref.ref(array))
            most[0] = max(most[0], sum(alive() is not None for alive in made))
            yield joblib.delayed(np.sum)(array)

    sums = joblib.Parallel(batch_size=1, pre_dispatch="2*n_jobs")(arrays())
    assert sums == [1e6 * index for index in range(40)]
    assert most[0] <= 10, f"{most[0]} of 40 arrays alive at once"


def test_an_array_of_exactly_max_nbytes_travels_by_value_as_joblib_compares(config):
    exactly = np.zeros(1 << 17)  # 1 MiB: the default "1M"
    larger = np.zeros((1 << 17) + 1)
    written = joblib.Parallel()(joblib.delayed(try_write)(a, 0, 2.0) for a in (exactly, larger))
    assert written == [2.0, False]  # by value: a writable copy; shared: read-only ("r")


def test_max_nbytes_may_be_any_number_of_bytes():
    x = np.zeros(200_000)  # 1.6 MB
    for max_nbytes, shared in [(1e6, True), (2e6, False), (0, True)]:
        with joblib.parallel_config(backend="gilfree", n_jobs=2, max_nbytes=max_nbytes):
            facts = joblib.Parallel()(joblib.delayed(view_facts)(x) for _ in range(2))
        # Shared copies are read-only views (mmap_mode "r"); by value, a writable copy.
        assert [fact[0] for fact in facts] == [not shared, not shared], max_nbytes


def test_a_copy_on_write_memmap_arrives_with_the_parents_writes(config, tmp_path):
    path = tmp_path / "data.mmap"
    np.memmap(path, dtype=np.float64, mode="w+", shape=(3,))[:] = [0.0, 1.0, 2.0]
    private = np.memmap(path, dtype=np.float64, mode="c", shape=(3,))
    private[0] = 99.0  # in this process's private pages, not in the file
    got = joblib.Parallel()(joblib.delayed(np.copy)(private) for _ in range(2))
    for array in got:
        np.testing.assert_array_equal(array, [99.0, 1.0, 2.0])


def memmap_facts(array):
    return type(array).__name__, os.path.basename(array.filename), array.mode, array.offset


def test_a_reopened_memmap_keeps_its_filename_mode_and_offset(config, tmp_path):
    path = tmp_path / "out.bin"
    np.memmap(path, dtype=np.float64, mode="w+", shape=(20,))[:] = 1.0
    out = np.memmap(path, dtype=np.float64, mode="r+", shape=(10,), offset=80)
    facts = joblib.Parallel()(joblib.delayed(memmap_facts)(out) for _ in range(2))
    assert facts == [("memmap", "out.bin", "r+", 80)] * 2


def test_bad_max_nbytes_and_mmap_mode_are_refused():
    for settings, match in [
        ({"max_nbytes": -1}, "max_nbytes"),
        ({"mmap_mode": "rw"}, "mmap_mode"),
    ]:
        with (
            joblib.parallel_config(backend="gilfree", n_jobs=2, **settings),
            pytest.raises(ValueError, match=match),
        ):
            joblib.Parallel()(joblib.delayed(abs)(x) for x in range(3))


# --- thread limits -----------------------------------------------------------------------


def test_workers_limit_their_thread_pools():
    pytest.importorskip("threadpoolctl")
    default = max(joblib.cpu_count() // 2, 1)
    for inner, expected in [(None, default), (2, 2)]:
        with joblib.parallel_config(backend="gilfree", n_jobs=2, inner_max_num_threads=inner):
            found = joblib.Parallel()(joblib.delayed(thread_limits)() for _ in range(4))
        for counts, omp in found:
            assert omp == str(expected)
            assert counts.get("blas", expected) == expected, counts


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
