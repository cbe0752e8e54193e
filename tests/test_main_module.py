"""``__main__`` shared as multiprocessing shares it, and loaded once in the template process.

Each test runs a real script (``python script.py START_METHOD``) whose functions live in its
``__main__``, as a user's do, under every start method and, where the behaviour is the stdlib's
too, against the stdlib (``GILFREE_TEST_IMPL=stdlib``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import IMPL, IS_THREAD
from support.notebooks import run_notebook
from support.processes import run_script

#: Opens every script: picks gilfree or the stdlib, with the start method from argv.
PREAMBLE = textwrap.dedent(
    """
    import concurrent.futures
    import json
    import multiprocessing
    import os
    import sys

    IMPL = os.environ.get("GILFREE_TEST_IMPL", "gilfree")
    METHOD = sys.argv[1]
    STDLIB_METHOD = {"zygote": "forkserver", "spawn": "spawn", "fork": "fork"}[METHOD]


    def make_executor(workers=2, **kwargs):
        if IMPL == "stdlib":
            context = multiprocessing.get_context(STDLIB_METHOD)
            return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, **kwargs)
        import gilfree
        return gilfree.ProcessPoolExecutor(workers, start_method=METHOD, **kwargs)


    def make_pool(**kwargs):
        context = multiprocessing.get_context(STDLIB_METHOD)
        if IMPL == "stdlib":
            return context.Pool(2, **kwargs)
        import gilfree
        return gilfree.Pool(2, context=None if METHOD == "zygote" else context, **kwargs)
    """
)


def run(tmp_path, body: str, start_method: str) -> dict:
    """Runs PREAMBLE + ``body``; returns the JSON object its last line prints."""
    returncode, stdout, stderr = run_script(
        tmp_path, PREAMBLE + textwrap.dedent(body), start_method
    )
    assert returncode == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1])


INITIALIZER = """
    scale = 1


    def init(k):
        global scale
        scale = k


    def task(i):
        return i * scale


    if __name__ == "__main__":
        output = {}
        with make_executor(initializer=init, initargs=(10,)) as executor:
            output["map"] = list(executor.map(task, range(4)))
            output["submit"] = executor.submit(task, 5).result(timeout=30)
        with make_pool(initializer=init, initargs=(7,)) as pool:
            output["pool"] = pool.map(task, range(4))
            output["apply"] = pool.apply_async(task, (3,)).get(timeout=30)
        print(json.dumps(output))
"""


@pytest.mark.process_only
def test_an_initializers_globals_reach_the_tasks(tmp_path, start_method):
    output = run(tmp_path, INITIALIZER, start_method)
    assert output == {"map": [0, 10, 20, 30], "submit": 50, "pool": [0, 7, 14, 21], "apply": 21}


STATE = """
    cache = {}


    def remember(key, value):
        cache[key] = value


    def recall(key):
        return cache.get(key)


    if __name__ == "__main__":
        with make_executor(workers=1) as executor:
            executor.submit(remember, "k", 42).result(timeout=30)
            seen = [executor.submit(recall, "k").result(timeout=30) for _ in range(2)]
            seen += list(executor.map(recall, ["k", "k"]))
        print(json.dumps({"seen": seen}))
"""


@pytest.mark.process_only
def test_a_global_filled_by_one_task_is_read_by_the_next(tmp_path, start_method):
    assert run(tmp_path, STATE, start_method) == {"seen": [42] * 4}


BY_VALUE = """
    counter = {"calls": 0}


    def bump():
        counter["calls"] += 1
        return counter["calls"]


    if __name__ == "__main__":
        limit = 3  # defined under the guard: workers have no such name until one is sent
        late = lambda: bump() + limit  # by value; bump and counter are the worker's own
        with make_executor(workers=1) as executor:
            executor.submit(bump).result(timeout=30)
            late_values = [executor.submit(late).result(timeout=30) for _ in range(2)]

            def nested():
                return counter["calls"]

            calls = executor.submit(nested).result(timeout=30)
        print(json.dumps({"late": late_values, "calls": calls}))
