"""Large shared buffers move into huge pages on a background thread (``gilfree_core::huge``).

The move happens while workers read and write the buffer, and while the parent forks: the content
must never change under anyone. Whether the system moves anything (Linux 6.1 or later, free huge
pages at hand) does not decide these tests; ``_core.huge_page_bytes()`` says how much it did, in
the failure messages.
"""

from __future__ import annotations

import os
import time
import warnings

import pytest

from conftest import create_executor
from support import tasks
from support.limits import DATA_RESULT_TIMEOUT as RESULT_TIMEOUT
from support.limits import MIB

pytestmark = [pytest.mark.gilfree_only, pytest.mark.process_only, pytest.mark.timeout(120)]
numpy = pytest.importorskip("numpy")

#: Seconds each test keeps working on its buffers: past the 0.1 s a region waits for its turn,
#: and past the move of 32 MiB (about 15 ms; ten times that where memory comes slowly).
BUSY_SECONDS = 1.0
#: Items of the first array that tasks write; the rest is only read.
MARKED = 64


def _moved() -> str:
    from gilfree import _core

    return f"{_core.huge_page_bytes() / MIB:.0f} MiB moved into huge pages so far"


def test_a_large_shared_array_keeps_every_byte_while_its_pages_move():
    import gilfree

    array = gilfree.shared_ndarray(32 * MIB // 8)
    array[:] = numpy.arange(array.size, dtype=numpy.float64)
    expected_tail = float(array[MARKED:].sum())
    with create_executor(max_workers=2) as executor:
        deadline = time.monotonic() + BUSY_SECONDS
        done = 0
        while time.monotonic() < deadline or done < 2 * MARKED:
            index = done % MARKED
            futures = [
                executor.submit(tasks.mark_and_sum, array, index, -1.0 - done, MARKED),
                executor.submit(tasks.mark_and_sum, array, MARKED - 1 - index, -2.0, MARKED),
            ]
            for future in futures:
                assert future.result(timeout=RESULT_TIMEOUT) == expected_tail, _moved()
            assert array[index] == -1.0 - done, _moved()
            done += 1
    assert numpy.array_equal(
        array[MARKED:], numpy.arange(MARKED, array.size, dtype=numpy.float64)
    ), _moved()


def test_large_arguments_and_results_keep_their_content_while_their_pages_move():
    source = numpy.random.default_rng(7).random(16 * MIB // 8)
    with create_executor(max_workers=2) as executor:
        deadline = time.monotonic() + BUSY_SECONDS
        while time.monotonic() < deadline:
            futures = [executor.submit(tasks.double_array, source) for _ in range(2)]
            for future in futures:
                result = future.result(timeout=RESULT_TIMEOUT)
                assert numpy.array_equal(result, source * 2), _moved()


def test_a_child_forked_while_a_region_waits_for_its_turn_moves_its_own():
    from gilfree import _core

    waiting = _core.SharedBuffer.allocate(16 * MIB)  # its turn comes 0.1 s from now
    with warnings.catch_warnings():
        # Python 3.12+ warns of a fork with threads: the moving thread is one, on purpose.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: the parent's queue is not its work; its own regions are
        code = 1
        try:
            own = numpy.frombuffer(_core.SharedBuffer.allocate(16 * MIB), dtype=numpy.uint8)
            own[:] = 7
            time.sleep(0.5)
            code = 0 if int(own.sum()) == 7 * own.size else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ended, status = os.waitpid(pid, os.WNOHANG)
        if ended:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not end within 30 s")
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(waiting) == 16 * MIB
