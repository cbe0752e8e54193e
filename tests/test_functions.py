"""Which callables can be submitted: by reference and, with gilfree, by value.

Importable functions, builtins, partials and bound methods travel by
reference and work with the stdlib too. Lambdas, closures and nested
functions can only travel by value (cloudpickle), which is gilfree's job;
those tests are marked ``gilfree_only``. Each distinct function is cached per
worker, so the tests also check that the cache never confuses two functions.
"""

from __future__ import annotations

import functools
import json
import os
import textwrap

import pytest

from conftest import IMPL
from support import tasks
from support.limits import RESULT_TIMEOUT
from support.processes import run_script

# --- by reference (stdlib-compatible) ---------------------------------------------------


def test_module_level_function(shared_executor):
    assert shared_executor.submit(tasks.square, 12).result(timeout=RESULT_TIMEOUT) == 144


def test_functools_partial(shared_executor):
    add_ten = functools.partial(tasks.add, 10)
    assert shared_executor.submit(add_ten, 5).result(timeout=RESULT_TIMEOUT) == 15
    assert list(shared_executor.map(add_ten, range(3))) == [10, 11, 12]


def test_partial_with_keyword_arguments(shared_executor):
    echo = functools.partial(tasks.echo, 1, key="value")
    result = shared_executor.submit(echo, 2).result(timeout=RESULT_TIMEOUT)
    assert result == ((1, 2), {"key": "value"})


def test_builtin_pow(shared_executor):
    assert shared_executor.submit(pow, 2, 10).result(timeout=RESULT_TIMEOUT) == 1024
    assert shared_executor.submit(pow, 3, 4, 5).result(timeout=RESULT_TIMEOUT) == 81 % 5


def test_builtin_len_in_map(shared_executor):
    assert list(shared_executor.map(len, ["", "a", "abc"])) == [0, 1, 3]


def test_bound_method_of_a_picklable_object(shared_executor):
    tripler = tasks.Multiplier(3)
    assert shared_executor.submit(tripler.apply, 7).result(timeout=RESULT_TIMEOUT) == 21
    assert list(shared_executor.map(tripler.apply, [1, 2])) == [3, 6]


def test_distinct_bound_methods_are_not_confused(shared_executor):
    futures = [shared_executor.submit(tasks.Multiplier(k).apply, 10) for k in range(20)]
    assert [f.result(timeout=RESULT_TIMEOUT) for f in futures] == [10 * k for k in range(20)]


# --- by value (gilfree only) ---------------------------------------------------------------


@pytest.mark.gilfree_only
def test_lambda(shared_executor):
    assert shared_executor.submit(lambda x: x + 1, 41).result(timeout=RESULT_TIMEOUT) == 42


@pytest.mark.gilfree_only
def test_lambda_in_map(shared_executor):
    assert list(shared_executor.map(lambda x, y: x * y, range(5), range(5))) == [0, 1, 4, 9, 16]


@pytest.mark.gilfree_only
def test_closure_capturing_a_local(shared_executor):
    offset = 100

    def shift(x):
        return x + offset

    assert shared_executor.submit(shift, 1).result(timeout=RESULT_TIMEOUT) == 101


@pytest.mark.gilfree_only
def test_nested_function_calling_another_nested_function(shared_executor):
    def inner(x):
        return x * 2

    def outer(x):
        return inner(x) + 1

    assert list(shared_executor.map(outer, range(4))) == [1, 3, 5, 7]


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_nested_function_using_module_globals(shared_executor):
    def where():
        return os.getpid()

    assert shared_executor.submit(where).result(timeout=RESULT_TIMEOUT) != os.getpid()


@pytest.mark.gilfree_only
def test_same_lambda_submitted_many_times(shared_executor):
    triple = lambda x: x * 3
    futures = [shared_executor.submit(triple, i) for i in range(300)]
    assert [f.result(timeout=RESULT_TIMEOUT) for f in futures] == [3 * i for i in range(300)]


@pytest.mark.gilfree_only
def test_closures_sharing_code_but_not_cells_are_distinct(shared_executor):
    def make_adder(k):
        return lambda x: x + k

    adders = [make_adder(k) for k in range(10)]
    futures = [shared_executor.submit(adder, 1000) for adder in adders]
    assert [f.result(timeout=RESULT_TIMEOUT) for f in futures] == [1000 + k for k in range(10)]


@pytest.mark.gilfree_only
def test_fresh_lambdas_reusing_a_freed_id_are_not_confused(shared_executor):
    # Each lambda is dropped before the next one is made, so CPython will
    # usually hand out the same id() again; a cache keyed by id() alone breaks.
    results = []
    for k in range(30):
        fn = lambda x, k=k: x * 1000 + k
        results.append(shared_executor.submit(fn, 1).result(timeout=RESULT_TIMEOUT))
        del fn
    assert results == [1000 + k for k in range(30)]


@pytest.mark.gilfree_only
def test_lambda_with_partial(shared_executor):
    scaled = functools.partial(lambda x, factor: x * factor, factor=5)
    assert shared_executor.submit(scaled, 4).result(timeout=RESULT_TIMEOUT) == 20


# --- a function defined in __main__ ------------------------------------------------------

MAIN_SCRIPT = textwrap.dedent(
    """
    import concurrent.futures
    import json
    import multiprocessing
    import os
    import sys

    IMPL = os.environ.get("GILFREE_TEST_IMPL", "gilfree")
    START_METHOD = sys.argv[1]
    STDLIB_METHOD = {"zygote": "forkserver", "spawn": "spawn", "fork": "fork"}


    def cube(x):
        return x ** 3


    def make_executor():
        if IMPL == "stdlib":
            context = multiprocessing.get_context(STDLIB_METHOD[START_METHOD])
            return concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=context)
        import gilfree
        return gilfree.ProcessPoolExecutor(max_workers=2, start_method=START_METHOD)


    if __name__ == "__main__":
        output = {}
        with make_executor() as executor:
            output["map"] = list(executor.map(cube, range(6)))
            output["submit"] = executor.submit(cube, 7).result(timeout=30)
            if IMPL != "stdlib":
                base = 10
                output["closure"] = executor.submit(lambda x: x + base, 5).result(timeout=30)
        print(json.dumps(output))
    """
)


@pytest.mark.process_only
def test_function_defined_in_main_script(tmp_path, start_method):
    returncode, stdout, stderr = run_script(tmp_path, MAIN_SCRIPT, start_method)
    assert returncode == 0, stderr
    output = json.loads(stdout.strip().splitlines()[-1])
    assert output["map"] == [x**3 for x in range(6)]
    assert output["submit"] == 343
    if IMPL != "stdlib":
        assert output["closure"] == 15
