"""Exceptions raised in a worker, and results or errors that cannot travel back.

A remote exception must come back with its original type and args, with the
worker's traceback text attached as ``__cause__`` (as CPython does with its
``_RemoteTraceback``). Whatever cannot be pickled must fail the future with an
exception in the caller, never hang it.
"""

from __future__ import annotations

import concurrent.futures
import traceback

import pytest

from support import tasks
from support.limits import RESULT_TIMEOUT


def remote_exception(executor, fn, *args):
    future = executor.submit(fn, *args)
    exception = future.exception(timeout=RESULT_TIMEOUT)
    assert exception is not None, "the task should have failed"
    return exception


# --- type, args, traceback ---------------------------------------------------------------


def test_value_error_keeps_type_and_args(shared_executor):
    exception = remote_exception(shared_executor, tasks.raise_value_error, "bad", 42)
    assert type(exception) is ValueError
    assert exception.args == ("bad", 42)


def test_custom_exception_keeps_type_and_args(shared_executor):
    exception = remote_exception(shared_executor, tasks.raise_custom_error, "custom", 7)
    assert type(exception) is tasks.CustomError
    assert exception.args == ("custom", 7)


def test_key_error_keeps_type_and_args(shared_executor):
    exception = remote_exception(shared_executor, tasks.raise_key_error, "missing")
    assert type(exception) is KeyError
    assert exception.args == ("missing",)


def test_result_reraises_the_remote_exception(shared_executor):
    future = shared_executor.submit(tasks.raise_value_error, "again")
    with pytest.raises(ValueError, match="again"):
        future.result(timeout=RESULT_TIMEOUT)


def test_exception_can_be_caught_with_except(shared_executor):
    future = shared_executor.submit(tasks.raise_key_error, "k")
    try:
        future.result(timeout=RESULT_TIMEOUT)
    except KeyError as caught:
        assert caught.args == ("k",)
    else:
        pytest.fail("KeyError was not raised")


@pytest.mark.process_only
def test_cause_carries_the_remote_traceback(shared_executor):
    exception = remote_exception(shared_executor, tasks.raise_value_error, "traced")
    cause = exception.__cause__
    assert cause is not None, "the remote traceback should be attached as __cause__"
    text = str(cause)
    assert "Traceback" in text
    assert "raise_value_error" in text
    assert "tasks.py" in text
    assert "traced" in text


def test_remote_traceback_shows_in_the_formatted_exception(shared_executor):
    exception = remote_exception(shared_executor, tasks.raise_custom_error, "shown")
    formatted = "".join(traceback.format_exception(exception))
    assert "raise_custom_error" in formatted
    assert "CustomError" in formatted


def test_failing_task_leaves_the_executor_usable(shared_executor):
    remote_exception(shared_executor, tasks.raise_value_error, "once")
    assert shared_executor.submit(tasks.add, 1, 2).result(timeout=RESULT_TIMEOUT) == 3


def test_exception_in_map_is_the_original_type(shared_executor):
    with pytest.raises(KeyError):
        list(shared_executor.map(tasks.raise_key_error, ["a", "b"]))


# --- things that cannot travel ------------------------------------------------------------


def test_unpicklable_exception_still_fails_the_future(executor):
    future = executor.submit(tasks.raise_unpicklable_error)
    exception = future.exception(timeout=RESULT_TIMEOUT)
    assert isinstance(exception, Exception)


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_an_unpicklable_exception_is_named_by_its_type_and_text(shared_executor):
    from gilfree import UnpicklableExceptionError

    future = shared_executor.submit(tasks.raise_unpicklable_error)
    exception = future.exception(timeout=RESULT_TIMEOUT)
    assert isinstance(exception, UnpicklableExceptionError)
    assert isinstance(exception, RuntimeError)
    assert exception.type_name == "UnpicklableError"
    assert "cannot pickle '_thread.lock' object" in exception.reason
    assert str(exception).startswith(f"UnpicklableError: {exception.text} (the original")
    assert "raise_unpicklable_error" in str(exception.__cause__)  # the remote traceback


def test_exception_that_cannot_be_unpickled_still_fails_the_future(executor):
    future = executor.submit(tasks.raise_mismatched_init_error)
    exception = future.exception(timeout=RESULT_TIMEOUT)
    assert isinstance(exception, Exception)


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_an_exception_whose_pickle_cannot_be_loaded_keeps_its_type_text_and_traceback(
    shared_executor, start_method
):
    # Its __init__ takes two arguments and gives Exception one: pickle cannot rebuild it. It
    # used to arrive as BrokenProcessPool (the pool was fine), its text and traceback lost.
    import copyreg

    from gilfree import UnpicklableExceptionError

    if start_method == "fork" and BaseException in copyreg.dispatch_table:
        # distributed, once imported (by an earlier test), pickles every exception by its
        # state: a worker forked from this process rebuilds it, and it arrives as itself.
        pytest.skip("exceptions are pickled by their state in this process")

    future = shared_executor.submit(tasks.raise_mismatched_init_error)
    in_map = shared_executor.map(tasks.raise_mismatched_init_error_if, [False, True])
    for raised in (future.exception(timeout=RESULT_TIMEOUT), _second_error(in_map)):
        assert isinstance(raised, UnpicklableExceptionError)
        assert raised.type_name == "MismatchedInitError"
        assert raised.text == "a-b"
        assert "its pickle cannot be loaded" in raised.reason and "__init__()" in raised.reason
        assert "raise_mismatched_init_error" in str(raised.__cause__)  # the remote traceback
    assert shared_executor.submit(tasks.add, 1, 2).result(timeout=RESULT_TIMEOUT) == 3


def _second_error(results):
    assert next(results) is None
    try:
        next(results)
    except Exception as error:
        return error
    raise AssertionError("the second item did not raise")


@pytest.mark.process_only
def test_unpicklable_result_fails_the_future_and_the_executor_stays_usable(executor):
    future = executor.submit(tasks.return_lock)
    exception = future.exception(timeout=RESULT_TIMEOUT)
    assert isinstance(exception, Exception)
    assert not isinstance(exception, concurrent.futures.TimeoutError)
    assert executor.submit(tasks.add, 2, 3).result(timeout=RESULT_TIMEOUT) == 5
    assert list(executor.map(tasks.square, range(5))) == [0, 1, 4, 9, 16]


@pytest.mark.process_only
def test_system_exit_while_pickling_the_result_reaches_the_future(executor):
    # As in concurrent.futures (CPython's test_exit_during_result_pickle_on_worker): the
    # future gets the SystemExit, and the worker goes on.
    future = executor.submit(tasks.return_exits_when_pickled)
    exception = future.exception(timeout=RESULT_TIMEOUT)
    assert type(exception) is SystemExit
    assert exception.args == (1,)
    assert executor.submit(tasks.add, 2, 3).result(timeout=RESULT_TIMEOUT) == 5


@pytest.mark.process_only
def test_unpicklable_argument_raises_in_the_caller(executor):
    # The stdlib fails the future; raising from submit is an exception in the
    # caller too. Either way the executor must stay usable.
    try:
        future = executor.submit(tasks.echo, 1, tasks.return_lock())
    except Exception:
        pass
    else:
        exception = future.exception(timeout=RESULT_TIMEOUT)
        assert isinstance(exception, Exception)
    assert executor.submit(tasks.add, 2, 2).result(timeout=RESULT_TIMEOUT) == 4
