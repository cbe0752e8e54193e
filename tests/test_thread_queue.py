"""``gilfree._core.ThreadQueue``: the thread transport's inboxes and outcome queue.

Its waits spin with the GIL released, then sleep on a futex; a waiter that has its item waits a
moment more for the GIL to be free (see ``crates/gilfree-py/src/handoff.rs``). What must hold
whatever the timing: every item put is taken exactly once, in order per producer; a sleeping
waiter wakes for a put from another thread (no lost wake-up); a timeout returns an empty list.
"""

from __future__ import annotations

import gc
import random
import threading
import weakref

import pytest

from gilfree._core import ThreadQueue

pytestmark = pytest.mark.timeout(60)


def test_items_come_out_in_order_up_to_most():
    queue = ThreadQueue()
    for item in ("a", 1, None, ["list"]):
        queue.put(item)
    assert len(queue) == 4
    assert queue.take(0.0, 0.0, 1) == ["a"]
    assert queue.take(0.0, 0.0, 2) == [1, None]
    assert len(queue) == 1
    assert queue.take(0.0) == [["list"]]
    assert len(queue) == 0


@pytest.mark.parametrize("spin_us", [0.0, 100.0])
def test_an_empty_queue_gives_an_empty_list_after_the_timeout(spin_us):
    queue = ThreadQueue()
    assert queue.take(0.0, spin_us) == []
    assert queue.take(0.01, spin_us) == []


@pytest.mark.parametrize("spin_us", [0.0, 100.0])
def test_a_put_from_another_thread_wakes_a_sleeping_taker(spin_us):
    queue = ThreadQueue()
    timer = threading.Timer(0.05, queue.put, ("late",))  # long after the spin: the taker sleeps
    timer.start()
    try:
        assert queue.take(30.0, spin_us) == ["late"]
    finally:
        timer.join()


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_timeout_that_is_not_a_finite_number_of_seconds_is_refused(bad):
    with pytest.raises(ValueError, match="timeout must be a finite number >= 0"):
        ThreadQueue().take(bad)


def test_a_cycle_through_queued_items_is_collected():
    class Holder:
        pass

    holder = Holder()
    holder.queue = ThreadQueue()
    holder.queue.put(holder)
    alive = weakref.ref(holder)
    del holder
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("spin_us", [0.0, 100.0])
def test_many_producers_one_taker_lose_nothing(spin_us):
    """Producers put in bursts with pauses, so the taker goes through every state: items
    waiting, spinning when one comes, asleep when one comes. Each item is taken once, and each
    producer's items in the order it put them."""
    producers, per_producer = 4, 5_000
    queue = ThreadQueue()

    def produce(number):
        rng = random.Random(number)
        for index in range(per_producer):
            queue.put((number, index))
            if rng.random() < 0.01:
                threading.Event().wait(rng.random() / 1000)  # a pause: the taker may sleep

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
    for thread in threads:
        thread.start()
    following = [0] * producers
    rng = random.Random(0)
    taken = 0
    while taken < producers * per_producer:
        items = queue.take(10.0, spin_us, rng.choice([1, 7, 1_000_000]))
        assert items, "a take with items still to come timed out"
        for number, index in items:
            assert index == following[number]
            following[number] += 1
        taken += len(items)
    for thread in threads:
        thread.join()
    assert queue.take(0.0) == []
