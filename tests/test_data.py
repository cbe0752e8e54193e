"""Large data: buffers through shared memory, shared arrays, and nothing lost or leaked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import create_executor
from support import tasks
from support.limits import DATA_RESULT_TIMEOUT as RESULT_TIMEOUT
from support.limits import MIB
from support.processes import run_script

pytestmark = [pytest.mark.gilfree_only, pytest.mark.process_only]
numpy = pytest.importorskip("numpy")


def gilfree_mappings() -> int:
    """How many shared buffers this process maps now."""
    with open("/proc/self/maps") as maps:
        return sum("gilfree-buffer" in line for line in maps)


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("size", [10, 3 * MIB], ids=["small", "large"])
def test_bytes_like_values_keep_their_type_and_content(shared_executor, size):
    data = bytes(range(256)) * (size // 256 + 1)
    for value in (data, bytearray(data), memoryview(data)):
        echoed = shared_executor.submit(tasks.echo, value).result(timeout=RESULT_TIMEOUT)[0][0]
        assert type(echoed) is type(value)
        assert bytes(echoed) == data


@pytest.mark.parametrize("shape", [(7,), (1000, 300), (3 * MIB,)])
def test_numpy_arrays_round_trip(shared_executor, shape):
    array = numpy.arange(numpy.prod(shape), dtype=numpy.float64).reshape(shape)
    doubled = shared_executor.submit(tasks.double_array, array).result(timeout=RESULT_TIMEOUT)
    assert doubled.dtype == array.dtype and doubled.shape == array.shape
    assert numpy.array_equal(doubled, array * 2)


def test_large_bodies_arrive_whole_at_every_alignment_and_length(shared_executor):
    # Bodies of 64 KiB or more are copied with non-temporal stores, a line at a time after an
    # unaligned head and before a short tail: every split of them must arrive byte for byte,
    # both ways, several in one message and one at a time.
    stream_min = 64 * 1024
    lengths = [stream_min - 1, stream_min, stream_min + 4 * 4096 + 13, 3 * MIB + 7]
    base = numpy.random.default_rng(7).integers(0, 256, 3 * MIB + 200, dtype=numpy.uint8)
    arrays = [base[shift : shift + length] for length in lengths for shift in (0, 1, 17, 63)]
    echoed = shared_executor.submit(tasks.echo, arrays).result(timeout=RESULT_TIMEOUT)[0][0]
    assert all(numpy.array_equal(got, sent) for got, sent in zip(echoed, arrays, strict=True))
    for got, sent in zip(shared_executor.map(tasks.echo, arrays), arrays, strict=True):
        assert numpy.array_equal(got[0][0], sent)


def test_a_shared_array_is_written_in_place_by_the_workers(shared_executor):
    import gilfree

    array = gilfree.shared_ndarray(1_000_000, dtype=numpy.int64)
    quarters = [(index * 250_000, (index + 1) * 250_000) for index in range(4)]
    futures = [
        shared_executor.submit(tasks.fill_range, array, start, stop, start // 250_000 + 1)
        for start, stop in quarters
    ]
    assert [future.result(timeout=RESULT_TIMEOUT) for future in futures] == [250_000] * 4
    assert numpy.array_equal(array, numpy.repeat(numpy.arange(1, 5), 250_000))


def test_a_slice_of_a_shared_array_is_shared_too(shared_executor):
    import gilfree

    array = gilfree.shared_ndarray((4, 1000), dtype=numpy.float32)
    shared_executor.submit(tasks.fill_range, array[2], 10, 20, 5.0).result(timeout=RESULT_TIMEOUT)
    assert array[2, 10:20].tolist() == [5.0] * 10
    assert array.sum() == 50.0


@pytest.mark.parametrize("size", [MIB // 8, 4 * MIB // 8])
def test_a_received_array_sent_on_is_a_copy_for_its_task_as_pickle_makes(shared_executor, size):
    # A result lies in shared memory; sending it on must not hand the task the parent's own
    # object: the task's writes stay in the task, and the parent's later writes stay out.
    received = shared_executor.submit(tasks.make_zeros, size).result(timeout=RESULT_TIMEOUT)
    assert (
        shared_executor.submit(tasks.write_then_read_first, received, 99.0).result(
            timeout=RESULT_TIMEOUT
        )
        == 99.0
    )
    assert received[:3].tolist() == [0.0] * 3  # the task wrote its own copy
    part = received[10:20]  # a small slice of it, too
    future = shared_executor.submit(tasks.write_then_read_first, part, 7.0)
    assert future.result(timeout=RESULT_TIMEOUT) == 7.0
    assert received[10] == 0.0
    # Two tasks given the same received array each read their own write.
    futures = [
        shared_executor.submit(tasks.mark_and_sum, received, 0, float(value), 0) for value in (1, 2)
    ]
    assert sorted(future.result(timeout=RESULT_TIMEOUT) for future in futures) == [1.0, 2.0]
    assert received[0] == 0.0


def test_an_array_a_worker_returns_from_its_cache_is_the_parents_copy(make_executor):
    executor = make_executor(max_workers=1)
    received = executor.submit(tasks.make_zeros, MIB // 8).result(timeout=RESULT_TIMEOUT)
    returned = executor.submit(tasks.keep_and_return, received).result(timeout=RESULT_TIMEOUT)
    returned[:] = 5.0  # the parent writes its result
    assert executor.submit(tasks.first_of_kept).result(timeout=RESULT_TIMEOUT) == 0.0


def test_shared_ndarray_checks_its_arguments():
    import gilfree

    with pytest.raises(ValueError, match="shape"):
        gilfree.shared_ndarray((3, -1))
    with pytest.raises(ValueError, match="order"):
        gilfree.shared_ndarray(3, order="X")
    assert gilfree.shared_ndarray((2, 3), order="F").flags.f_contiguous


def test_a_thousand_round_trips_of_10_mib_do_not_grow_the_parent():
    array = numpy.ones(10 * MIB // 8)
    with create_executor(max_workers=2) as executor:
        for _ in range(50):
            executor.submit(tasks.double_array, array).result(timeout=RESULT_TIMEOUT)
        before = resident_bytes()
        for round_index in range(2):
            for _ in range(500):
                result = executor.submit(tasks.double_array, array).result(timeout=RESULT_TIMEOUT)
                del result
            if round_index == 0:
                mappings = gilfree_mappings()
        growth = resident_bytes() - before
    assert growth < 64 * MIB, f"the parent grew by {growth / MIB:.0f} MiB"
    # Mappings of the workers' recycled buffers are kept for reuse, within a bound (32, 256 MiB):
    # their number stays put.
    assert gilfree_mappings() <= max(mappings, 34)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("megabytes", "crashes"), [(20, 5), (2, 60)])
def test_workers_killed_while_mapping_buffers_do_not_pin_them(megabytes, crashes):
    from gilfree import WorkerCrashedError

    # A buffer's header lists the pid of each process mapping it, in 15 entries; a dead worker
    # leaves its entry behind. The dead workers' entries must not count, and must be freed:
    # else every 15th crash overflows the list for good and the buffer is never reused (a new
    # one per 15 crashes, up to 1 GiB).
    array = numpy.ones(megabytes * MIB // 8)

    def crash() -> None:
        with pytest.raises(WorkerCrashedError):
            executor.submit(tasks.kill_self_holding, array).result(timeout=RESULT_TIMEOUT)

    with create_executor(max_workers=1) as executor:
        for _ in range(3):
            crash()
        baseline = gilfree_mappings()
        for _ in range(crashes):
            crash()
        assert gilfree_mappings() <= baseline  # the same buffer keeps being reused
        assert executor.submit(tasks.double_array, array).result(timeout=RESULT_TIMEOUT)[0] == 2


def test_buffers_of_growing_sizes_sent_one_after_another_reuse_one_shared_region(tmp_path):
    # A map's chunks grow and shrink with their measured cost. A shared region made to fit its
    # first use exactly fits none of the larger ones after it: each made a region of its own
    # (1 GiB of them at most), and a map of small arrays made new ones every time it ran. In a
    # fresh interpreter, so that no idle region of another test can serve them.
    script = tmp_path / "growing.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            import numpy
            import gilfree

            def regions():
                count = 0
                for fd in os.listdir("/proc/self/fd"):
                    try:
                        count += "gilfree-buffer" in os.readlink(f"/proc/self/fd/{fd}")
                    except OSError:
                        pass
                return count

            if __name__ == "__main__":
                with gilfree.ProcessPoolExecutor(1) as executor:
                    executor.submit(abs, 1).result(timeout=60)
                    before = regions()
                    for tenths in range(10, 18):  # 1.0 MiB to 1.7 MiB
                        array = numpy.ones(tenths * (1 << 20) // 10 // 8)
                        total = executor.submit(numpy.sum, array).result(timeout=60)
                        assert total == array.size, total
                    print(regions() - before)
            """
        )
    )
    completed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert int(completed.stdout) <= 1, f"{completed.stdout.strip()} regions for 8 buffers"