"""


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_by_value_functions_share_the_workers_main_namespace(tmp_path, start_method):
    output = run(tmp_path, BY_VALUE, start_method)
    # ``bump`` ran once, then each call to ``late`` bumps the same counter: one namespace per
    # worker. Private copies of the globals would give [4, 4] and 0.
    assert output == {"late": [5, 6], "calls": 3}


REBOUND = """
    def version():
        return "top level"


    def caller():
        return version()


    if __name__ == "__main__":
        original = version

        def version():  # rebound under the guard: workers keep the script's own
            return "rebound"

        with make_executor() as executor:
            output = {
                "caller": executor.submit(caller).result(timeout=30),
                "version": executor.submit(version).result(timeout=30),
            }
            if IMPL != "stdlib":  # the stdlib cannot send a function no name leads to
                output["original"] = executor.submit(original).result(timeout=30)
        print(json.dumps(output))
"""


@pytest.mark.process_only
def test_names_rebound_since_keep_the_workers_own(tmp_path, start_method):
    output = run(tmp_path, REBOUND, start_method)
    # A name is looked up in the worker's own main module, as the stdlib does: forked workers
    # inherited the rebinding, the others ran the script's top level only.
    expected = "rebound" if start_method == "fork" else "top level"
    assert output["caller"] == output["version"] == expected
    if IMPL != "stdlib":
        assert output["original"] == "top level"  # by value: no name leads to it any more


REDEFINED = """
    def call(function, x):
        return function(x)


    def make(cls):
        return cls().who()


    if __name__ == "__main__":
        with make_executor(workers=1) as executor:
            executor.submit(abs, 0).result(timeout=30)  # a forked worker: started before f

            def f(x):
                f.calls = getattr(f, "calls", 0) + 1  # on the worker's copy of f
                return ["v1", x, f.calls]

            class C:
                def who(self):
                    return "C1"

            def helper():
                return "h1"

            def via_global(_):
                return helper()

            first = [executor.submit(call, f, 1).result(timeout=30) for _ in range(2)]
            first += [executor.submit(make, C).result(timeout=30)]
            first += [executor.submit(via_global, 0).result(timeout=30)]

            def f(x):
                return ["v2", x]

            class C:
                def who(self):
                    return "C2"

            def helper():
                return "h2"

            def via_global(_):
                return helper() + "!"

            second = [
                executor.submit(call, f, 1).result(timeout=30),
                executor.submit(make, C).result(timeout=30),
                executor.submit(f, 2).result(timeout=30),
                executor.submit(via_global, 0).result(timeout=30),
            ]
        print(json.dumps({"first": first, "second": second}))
"""


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_a_function_or_class_redefined_in_the_parent_arrives_as_redefined(tmp_path, start_method):
    output = run(tmp_path, REDEFINED, start_method)
    # The same function sent twice is one copy in the worker (its attribute counts 2 calls);
    # a new definition under the same name replaces it, as an argument (by value each time)
    # as well as the task, and for the functions that refer to it by name.
    assert output == {
        "first": [["v1", 1, 1], ["v1", 1, 2], "C1", "h1"],
        "second": [["v2", 1], "C2", ["v2", 2], "h2!"],
    }


RUNS_ONCE = """
    with open("imports.log", "a") as log:
        log.write(f"{os.getpid()}\\n")


    def where(_):
        return os.getpid()


    if __name__ == "__main__":
        with make_executor() as executor:
            pids = set(executor.map(where, range(50), chunksize=1))
            while len(pids) < 2:
                pids |= set(executor.map(where, range(50), chunksize=1))
        with open("imports.log") as log:
            importers = log.read().split()
        print(json.dumps({"importers": len(importers), "workers": len(pids)}))
