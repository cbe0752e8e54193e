"""A worker's memory policy (``gilfree._workers.heap``): freed memory kept within its bound, and
no fresh huge pages asked of numpy where the host takes free memory back."""

from __future__ import annotations

import os
import sys

import pytest

from gilfree._workers import heap
from support import tasks
from support.limits import DATA_RESULT_TIMEOUT

numpy = pytest.importorskip("numpy")


def test_the_kept_memory_is_bounded_by_the_machine_and_by_a_constant():
    kept = heap.kept_free_bytes()
    assert heap.KEPT_FREE_MIN <= kept <= heap.KEPT_FREE_MAX
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    share = memory // (4 * (os.cpu_count() or 1))
    assert kept == max(heap.KEPT_FREE_MIN, min(heap.KEPT_FREE_MAX, share))


def test_under_a_memory_limit_a_quarter_of_it_at_most_is_kept():
    assert heap.kept_free_bytes(400 << 20) == min(heap.kept_free_bytes(), 100 << 20)
    assert heap.kept_free_bytes(1 << 20) == 256 << 10  # below the floor: the limit wins
    assert heap.kept_free_bytes(1) == heap.KEPT_FREE_FLOOR == 256 << 10  # but not below glibc's
    assert heap.kept_free_bytes(1 << 40) == heap.kept_free_bytes()


@pytest.mark.parametrize(
    ("contents", "reclaims"),
    [
        (["0110010100000000"], True),  # this machine's kind: bit 5, free page reporting
        (["0110000100000000"], False),  # a balloon without free page reporting
        (["01100", "0000010"], True),  # a short one, then one that reports
        ([], False),  # no balloon at all
    ],
)
def test_free_page_reporting_is_read_from_the_balloons_features(
    tmp_path, monkeypatch, contents, reclaims
):
    for index, bits in enumerate(contents):
        device = tmp_path / f"virtio{index}"
        device.mkdir()
        (device / "features").write_text(bits + "\n")
    monkeypatch.setattr(heap, "BALLOON_FEATURES", str(tmp_path / "virtio*" / "features"))
    heap.host_reclaims_free_memory.cache_clear()
    try:
        assert heap.host_reclaims_free_memory() is reclaims
    finally:
        heap.host_reclaims_free_memory.cache_clear()


@pytest.mark.parametrize("reclaims", [True, False])
def test_numpy_is_told_once_and_only_where_the_host_reclaims_memory(monkeypatch, reclaims):
    calls = []
    monkeypatch.setattr(heap, "_numpy_settled", False)
    monkeypatch.setattr(heap, "host_reclaims_free_memory", lambda: reclaims)
    monkeypatch.setattr(heap, "_numpy_huge_page_setter", lambda: calls.append)
    heap.settle_numpy()
    heap.settle_numpy()
    assert calls == ([False] if reclaims else [])


def test_numpy_is_left_alone_until_it_is_imported(monkeypatch):
    monkeypatch.setattr(heap, "_numpy_settled", False)
    monkeypatch.delitem(sys.modules, "numpy")
    heap.settle_numpy()
    assert heap._numpy_settled is False


def test_numpy_has_the_switch_the_policy_uses():
    setter = heap._numpy_huge_page_setter()
    assert setter is not None
    previous = setter(True)
    assert setter(previous) is True


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_workers_advise_huge_pages_exactly_where_the_host_keeps_free_memory(shared_executor):
    advice = shared_executor.submit(tasks.numpy_huge_page_advice).result(DATA_RESULT_TIMEOUT)
    assert advice is not heap.host_reclaims_free_memory()


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_a_worker_reuses_freed_memory_up_to_its_bound_without_faulting(shared_executor):
    # A quarter of the bound: served from the heap and kept when freed (past half of it, glibc
    # maps each block anew).
    first, second = shared_executor.submit(tasks.page_faults_of_reuse, 0.25).result(
        DATA_RESULT_TIMEOUT
    )
    assert first > 0
    assert second < first / 20


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_memory_kept_for_reuse_does_not_get_a_worker_replaced(make_executor):
    # 520 MB made and freed under a 500 MiB limit: kept whole, it would leave the worker past
    # the limit and replaced after each task; at a quarter of the limit, glibc returns it.
    executor = make_executor(max_workers=1, max_memory_per_child=500 << 20)
    pids = [
        executor.submit(tasks.fill_then_free, 520 * 10**6).result(DATA_RESULT_TIMEOUT)
        for _ in range(3)
    ]
    assert len(set(pids)) == 1