@pytest.mark.timeout(120)
def test_a_maps_chunks_copy_two_mebibytes_at_most(tmp_path):
    # Each chunk in flight holds a shared buffer of its items: chunks of 5 ms of work over
    # arrays of 256 KiB copied a dozen of them each (50 of them with more items), memory that a
    # map's first run finds fresh. GILFREE_DEBUG's trace tells each chunk's size.
    script = """
        import numpy
        import gilfree

        if __name__ == "__main__":
            arrays = [numpy.full(32 * 1024, float(index)) for index in range(200)]
            with gilfree.ProcessPoolExecutor(2, start_method=sys.argv[1]) as executor:
                sums = list(executor.map(numpy.sum, arrays))
            assert sums == [32 * 1024 * index for index in range(200)], sums
    """
    returncode, _, stderr = run_script(
        tmp_path,
        "import sys\n" + textwrap.dedent(script),
        "zygote",
        environment={"GILFREE_DEBUG": "1"},
    )
    assert returncode == 0, stderr
    sizes = [int(size) for size in re.findall(r"sent CHUNK task \d+ \((\d+) items", stderr)]
    assert sum(sizes) == 200, stderr
    assert max(sizes) <= 8, sizes  # 2 MiB of 256 KiB arrays


def test_everything_works_without_numpy(tmp_path):
    script = tmp_path / "no_numpy.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            sys.modules["numpy"] = None  # importing numpy now fails
            import gilfree

            def echo(value):
                return value

            if __name__ == "__main__":
                with gilfree.ProcessPoolExecutor(2) as executor:
                    big = bytes(3 << 20)
                    assert executor.submit(echo, big).result(timeout=60) == big
                    mixed = [1.5, "x", {1: 2}]
                    assert executor.submit(echo, mixed).result(timeout=60) == mixed
                    assert list(executor.map(abs, range(-5, 5))) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
                print("ok")
            """
        )
    )
    completed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ok"


class HoldsAView:
    """An object of the test's own class (so it goes to pickle) holding a memoryview."""

    def __init__(self, view):
        self.view = view