"""


@pytest.mark.gilfree_only
@pytest.mark.process_only
def test_the_main_script_runs_once_per_template_not_per_worker(tmp_path, start_method):
    output = run(tmp_path, RUNS_ONCE, start_method)
    assert output["workers"] == 2
    expected = {"zygote": 2, "spawn": 3, "fork": 1}[start_method]  # parent + template / workers
    assert output["importers"] == expected


TOP_LEVEL_ATEXIT = """
    import atexit

    RESULTS = []


    def save():
        with open(os.environ["ATEXIT_LOG"], "a") as log:
            log.write(f"{__name__} {len(RESULTS)}\\n")


    atexit.register(save)


    def square(x):
        return x * x


    if __name__ == "__main__":
        with make_executor() as executor:
            RESULTS.extend(executor.map(square, range(4)))
        print(json.dumps({"results": RESULTS}))
"""


@pytest.mark.gilfree_only
def test_the_scripts_atexit_handlers_run_in_the_parent_not_in_the_template(tmp_path, monkeypatch):
    # The template runs the script's top level, which registers the handler there too: run at
    # the template's exit, after the parent's, it would overwrite what the parent saved.
    log = tmp_path / "atexit.log"
    monkeypatch.setenv("ATEXIT_LOG", str(log))
    assert run(tmp_path, TOP_LEVEL_ATEXIT, "zygote") == {"results": [0, 1, 4, 9]}
    assert log.read_text().splitlines() == ["__main__ 4"]


THREADED_IMPORT = """
    import threading
    import time

    threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
    marker = "loaded"


    def read_marker(_):
        return marker


    if __name__ == "__main__":
        with make_executor() as executor:
            print(json.dumps({"markers": list(executor.map(read_marker, range(4)))}))
"""


@pytest.mark.gilfree_only
def test_a_script_that_starts_a_thread_at_import_still_works(tmp_path):
    # The zygote must not fork with a thread: it starts over without the script, and each
    # worker runs the script itself.
    returncode, stdout, stderr = run_script(
        tmp_path, PREAMBLE + textwrap.dedent(THREADED_IMPORT), "zygote"
    )
    assert returncode == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1]) == {"markers": ["loaded"] * 4}
    assert "started 1 thread(s)" in stderr


FAILING_IMPORT = """
    if os.environ.get("GILFREE_TEST_PARENT") != str(os.getpid()):
        raise ValueError("the script refuses to run here")


    def task(x):
        return x


    if __name__ == "__main__":
        from concurrent.futures.process import BrokenProcessPool
        with make_executor() as executor:
            try:
                executor.submit(task, 1).result(timeout=30)
            except BrokenProcessPool as error:
                cause = error.__cause__
                print(json.dumps({"broken": True, "cause": repr(cause)}))
"""


@pytest.mark.gilfree_only
@pytest.mark.parametrize("method", ["zygote", "spawn"])
def test_a_main_script_failing_in_the_workers_breaks_the_pool(tmp_path, method, monkeypatch):
    source = PREAMBLE + "os.environ.setdefault('GILFREE_TEST_PARENT', str(os.getpid()))\n"
    source += textwrap.dedent(FAILING_IMPORT)
    returncode, stdout, stderr = run_script(tmp_path, source, method)
    assert returncode == 0, stderr
    output = json.loads(stdout.strip().splitlines()[-1])
    assert output["broken"] is True
    assert "the script refuses to run here" in output["cause"] + stderr


UNGUARDED = """
    def task(x):
        return x * 2


    executor = make_executor()
    print(json.dumps({"result": executor.submit(task, 21).result(timeout=30)}))
    executor.shutdown()
"""


@pytest.mark.gilfree_only
def test_an_unguarded_script_is_refused_in_the_template_not_forked_forever(tmp_path):
    returncode, stdout, stderr = run_script(
        tmp_path, PREAMBLE + textwrap.dedent(UNGUARDED), "zygote"
    )
    # The parent's own executor fails (its workers cannot run the script), as with spawn;
    # what matters is that no process starts another template in a loop.
    assert "if __name__ == '__main__':" in stdout + stderr
    assert returncode != 0 or "result" not in stdout


THREAD_LIMITS = """
    import numpy


    def environment(_):
        return os.environ.get("OPENBLAS_NUM_THREADS")


    if __name__ == "__main__":
        with make_executor() as executor:
            print(json.dumps({"values": list(executor.map(environment, range(2)))}))
