"""Sending values: what cannot be sent is refused before any worker sees it, with its path."""

from __future__ import annotations

import pickle
import threading

import pytest

from support import tasks
from support.limits import RESULT_TIMEOUT

pytestmark = pytest.mark.gilfree_only


@pytest.mark.process_only
@pytest.mark.parametrize("mode", ["w", "r", "r+", "w+", "rb", "a"])
def test_an_open_file_in_the_arguments_is_named_by_its_path(shared_executor, tmp_path, mode):
    # Text files open for reading too: cloudpickle would send a StringIO of their content.
    from gilfree import SerializationError

    (tmp_path / "data.txt").write_text("kept\n")
    with open(tmp_path / "data.txt", mode) as handle:
        future = shared_executor.submit(tasks.echo, 1, {"fh": handle})
        with pytest.raises(SerializationError) as caught:
            future.result(timeout=RESULT_TIMEOUT)
    error = caught.value
    assert isinstance(error, pickle.PicklingError)
    assert isinstance(error, TypeError)  # what the stdlib executor raises for a file
    assert str(error).startswith(
        "args[1]['fh']: cannot send an open file object to another process"
    )
    assert error.path == "args[1]['fh']"
    assert error.__cause__ is not None
    assert (tmp_path / "data.txt").read_text() in ("kept\n", "")  # "w", "w+" emptied it


@pytest.mark.process_only
def test_an_open_file_held_by_a_main_function_sent_by_value_is_refused(shared_executor, tmp_path):
    from gilfree import SerializationError

    with open(tmp_path / "data.txt", "w+") as handle:
        future = shared_executor.submit(tasks.echo, lambda: handle)  # a closure over the file
        with pytest.raises(SerializationError) as caught:
            future.result(timeout=RESULT_TIMEOUT)
    # The message names the captured variable, not the function that carries it.
    where = (
        "args[0] (variable 'handle' of "
        + test_an_open_file_held_by_a_main_function_sent_by_value_is_refused.__qualname__
        + ".<locals>.<lambda>)"
    )
    assert str(caught.value).startswith(
        f"{where}: cannot send an open file object to another process"
    )
    assert caught.value.path == where


#: A global that a function sent by value carries with it.
_LOCK = threading.Lock()


@pytest.mark.process_only
def test_a_function_sent_by_value_is_refused_naming_what_it_captures(shared_executor, tmp_path):
    from gilfree import SerializationError

    def holds_the_lock() -> bool:  # local: sent by value, with the globals it names
        return _LOCK.locked()

    with open(tmp_path / "data.txt", "w") as handle:

        def writes(line: str) -> None:
            handle.write(line)

        future = shared_executor.submit(writes, "x")
        with pytest.raises(
            SerializationError,
            match=r"^fn \(variable 'handle' of .*writes\): "
            r"cannot send an open file object",
        ):
            future.result(timeout=RESULT_TIMEOUT)
    future = shared_executor.submit(tasks.echo, holds_the_lock)
    with pytest.raises(
        SerializationError,
        match=r"^args\[0\] \(global '_LOCK' of .*holds_the_lock\): "
        r"cannot send a thread lock",
    ):
        future.result(timeout=RESULT_TIMEOUT)
    # A recursive function refused for what it captures is looked into once.
    with open(tmp_path / "data.txt", "w") as handle:

        def countdown(n: int) -> int:
            handle.write(str(n))
            return n if n == 0 else countdown(n - 1)

        future = shared_executor.submit(countdown, 3)
        with pytest.raises(SerializationError, match=r"^fn \(variable 'handle' of .*countdown\): "):
            future.result(timeout=RESULT_TIMEOUT)


@pytest.mark.process_only
def test_a_keyword_argument_is_named_too(shared_executor):
    from gilfree import SerializationError

    future = shared_executor.submit(tasks.echo, lock=threading.Lock())
    with pytest.raises(SerializationError, match=r"^kwargs\['lock'\]: cannot send a thread lock"):
        future.result(timeout=RESULT_TIMEOUT)


@pytest.mark.process_only
def test_code_written_for_the_stdlib_catches_the_error_as_the_type_it_met(shared_executor):
    # The stdlib's executor raises pickle's TypeError for a lock: ``except TypeError`` must
    # still catch gilfree's SerializationError.
    future = shared_executor.submit(tasks.echo, threading.Lock())
    with pytest.raises(TypeError, match=r"^args\[0\]: cannot send a thread lock"):
        future.result(timeout=RESULT_TIMEOUT)


@pytest.mark.process_only
def test_a_map_item_that_cannot_be_sent_is_named_by_its_position(shared_executor):
    from gilfree import SerializationError

    items = [1, 2, (n for n in range(3))]
    with pytest.raises(SerializationError, match=r"^map item 2: cannot send a generator"):
        list(shared_executor.map(tasks.square, items))


@pytest.mark.process_only
@pytest.mark.parametrize("chunksize", [1, 4])
def test_a_map_result_that_cannot_be_sent_is_named_by_its_place_in_the_map(
    shared_executor, chunksize
):
    from gilfree import SerializationError

    results = shared_executor.map(tasks.lock_at, range(10), [6] * 10, chunksize=chunksize)
    with pytest.raises(SerializationError) as caught:
        list(results)
    assert str(caught.value).startswith("result[6]['lock']: cannot send a thread lock")
    assert caught.value.path == "result[6]['lock']"


@pytest.mark.process_only
def test_the_refused_task_never_reaches_a_worker(shared_executor):
    from gilfree import SerializationError

    with pytest.raises(SerializationError):
        shared_executor.submit(tasks.echo, threading.Lock()).result(timeout=RESULT_TIMEOUT)
    assert shared_executor.submit(tasks.square, 7).result(timeout=RESULT_TIMEOUT) == 49


def test_lambdas_and_closures_can_be_arguments_and_results(shared_executor):
    offset = 5
    result = shared_executor.submit(tasks.call_with, lambda value: value + offset, 10)
    assert result.result(timeout=RESULT_TIMEOUT) == 15
    made = shared_executor.submit(tasks.make_adder, 3).result(timeout=RESULT_TIMEOUT)
    assert made(4) == 7