@pytest.mark.gilfree_only  # pickle refuses every memoryview
def test_a_memoryview_inside_a_pickled_object_keeps_its_format_and_shape(shared_executor):
    """It went through cloudpickle as its bytes alone."""
    array = numpy.arange(6, dtype=numpy.float64).reshape(2, 3)
    echoed = shared_executor.submit(tasks.echo, HoldsAView(memoryview(array)))
    view = echoed.result(timeout=RESULT_TIMEOUT)[0][0].view
    assert type(view) is memoryview
    assert (view.format, view.shape, view.tolist()) == ("d", (2, 3), array.tolist())


@pytest.mark.parametrize("rows", [2, 400_000], ids=["small", "large"])
def test_a_memoryview_arrives_with_its_format_and_shape(shared_executor, rows):
    array = numpy.arange(rows * 3, dtype=numpy.float64).reshape(rows, 3)
    view = memoryview(array)
    echoed = shared_executor.submit(tasks.echo, view).result(timeout=RESULT_TIMEOUT)[0][0]
    assert (echoed.format, echoed.shape) == ("d", (rows, 3))
    assert numpy.array_equal(numpy.asarray(echoed), array)
    mapped = list(shared_executor.map(tasks.echo, [view, view[1:]]))
    assert [got[0][0].shape for got in mapped] == [(rows, 3), (rows - 1, 3)]