"""


@pytest.mark.gilfree_only
def test_workers_get_the_parents_environment_back(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    output = run(tmp_path, THREAD_LIMITS, "zygote")
    assert output == {"values": [None, None]}


ENVIRONMENT_CHANGES = """
    def read(name):
        return os.environ.get(name)


    if __name__ == "__main__":
        import gilfree

        os.environ["GILFREE_TEST_SETTING"] = "first"
        os.environ.pop("GILFREE_TEST_GONE", None)
        output = {}
        with make_executor() as executor:  # the template starts here
            output["first"] = executor.submit(read, "GILFREE_TEST_SETTING").result(timeout=30)
        os.environ["GILFREE_TEST_SETTING"] = "second"
        os.environ["GILFREE_TEST_GONE"] = "set"
        with make_executor() as executor:
            output["second"] = list(executor.map(read, ["GILFREE_TEST_SETTING"] * 2))
        del os.environ["GILFREE_TEST_GONE"]
        with make_pool() as pool:
            output["pool"] = pool.map(read, ["GILFREE_TEST_SETTING", "GILFREE_TEST_GONE"])
        print(json.dumps(output))
"""


@pytest.mark.process_only
def test_workers_see_the_environment_as_it_is_when_they_start(tmp_path, start_method):
    # As the stdlib's spawn and fork give it. gilfree's template started with the first
    # executor, in the environment of then; the stdlib's forkserver keeps that one.
    if IMPL == "stdlib" and start_method == "zygote":
        pytest.skip("the stdlib's forkserver gives its children its own environment")
    output = run(tmp_path, ENVIRONMENT_CHANGES, start_method)
    assert output == {"first": "first", "second": ["second"] * 2, "pool": ["second", None]}


WORKER_IDENTITY = """
    import multiprocessing
    import time


    def identity(_):
        time.sleep(0.05)  # long enough for both workers to take some
        current = multiprocessing.current_process()
        parent = multiprocessing.parent_process()
        main_only = current.name == "MainProcess"  # a common guard for code of the parent only
        return [os.getpid(), current.name, list(current._identity), main_only,
                parent.pid if parent else None, bool(parent and parent.is_alive())]


    if __name__ == "__main__":
        output = {"parent": os.getpid()}
        with make_executor() as executor:
            output["executor"] = list(executor.map(identity, range(8)))
        with make_pool() as pool:
            output["pool"] = pool.map(identity, range(8))
        print(json.dumps(output))
