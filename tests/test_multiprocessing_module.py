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
    assert set(module.GILFREE_NAMES) == {"Pool", "Process"}
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
