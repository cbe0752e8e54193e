"""The adaptive chunk sizer, alone (no processes)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gilfree_only


@pytest.fixture
def sizer_class():
    from gilfree._engine.chunking import ChunkSizer

    return ChunkSizer


def test_fixed_chunksize_is_honoured_except_at_the_end(sizer_class):
    sizer = sizer_class(fixed=7, worker_count=2)
    assert sizer.next_size(100) == 7
    assert sizer.next_size(3) == 3


def test_first_chunk_is_a_single_item_until_something_is_measured(sizer_class):
    assert sizer_class(fixed=None, worker_count=2).next_size(1_000_000) == 1


def test_cheap_items_grow_chunks_geometrically_towards_the_target(sizer_class):
    sizer = sizer_class(fixed=None, worker_count=2)
    sizes = []
    size = 1
    for _ in range(5):
        sizer.record(0, size, size * 1e-7)  # 0.1 µs per item
        size = sizer.next_size(10_000_000)
        sizes.append(size)
    assert sizes[0] == 64  # growth is capped per step
    assert sizes == sorted(sizes)
    assert sizes[-1] == 50_000  # 5 ms of work at 0.1 µs per item


def test_expensive_items_at_the_end_of_the_input_go_one_by_one(sizer_class):
    sizer = sizer_class(fixed=None, worker_count=2)
    sizer.record(0, 4, 4 * 0.05)  # 50 ms per item
    assert sizer.next_size(8) == 1


def test_cheap_items_keep_a_floor_of_half_a_millisecond_at_the_end(sizer_class):
    sizer = sizer_class(fixed=None, worker_count=2)
    for size in (1, 64, 4096, 20_000):
        sizer.record(0, size, size * 1e-7)
    assert sizer.next_size(20_000) == 5_000  # balance alone would say 2 500
    assert sizer.next_size(100) == 50  # the last items still go to both workers


def test_the_floor_never_takes_more_than_a_fair_share(sizer_class):
    sizer = sizer_class(fixed=None, worker_count=2)
    sizer.record(0, 1_000, 2e-3)  # cheap early items of an input whose costs may grow
    assert sizer.next_size(31) == 16  # not all 31: later items may cost far more


def test_a_few_cheap_items_do_not_justify_a_floor(sizer_class):
    sizer = sizer_class(fixed=None, worker_count=2)
    sizer.record(0, 1, 1e-6)  # the first item of map(fib, range(32)) takes a microsecond
    assert sizer.next_size(31) == 4  # a quarter of a worker's share, not a floor of 500 items


def test_a_tail_of_rising_costs_is_handed_out_last_first(sizer_class):
    sizer = sizer_class(fixed=None, worker_count=2)
    for start, seconds in [(20, 0.004), (21, 0.007), (22, 0.011)]:  # fib-like growth
        sizer.record(start, 1, seconds)
    assert not sizer.expensive_tail(5)  # more than two items per worker are left
    assert sizer.expensive_tail(4)


def test_equal_or_falling_costs_keep_input_order(sizer_class):
    equal = sizer_class(fixed=None, worker_count=2)
    falling = sizer_class(fixed=None, worker_count=2)
    for start in range(3):
        equal.record(start, 1, 0.01)
        falling.record(start, 1, 0.01 / (start + 1))
    assert not equal.expensive_tail(4)
    assert not falling.expensive_tail(4)


def test_a_fixed_chunksize_keeps_input_order(sizer_class):
    sizer = sizer_class(fixed=1, worker_count=2)
    for start, seconds in [(0, 0.004), (1, 0.007), (2, 0.011)]:
        sizer.record(start, 1, seconds)
    assert not sizer.expensive_tail(4)


def test_chunks_too_cheap_to_measure_do_not_say_costs_rise(sizer_class):
    """The fixed cost of a chunk (microseconds) makes the cost per item of shrinking chunks of
    no-ops rise along the input: that is no evidence that the items' costs rise."""
    sizer = sizer_class(fixed=None, worker_count=2)
    for start, size in [(0, 400), (400, 200), (600, 100), (700, 50)]:
        sizer.record(start, size, 3e-6 + size * 1e-8)
    assert not sizer.expensive_tail(4)


def test_a_cluster_trusts_its_floor_after_many_cheap_items(sizer_class):
    """Where a message costs milliseconds (a cluster's task), a few hundred measured no-ops
    are evidence enough: the rest goes in one share per worker, not in dozens of pieces."""
    local = sizer_class(fixed=None, worker_count=2, target_seconds=0.2)
    cluster = sizer_class(fixed=None, worker_count=2, target_seconds=0.2, trust_items=256)
    for sizer in (local, cluster):
        sizer.record(0, 300, 300 * 2e-8)
    assert local.next_size(8000) == 1000  # a quarter of a worker's share
    assert [cluster.next_size(left) for left in (8000, 4000)] == [4000, 4000]


def test_a_rest_worth_less_than_a_floor_per_worker_goes_in_equal_shares(sizer_class):
    """Each worker gets a share of what was left when the shares began, not half of what the
    one before it left."""
    sizer = sizer_class(fixed=None, worker_count=2)
    sizer.record(0, 1_000, 2e-3)  # 2 µs per item: a floor of 250 items
    assert [sizer.next_size(left) for left in (300, 150)] == [150, 150]


def test_a_chunk_copies_two_mebibytes_at_most(sizer_class):
    from gilfree._engine.chunking import MESSAGE_BYTES

    sizer = sizer_class(fixed=None, worker_count=2)
    sizer.record(0, 64, 64 * 18e-6)  # 18 µs per array: 5 ms of work is 277 arrays...
    assert sizer.next_size(3000) == 277
    sizer.record_copied(64, 64 * 32 * 1024)  # ...of 32 KiB each, copied into shared memory
    assert sizer.next_size(3000) == MESSAGE_BYTES // (32 * 1024) == 64
    sizer.record_copied(1, 10 << 20)  # an item past the bound goes alone
    assert sizer.next_size(3000) == 1
    sizer.record_copied(64, 0)  # nothing copied (shared arrays, threads): time alone
    assert sizer.next_size(3000) == 277