"""


@pytest.mark.process_only
def test_a_worker_is_a_multiprocessing_child_not_the_main_process(tmp_path, start_method):
    # As in the stdlib's workers: code guarded by ``current_process().name == "MainProcess"``
    # runs in the parent only, ``_identity[0]`` numbers each worker (a common per-worker seed),
    # and ``parent_process()`` is the parent. Workers used to say MainProcess, with neither.
    output = run(tmp_path, WORKER_IDENTITY, start_method)
    for api in ("executor", "pool"):
        numbers = {}
        for pid, name, identity, main_only, parent, parent_alive in output[api]:
            assert not main_only, f"{api}: a worker named {name}"
            assert len(identity) == 1 and identity[0] >= 1, identity
            assert name.endswith(f"-{identity[0]}"), name
            assert (parent, parent_alive) == (output["parent"], True)
            numbers.setdefault(pid, set()).add(identity[0])
        assert all(len(found) == 1 for found in numbers.values()), f"{api}: {numbers}"
        distinct = [next(iter(found)) for found in numbers.values()]
        assert len(set(distinct)) == len(distinct), f"{api}: workers share a number: {numbers}"


#: The backend under test (``GILFREE_TEST_IMPL=thread``: threads of the kernel's process).
BACKEND = "thread" if IS_THREAD else "process"
NOTEBOOK_CELLS = [
    "import gilfree",
    "scale = 1\ndef init(k):\n    global scale\n    scale = k\ndef task(i):\n    return i * scale",
    f"with gilfree.ProcessPoolExecutor(2, initializer=init, initargs=(10,), backend={BACKEND!r})"
    " as ex:\n"
    "    executor_result = list(ex.map(task, range(4)))\n"
    f"with gilfree.Pool(2, initializer=init, initargs=(3,), backend={BACKEND!r}) as pool:\n"
    "    pool_result = pool.map(task, range(4))\n"
    "print(executor_result, pool_result)",
]


@pytest.mark.gilfree_only
@pytest.mark.timeout(120)
def test_the_initializer_pattern_in_a_notebook(tmp_path):
    text = run_notebook(tmp_path, NOTEBOOK_CELLS)
    assert text.strip() == "[0, 10, 20, 30] [0, 3, 6, 9]"


ARGUMENT_CELLS = [
    "import functools, gilfree",
    "def by_last_digit(value):\n    return value % 10\ndef add(a, b):\n    return a + b",
    f"with gilfree.ProcessPoolExecutor(2, backend={BACKEND!r}) as ex:\n"
    "    ordered = ex.submit(sorted, [31, 12, 23], key=by_last_digit).result()\n"
    "    reduced = list(ex.map(functools.reduce, [add, add], [[1, 2, 3], [4, 5]]))\n"
    "print(ordered, reduced)",
]


@pytest.mark.gilfree_only
@pytest.mark.timeout(120)
def test_a_notebook_function_as_an_argument(tmp_path):
    """The workers' main module has no notebook names: a notebook function passed as an
    argument (not as the task) travels by value too."""
    text = run_notebook(tmp_path, ARGUMENT_CELLS)
    assert text.strip() == "[31, 12, 23] [6, 9]"


RUN_UNGUARDED = """
import os
from concurrent.futures import ProcessPoolExecutor

with open("runs.log", "a") as log:
    log.write(f"{os.getpid()}\\n")


def double(x):
    return x * 2


executor = ProcessPoolExecutor(2)
print(executor.submit(double, 21).result(timeout=30))
executor.shutdown()
"""


@pytest.mark.gilfree_only
def test_a_script_read_from_stdin_sends_its_functions_by_value(tmp_path):
    source = textwrap.dedent(
        """
        import gilfree

        OFFSET = 10


        def shifted(x):
            return x + OFFSET


        if __name__ == "__main__":
            with gilfree.ProcessPoolExecutor(2) as executor:
                print(list(executor.map(shifted, range(3))))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-"],
        input=source,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["[10, 11, 12]"]


