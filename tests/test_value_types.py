"""Values of any type, through every API: numpy arrays, pandas objects and a value whose ``==``,
``bool``, ``len``, ``hash`` and iteration raise (``support.values.Hostile``) travel as items,
arguments, results, initargs and exception arguments, and gilfree never compares, truth-tests,
measures or hashes them (issue #9).

Each value (``support.values.NAMES``) goes out as an argument and comes back as the result of an
identity function ("identity"), or is built in the worker from its name ("built"), through
``Executor.submit`` / ``map`` (default, ``chunksize=3``, ``timeout=30``, two iterables),
``Pool.map`` / ``map_async`` / ``imap`` / ``imap_unordered`` / ``starmap`` / ``apply_async``
(callbacks included), as ``initargs``, and as ``Process`` arguments. What arrives is checked
with numpy.testing / pandas.testing (dtype, shape, memory order: see ``support.values``), never
with ``==``. Values that cannot be sent are named (``explain``) without touching their
neighbours. Executors and pools are shared per start method (module scope).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import threading

import pytest

from conftest import _STDLIB_START_METHOD, IMPL, IS_CLUSTER, IS_STDLIB, IS_THREAD, create_executor
from support import clusters, values
from support.limits import RESULT_TIMEOUT
from support.processes import shutdown_within_deadline, terminate_within_deadline
from support.values import ITEM_COUNT, NAMES, build

pytestmark = pytest.mark.timeout(60)

MODES = ["identity", "built"]
#: Values carried inside exceptions raised in a worker.
EXCEPTION_VALUES = ["ndarray_2d", "ndarray_large", "dataframe", "hostile"]


def make_pool(start_method):
    """A two-worker ``gilfree.Pool`` (the stdlib's pool under ``GILFREE_TEST_IMPL=stdlib``, a
    cluster's under ``dask`` and ``ray``)."""
    if IS_CLUSTER:
        return clusters.pool(IMPL, 2)
    if IS_STDLIB:
        context = multiprocessing.get_context(_STDLIB_START_METHOD[start_method])
        return multiprocessing.pool.Pool(2, context=context)
    import gilfree

    if IS_THREAD:
        return gilfree.Pool(2, backend="thread")
    return gilfree.Pool(2, context=start_method)


def check(name, received):
    """``values.check``: under the thread backend nothing is pickled, so an array arrives as it
    was sent (a non-contiguous view stays one)."""
    values.check(name, received, pickled=not IS_THREAD)


@pytest.fixture(scope="module")
def pool(start_method):
    """A two-worker pool shared by this module's tests, one per start method."""
    the_pool = make_pool(start_method)
    yield the_pool
    terminate_within_deadline([the_pool])


def items_for(name, mode):
    """``(function, items)`` of a map: the values themselves, or their names."""
    if mode == "identity":
        return values.identity, [build(name) for _ in range(ITEM_COUNT)]
    return values.build_in_worker, [name] * ITEM_COUNT


def tagged_items_for(name, mode):
    """``(function, items)`` of a map whose results are ``(index, value)``."""
    if mode == "identity":
        return values.identity, [(index, build(name)) for index in range(ITEM_COUNT)]
    return values.build_tagged, [(index, name) for index in range(ITEM_COUNT)]


def check_all(name, results):
    assert type(results) is list
    assert len(results) == ITEM_COUNT
    for result in results:
        check(name, result)


def check_tagged(name, results):
    """Checks ``(index, value)`` results in any order: sorted by index alone, never by value."""
    results = sorted(results, key=lambda pair: pair[0])
    assert [index for index, _ in results] == list(range(ITEM_COUNT))
    check_all(name, [value for _, value in results])


# --- executor ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_executor_submit(shared_executor, name, mode):
    if mode == "identity":
        future = shared_executor.submit(values.echo, build(name), keyword=build(name))
        args, kwargs = future.result(timeout=RESULT_TIMEOUT)
        assert len(args) == 1 and list(kwargs) == ["keyword"]
        check(name, args[0])
        check(name, kwargs["keyword"])
    else:
        check(name, shared_executor.submit(values.build_in_worker, name).result(RESULT_TIMEOUT))


MAP_OPTIONS = [{}, {"chunksize": 3}, {"timeout": 30}]


@pytest.mark.parametrize("options", MAP_OPTIONS, ids=["default", "chunksize=3", "timeout=30"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_executor_map(shared_executor, name, mode, options):
    function, items = items_for(name, mode)
    check_all(name, list(shared_executor.map(function, items, **options)))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_executor_map_of_two_iterables(shared_executor, name, mode):
    if mode == "identity":
        function, items = values.pair, [build(name) for _ in range(ITEM_COUNT)]
    else:
        function, items = values.build_pair, [name] * ITEM_COUNT
    results = list(shared_executor.map(function, range(ITEM_COUNT), items, chunksize=2))
    assert [index for index, _ in results] == list(range(ITEM_COUNT))
    check_all(name, [value for _, value in results])


# --- pool --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_pool_map(pool, name, mode):
    function, items = items_for(name, mode)
    check_all(name, pool.map(function, items, chunksize=3))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_pool_map_async_with_callback(pool, name, mode):
    function, items = items_for(name, mode)
    received = []
    result = pool.map_async(function, items, callback=received.append)
    results = result.get(timeout=RESULT_TIMEOUT)
    assert len(received) == 1 and received[0] is results
    check_all(name, results)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_pool_imap(pool, name, mode):
    function, items = items_for(name, mode)
    check_all(name, list(pool.imap(function, iter(items), chunksize=2)))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_pool_imap_unordered(pool, name, mode):
    function, items = tagged_items_for(name, mode)
    check_tagged(name, list(pool.imap_unordered(function, items, chunksize=2)))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_pool_starmap(pool, name, mode):
    if mode == "identity":
        function, items = values.pair, [(index, build(name)) for index in range(ITEM_COUNT)]
    else:
        function, items = values.build_pair, [(index, name) for index in range(ITEM_COUNT)]
    results = pool.starmap(function, items, chunksize=3)
    assert [index for index, _ in results] == list(range(ITEM_COUNT))
    check_all(name, [value for _, value in results])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_pool_apply_async_with_callback(pool, name, mode):
    received = []
    if mode == "identity":
        result = pool.apply_async(
            values.echo, (build(name),), {"keyword": build(name)}, callback=received.append
        )
    else:
        result = pool.apply_async(values.build_in_worker, (name,), callback=received.append)
    value = result.get(timeout=RESULT_TIMEOUT)
    assert result.successful()
    assert len(received) == 1 and received[0] is value
    if mode == "identity":
        args, kwargs = value
        assert len(args) == 1 and list(kwargs) == ["keyword"]
        check(name, args[0])
        check(name, kwargs["keyword"])
    else:
        check(name, value)


# --- initargs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def initialized(start_method):
    """A one-worker executor and a one-worker pool whose initializer was given every value."""
    initargs = tuple(build(name) for name in NAMES)
    executor = create_executor(
        max_workers=1, start_method=start_method, initializer=values.remember, initargs=initargs
    )
    try:
        if IS_STDLIB:
            context = multiprocessing.get_context(_STDLIB_START_METHOD[start_method])
            the_pool = multiprocessing.pool.Pool(1, values.remember, initargs, context=context)
        else:
            import gilfree

            where = {"backend": "thread"} if IS_THREAD else {"context": start_method}
            the_pool = gilfree.Pool(1, values.remember, initargs, **where)
        try:
            yield executor, the_pool
        finally:
            terminate_within_deadline([the_pool])
    finally:
        shutdown_within_deadline([executor])


@pytest.mark.local_only("initializer: a cluster prepares its workers its own way")
@pytest.mark.parametrize("name", NAMES)
def test_initargs_arrive_intact(initialized, name):
    executor, the_pool = initialized
    check(name, executor.submit(values.recall, name).result(timeout=RESULT_TIMEOUT))
    check(name, the_pool.apply_async(values.recall, (name,)).get(timeout=RESULT_TIMEOUT))


# --- exceptions --------------------------------------------------------------------------------


def check_exception(name, error):
    """``error`` is the worker's ``ValueCarryingError`` with the value in its args."""
    assert type(error) is values.ValueCarryingError
    assert len(error.args) == 1
    check(name, error.args[0])


@pytest.mark.parametrize("name", EXCEPTION_VALUES)
def test_an_exception_holding_a_value_arrives_with_its_type(shared_executor, pool, name):
    future = shared_executor.submit(values.raise_with, name)
    check_exception(name, future.exception(timeout=RESULT_TIMEOUT))

    with pytest.raises(values.ValueCarryingError) as caught:
        list(shared_executor.map(values.raise_with, [name] * 3, chunksize=2))
    check_exception(name, caught.value)

    errors = []
    result = pool.apply_async(values.raise_with, (name,), error_callback=errors.append)
    with pytest.raises(values.ValueCarryingError) as caught:
        result.get(timeout=RESULT_TIMEOUT)
    check_exception(name, caught.value)
    assert len(errors) == 1 and errors[0] is caught.value

    with pytest.raises(values.ValueCarryingError) as caught:
        pool.map(values.raise_with, [name] * 3)
    check_exception(name, caught.value)

    with pytest.raises(values.ValueCarryingError) as caught:
        next(pool.imap(values.raise_with, [name]))
    check_exception(name, caught.value)


# --- values that cannot be sent, among values that must not be touched ------------------------


@pytest.mark.local_only("a cluster's engine sends each argument and result on its own")
@pytest.mark.parametrize("name", ["ndarray_2d", "ndarray_large", "dataframe", "series", "hostile"])
def test_a_value_sent_twice_arrives_as_one_object_as_pickle_keeps_it(shared_executor, pool, name):
    # Writing through one must show through the other, as with the stdlib: not two copies.
    value = build(name)
    submitted = shared_executor.submit(values.is_one_object, value, [value])
    assert submitted.result(timeout=RESULT_TIMEOUT) is True
    assert pool.apply(values.is_one_object, (value, [value])) is True
    mapped = shared_executor.map(values.is_one_object, [value] * 3, [[value]] * 3, chunksize=3)
    assert list(mapped) == [True] * 3
    received, holder = shared_executor.submit(values.twice, name).result(timeout=RESULT_TIMEOUT)
    assert received is holder[0]
    check(name, received)


@pytest.mark.local_only("a cluster's engine sends each argument and result on its own")
def test_objects_sharing_a_member_arrive_sharing_it_as_pickle_keeps_it(shared_executor, pool):
    # Each object pickled on its own would carry its own copy of what they share.
    value = values.shared_through_holders()
    assert shared_executor.submit(values.sharing_kept, value).result(timeout=RESULT_TIMEOUT)
    assert pool.apply(values.sharing_kept, (value,)) is True
    mapped = shared_executor.map(values.sharing_kept, [value] * 3, chunksize=3)
    assert list(mapped) == [True] * 3
    received = shared_executor.submit(values.shared_through_holders).result(timeout=RESULT_TIMEOUT)
    assert values.sharing_kept(received)
    received[0].data.append(4)
    assert received[1].data == [1, 2, 3, 4]


@pytest.mark.gilfree_only
@pytest.mark.sends_values
def test_explain_names_the_unsendable_part_without_touching_the_values(shared_executor):
    from gilfree import SerializationError

    future = shared_executor.submit(values.identity, values.unsendable())
    with pytest.raises(SerializationError) as caught:
        future.result(timeout=RESULT_TIMEOUT)
    assert caught.value.path == "args[0][2]['lock']"

    future = shared_executor.submit(values.identity, values.Hostile(threading.Lock()))
    with pytest.raises(SerializationError, match=r"^args\[0\]: cannot send a Hostile object"):
        future.result(timeout=RESULT_TIMEOUT)

    items = [build("ndarray_2d"), values.Hostile(2), threading.Lock()]
    with pytest.raises(SerializationError, match=r"^map item 2: cannot send a thread lock"):
        list(shared_executor.map(values.identity, items))


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_a_result_that_cannot_be_sent_is_named_without_touching_the_values(shared_executor, pool):
    from multiprocessing.pool import MaybeEncodingError

    from gilfree import SerializationError

    future = shared_executor.submit(values.unsendable)
    with pytest.raises(SerializationError) as caught:
        future.result(timeout=RESULT_TIMEOUT)
    assert caught.value.path == "result[2]['lock']"
    with pytest.raises(MaybeEncodingError):
        pool.apply(values.unsendable)


# --- Process -----------------------------------------------------------------------------------


def process_class():
    if IS_STDLIB:
        return multiprocessing.Process
    import gilfree

    return gilfree.Process


@pytest.fixture(scope="module")
def process_report():
    """One Process given every value twice, positionally and by keyword; its child checks them
    and reports ``{"args[i]" | "kwargs[name]": None | traceback}`` through a Pipe. (A Process
    has no start method to choose: gilfree's start from the zygote, the stdlib's with its
    default.)"""
    receiver, sender = multiprocessing.Pipe(duplex=False)
    # The stdlib's default fork hands the child the objects themselves, not pickles of them.
    pickled = not IS_STDLIB or multiprocessing.get_start_method() != "fork"
    process = process_class()(
        target=values.check_in_child,
        args=(sender, pickled, *(build(name) for name in NAMES)),
        kwargs={name: build(name) for name in NAMES},
    )
    try:
        process.start()
        sender.close()
        if not IS_STDLIB:
            assert type(process._popen).__name__ == "ZygotePopen", "fell back to the stdlib's start"
        assert receiver.poll(RESULT_TIMEOUT), "the child sent no report"
        report = receiver.recv()
        process.join(RESULT_TIMEOUT)
        yield process.exitcode, report
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join(RESULT_TIMEOUT)


@pytest.mark.parametrize("name", NAMES)
def test_process_arguments_arrive_intact(process_report, name):
    exitcode, report = process_report
    index = NAMES.index(name)
    assert report[f"args[{index}]"] is None, report[f"args[{index}]"]
    assert report[f"kwargs[{name}]"] is None, report[f"kwargs[{name}]"]
    assert exitcode == 0
