"""``gilfree.multiprocessing`` stands in for ``import multiprocessing``."""

from __future__ import annotations

import multiprocessing
import multiprocessing.shared_memory

import pytest

from support import tasks

pytestmark = [pytest.mark.gilfree_only, pytest.mark.timeout(30), pytest.mark.process_only]


def test_pool_and_process_are_gilfrees():
    import gilfree
    import gilfree.multiprocessing as module

    assert module.Pool is gilfree.Pool
    assert module.Process is gilfree.Process
    assert set(module.GILFREE_NAMES) == {"Pool", "Process", "set_start_method"}
    assert issubclass(module.Process, multiprocessing.Process)


def test_every_other_public_name_is_the_stdlibs_own_object():
    import gilfree.multiprocessing as module

    assert module.__all__ == multiprocessing.__all__
    for name in multiprocessing.__all__:
        if name in module.GILFREE_NAMES or name == "reducer":
            continue
        assert getattr(module, name) is getattr(multiprocessing, name), name
    assert module.TimeoutError is multiprocessing.TimeoutError


def test_submodules_are_reachable_as_attributes():
    import gilfree.multiprocessing as module

    assert module.shared_memory is multiprocessing.shared_memory
    assert module.managers.BaseManager is multiprocessing.managers.BaseManager
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        module.no_such_name


def test_importing_a_submodule_through_the_stand_in_gives_the_stdlibs_module():
    import gilfree.multiprocessing.connection
    import gilfree.multiprocessing.shared_memory as shared_memory
    from gilfree.multiprocessing.context import _default_context
    from gilfree.multiprocessing.pool import ThreadPool
    from gilfree.multiprocessing.process import current_process

    assert shared_memory is multiprocessing.shared_memory
    assert gilfree.multiprocessing.connection is multiprocessing.connection
    assert ThreadPool is multiprocessing.pool.ThreadPool
    assert current_process() is multiprocessing.current_process()
    assert _default_context is multiprocessing.context._default_context
    assert multiprocessing.shared_memory.__spec__.name == "multiprocessing.shared_memory"
    with pytest.raises(ModuleNotFoundError, match="gilfree.multiprocessing.no_such_module"):
        import gilfree.multiprocessing.no_such_module


def test_the_stand_in_runs_a_pool_with_stdlib_synchronisation():
    import gilfree.multiprocessing as module

    with module.Pool(2) as pool:
        assert pool.map(tasks.square, range(5)) == [0, 1, 4, 9, 16]
    queue = module.get_context("spawn").Queue()
    process = module.Process(target=tasks.put_in_queue, args=(queue, "hello"))
    process.start()
    assert queue.get(timeout=20) == "hello"
    process.join(20)
    assert process.exitcode == 0


SHARED_MEMORY_SCRIPT = """
import sys
import time
from multiprocessing import shared_memory

import gilfree


def attach_and_sum(name):
    segment = shared_memory.SharedMemory(name=name)
    total = sum(segment.buf[:4])
    segment.close()
    return total


def attach_in_process(name):
    attach_and_sum(name)


if __name__ == "__main__":
    method, order = sys.argv[1], sys.argv[2]
    executor = gilfree.ProcessPoolExecutor(2, start_method=method)
    if order == "workers-first":
        executor.submit(abs, 1).result(timeout=30)
    segment = shared_memory.SharedMemory(create=True, size=16)
    segment.buf[:4] = bytes([1, 2, 3, 4])
    print(list(executor.map(attach_and_sum, [segment.name] * 4)))
    executor.shutdown()  # the workers exit: their attachments must not unlink the segment
    child = gilfree.Process(target=attach_in_process, args=(segment.name,))
    child.start()
    child.join(30)
    again = shared_memory.SharedMemory(name=segment.name)  # FileNotFoundError if unlinked
    again.close()
    segment.close()
    segment.unlink()
    print(child.exitcode, "still there")
"""


@pytest.mark.parametrize("order", ["segment-first", "workers-first"])
@pytest.mark.parametrize("method", ["zygote", "spawn", "fork"])
def test_children_that_attach_to_the_callers_shared_memory_leave_it_alone(tmp_path, method, order):
    # multiprocessing registers an attached segment with the process's resource tracker,
    # which unlinks it when its processes are gone: children must share the caller's.
    from support.processes import run_script

    returncode, stdout, stderr = run_script(tmp_path, SHARED_MEMORY_SCRIPT, method, order)
    assert returncode == 0, stderr
    assert stdout.splitlines() == ["[10, 10, 10, 10]", "0 still there"]
    assert "leaked" not in stderr and "resource_tracker" not in stderr, stderr


START_METHOD_SCRIPT = """
import os
import sys

import gilfree
import gilfree.multiprocessing as multiprocessing

TABLE = None


def read_table(_=None):
    return TABLE


def report(queue):
    queue.put(TABLE)


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    TABLE = {"set": "in the parent's __main__ block"}
    queue = multiprocessing.SimpleQueue()
    child = multiprocessing.Process(target=report, args=(queue,))
    child.start()
    seen = [queue.get()]
    child.join()
    with multiprocessing.Pool(2) as pool:
        seen.append(pool.apply(read_table))
    with gilfree.ProcessPoolExecutor(2) as executor:
        seen.append(executor.submit(read_table).result())
    print(["inherited" if table == TABLE else table for table in seen])
"""


@pytest.mark.parametrize(
    ("method", "expected"), [("fork", ["inherited"] * 3), ("spawn", [None] * 3)]
)
def test_the_scripts_set_start_method_is_followed(tmp_path, method, expected):
    """``set_start_method("fork")`` gives workers the parent's memory (a global set under the
    ``__main__`` guard), as the stdlib's do; they came from the template whatever was set."""
    from support.processes import run_script

    returncode, stdout, stderr = run_script(tmp_path, START_METHOD_SCRIPT, method)
    assert returncode == 0, stderr
    assert stdout == f"{expected}\n"
