"""``_recovery.settle``: the fate of the units a dead worker had in flight (no processes)."""

from __future__ import annotations

import concurrent.futures
import signal
from types import SimpleNamespace

import pytest

from gilfree._engine.recovery import Ending, settle
from gilfree._engine.units import function_name
from gilfree.errors import TaskTimeoutError, WorkerCrashedError

pytestmark = pytest.mark.gilfree_only


def task(name, retries=0, timeout=None):
    def fn():
        pass

    fn.__qualname__ = name
    return SimpleNamespace(
        fn=fn, retries=retries, attempts=1, timeout=timeout, name=lambda: function_name(fn)
    )


def test_the_running_unit_fails_and_the_ones_queued_behind_it_are_sent_again():
    running, queued, last = task("running"), task("queued"), task("last")
    settlement = settle([(1, running), (2, queued), (3, last)], Ending(42, -signal.SIGKILL))
    assert settlement.resend == [queued, last]
    [(unit, error)] = settlement.failed
    assert unit is running and isinstance(error, WorkerCrashedError)
    assert "worker pid 42" in str(error) and "signal SIGKILL" in str(error)
    assert "running" in str(error) and "tried" not in str(error)


def test_a_unit_with_retries_left_is_sent_again_and_counts_its_attempts():
    flaky = task("flaky", retries=2)
    assert settle([(1, flaky)], Ending(1, 3)).resend == [flaky]
    assert (flaky.retries, flaky.attempts) == (1, 2)
    assert settle([(2, flaky)], Ending(2, 3)).resend == [flaky]
    [(unit, error)] = settle([(3, flaky)], Ending(3, 3)).failed
    assert unit is flaky and "exit code 3" in str(error) and "tried 3 times" in str(error)


def test_a_timed_out_unit_fails_without_retry_and_the_others_are_sent_again():
    slow, other = task("slow", retries=5, timeout=0.5), task("other")
    settlement = settle([(7, slow), (8, other)], Ending(9, -signal.SIGKILL, timed_out_task=7))
    assert settlement.resend == [other]
    [(unit, error)] = settlement.failed
    assert unit is slow and isinstance(error, TaskTimeoutError) and isinstance(error, TimeoutError)
    assert "0.5 s" in str(error) and "pid 9" in str(error) and slow.retries == 5


def test_when_the_timed_out_unit_had_already_finished_everything_is_sent_again():
    queued = task("queued")
    settlement = settle([(8, queued)], Ending(9, -signal.SIGKILL, timed_out_task=7))
    assert settlement.resend == [queued] and settlement.failed == []


def test_a_unit_given_up_by_its_caller_is_cancelled_without_retry_and_the_others_sent_again():
    """``kill_on_cancel``: the parent killed the worker for a unit its caller gave up."""
    doomed, other = task("doomed", retries=3), task("other")
    settlement = settle([(7, doomed), (8, other)], Ending(9, -signal.SIGKILL, cancelled_task=7))
    assert settlement.resend == [other]
    [(unit, error)] = settlement.failed
    assert unit is doomed and isinstance(error, concurrent.futures.CancelledError)
    assert "cancelled" in str(error) and "pid 9" in str(error) and doomed.retries == 3