@pytest.mark.gilfree_only
def test_an_unguarded_script_under_gilfree_run_is_refused_not_run_twice(tmp_path):
    # The template runs the script with the same rebinding as the parent, so its pool is
    # gilfree's there too, and is refused while the script is being imported, as spawn does.
    script = tmp_path / "script.py"
    script.write_text(RUN_UNGUARDED)
    completed = subprocess.run(
        [sys.executable, "-m", "gilfree", "run", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert completed.returncode != 0
    assert "BrokenProcessPool" in completed.stderr
    assert "if __name__ == '__main__':" in completed.stderr
    assert "42" not in completed.stdout
    # The parent ran the top level; the template and each worker started running it and
    # stopped at the pool, none of them got as far as submitting.
    assert (tmp_path / "runs.log").read_text().count("\n") >= 1


BIG_GLOBAL = """
    import numpy

    data = numpy.arange(1_000_000, dtype=numpy.float64)  # 8 MB, built by the script's top level


    def read(index):
        return float(data[index])


    if __name__ == "__main__":
        with make_executor() as executor:
            late = lambda index: float(data[index]) + 0.5  # by value, reads the same global
            output = {
                "read": list(executor.map(read, [0, 999_999])),
                "late": executor.submit(late, 10).result(timeout=30),
                "sizes": [len(executor._engine.function(fn)[1]) for fn in (read, late)],
            }
        print(json.dumps(output))
"""


@pytest.mark.gilfree_only
def test_functions_do_not_carry_globals_the_workers_already_have(tmp_path):
    # The template reports its main module's names: a function the workers have goes by name
    # alone, and a lambda leaves out the globals the workers have (a copy would be 8 MB).
    output = run(tmp_path, BIG_GLOBAL, "zygote")
    assert output["read"] == [0.0, 999_999.0]
    assert output["late"] == 10.5
    assert all(size < 10_000 for size in output["sizes"]), output["sizes"]


COLLECTOR = """
    import gc
    import weakref

    table = {"rows": [[row] for row in range(1000)]}
    made_by_init = None


    def init():
        global made_by_init
        made_by_init = [[1], [2]]


    class Node:
        pass


    def walked():
        tracked = {id(thing) for thing in gc.get_objects()}  # the permanent generation is not
        return {"table": id(table) in tracked, "init": id(made_by_init) in tracked}


    def cycle_collected():
        node = Node()
        node.itself = node
        alive = weakref.ref(node)
        del node
        gc.collect()
        return alive() is None


    if __name__ == "__main__":
        with make_executor(initializer=init) as executor:
            output = executor.submit(walked).result(timeout=30)
            output["collected"] = executor.submit(cycle_collected).result(timeout=30)
        print(json.dumps(output))
"""


@pytest.mark.gilfree_only
@pytest.mark.parametrize("method", ["zygote", "spawn", "fork"])
def test_a_workers_collections_leave_its_imports_and_setup_alone(tmp_path, method):
    # The script's globals and what the initializer made live as long as the worker: they are
    # frozen (the template's objects before each fork, the worker's after its setup), so a
    # collection during a task walks only the task's objects; those are still collected.
    output = run(tmp_path, COLLECTOR, method)
    assert output == {"table": False, "init": False, "collected": True}


GC_SETTINGS = """
    import gc

    SETUP


    def settings():
        return [list(gc.get_threshold()), gc.isenabled()]


    if __name__ == "__main__":
        with make_executor() as executor:
            worker = executor.submit(settings).result(timeout=30)
        print(json.dumps({"worker": worker, "parent": settings()}))
"""


@pytest.mark.parametrize("setup", ["", "gc.set_threshold(1234, 5, 6)", "gc.disable()"])
@pytest.mark.parametrize("method", ["zygote", "spawn", "fork"])
def test_workers_collect_as_the_script_set_the_collector_up(tmp_path, method, setup):
    # The template boots with automatic collection off, then turns it back on: only if the
    # script left it alone.
    output = run(tmp_path, GC_SETTINGS.replace("SETUP", setup), method)
    assert output["worker"] == output["parent"]


INTERPRETER_FLAGS = """
    import warnings


    def flags(_):
        return [sys.flags.optimize, __debug__, [str(f[0]) for f in warnings.filters[:1]]]


    if __name__ == "__main__":
        with make_executor() as executor:
            output = {"executor": list(executor.map(flags, range(2)))}
        with make_pool() as pool:
            output["pool"] = pool.map(flags, range(2))
        print(json.dumps(output))
"""


@pytest.mark.process_only
def test_workers_run_with_the_interpreters_flags(tmp_path, start_method):
    """``python -O -W error script.py``: workers skip asserts and turn warnings into errors as
    the script does (the template and spawned workers ran without the flags)."""
    script = tmp_path / "script.py"
    script.write_text(PREAMBLE + textwrap.dedent(INTERPRETER_FLAGS))
    completed = subprocess.run(
        [sys.executable, "-O", "-W", "error", str(script), start_method],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    expected = [[1, False, ["error"]]] * 2
    assert json.loads(completed.stdout) == {"executor": expected, "pool": expected}
