"""``python -m gilfree``: the seed workloads and (issue 4) ``run``, for scripts and ``-m``."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.gilfree_only, pytest.mark.timeout(120), pytest.mark.process_only]


def run_module(*arguments, timeout=100, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "gilfree", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


def test_seed_runs_every_workload_and_compares_the_echo_with_the_stdlib():
    completed = run_module("seed", "--n", "18", "--echo", "20000", "--stdlib-echo")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    assert any(line.startswith("map(fib, range(18))") for line in lines), completed.stdout
    assert any("Process(fib(18))" in line for line in lines), completed.stdout
    echo = [line for line in lines if line.startswith("submit(echo, 0.02 M complex)")]
    assert len(echo) == 1 and "ProcessPoolExecutor" in echo[0] and "faster" in echo[0], lines


def test_seed_rejects_a_negative_echo_count():
    completed = run_module("seed", "--echo", "-1")
    assert completed.returncode == 2
    assert "--echo must be 0 or more" in completed.stderr


# --- python -m gilfree run ------------------------------------------------------------------

SCRIPT_NAMES = ("seed_pool", "seed_process")


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_seed_scripts_give_the_same_results_three_ways(name):
    from gilfree.bench.scripts import run_three_ways

    stdlib, import_changed, gilfree_run = run_three_ways(name, 18)
    assert stdlib.results == import_changed.results == gilfree_run.results
    assert stdlib.results and all(line for line in stdlib.results)


def write_script(tmp_path, source):
    path = tmp_path / "script.py"
    path.write_text(source)
    return path


def test_run_replaces_the_stdlib_pools_and_passes_the_arguments(tmp_path):
    script = write_script(
        tmp_path,
        """
import concurrent.futures, multiprocessing, multiprocessing.pool, os, sys
from multiprocessing import Pool, Process
from concurrent.futures import ProcessPoolExecutor

def double(x):
    return 2 * x

if __name__ == "__main__":
    print(Pool.__module__, Process.__module__, ProcessPoolExecutor.__module__)
    with multiprocessing.pool.Pool(1) as made:
        print(type(made).__module__, concurrent.futures.process.ProcessPoolExecutor.__module__)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        print(type(pool).__module__, pool.map(double, [1, 2]))
    with ProcessPoolExecutor(1) as executor:
        print(list(executor.map(double, [3])))
    script_folder = os.path.dirname(os.path.abspath(sys.argv[0]))
    print(sys.argv[1:], os.path.basename(sys.argv[0]), script_folder == sys.path[0])
""",
    )
    completed = run_module("run", str(script), "a", "--b")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        "gilfree.pool gilfree.process gilfree.executor",
        "gilfree.pool gilfree.executor",
        "gilfree.pool [2, 4]",
        "[6]",
        "['a', '--b'] script.py True",
    ]


def test_run_leaves_thread_pools_and_the_scripts_start_method_working(tmp_path):
    script = write_script(
        tmp_path,
        """
import multiprocessing, multiprocessing.dummy
from multiprocessing.pool import Pool, ThreadPool

def double(x):
    return 2 * x

if __name__ == "__main__":
    print(multiprocessing.get_start_method(allow_none=True))
    multiprocessing.set_start_method("spawn")  # without force: nothing set it before
    print(multiprocessing.get_start_method())
    for pool in (ThreadPool(2), multiprocessing.dummy.Pool(2), Pool(2)):
        with pool:
            print(type(pool).__module__, type(pool).__name__, pool.map(double, [1, 2]))
""",
    )
    completed = run_module("run", str(script))
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        "None",
        "spawn",
        "multiprocessing.pool ThreadPool [2, 4]",
        "multiprocessing.pool ThreadPool [2, 4]",
        "gilfree.pool Pool [2, 4]",
    ]


def test_run_returns_the_scripts_exit_status(tmp_path):
    assert run_module("run", str(write_script(tmp_path, "raise SystemExit(7)"))).returncode == 7
    failing = run_module("run", str(write_script(tmp_path, "raise ValueError('no')")))
    assert failing.returncode == 1 and "ValueError: no" in failing.stderr


def test_run_without_a_script_explains_itself(tmp_path):
    missing = run_module("run", str(tmp_path / "missing.py"))
    assert missing.returncode == 2
    assert f"can't open file '{tmp_path / 'missing.py'}'" in missing.stderr
    assert "No such file or directory" in missing.stderr
    usage = run_module("run")
    assert usage.returncode == 2 and "usage: python -m gilfree run" in usage.stdout


def test_objects_of_the_scripts_classes_come_back_from_workers(tmp_path):
    # Workers pickle them as __mp_main__.Box: the parent's __mp_main__ must be the script.
    script = write_script(
        tmp_path,
        """
import multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor

class Box:
    def __init__(self, value):
        self.value = value

class Refused(Exception):
    pass

def make(value):
    return Box(value)

def refuse(value):
    raise Refused(value)

def send(connection):
    connection.send(Box(9))
    connection.close()

if __name__ == "__main__":
    with multiprocessing.Pool(2) as pool:
        print([box.value for box in pool.map(make, range(3))])
        try:
            pool.apply(refuse, (5,))
        except Refused as error:
            print("refused", error.args)
    with ProcessPoolExecutor(2) as executor:
        print([box.value for box in executor.map(make, range(2))])
    receiving, sending = multiprocessing.Pipe()
    child = multiprocessing.Process(target=send, args=(sending,))
    child.start()
    print(receiving.recv().value)
    child.join()
    print(sys.modules["__mp_main__"] is sys.modules["__main__"], type(__builtins__).__name__)
""",
    )
    completed = run_module("run", str(script))
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines == ["[0, 1, 2]", "refused (5,)", "[0, 1]", "9", "True module"]


def test_a_process_only_fork_can_carry_starts_under_run_as_under_python(tmp_path):
    # gilfree run makes forkserver the default (for locks sent to workers); a process object
    # holding a thread lock and an open file must still fork, as multiprocessing's does.
    script = write_script(
        tmp_path,
        """
import multiprocessing, threading

class Writer(multiprocessing.Process):
    def __init__(self, path):
        super().__init__()
        self.lock = threading.Lock()
        self.out = open(path, "w")

    def run(self):
        with self.lock:
            self.out.write("written by the child")
            self.out.flush()

if __name__ == "__main__":
    queue = multiprocessing.Queue()  # any get_context() call sets the default as the actual one
    writer = Writer("out.txt")
    writer.start()
    writer.join(30)
    print(type(writer).__mro__[1].__module__, writer.exitcode, open("out.txt").read())
""",
    )
    completed = run_module("run", str(script), cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["gilfree.process 0 written by the child"]


def test_a_relative_script_that_changes_directory_still_reaches_its_workers(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    write_script(
        tmp_path,
        """
import os, multiprocessing

def square(x):
    return x * x

if __name__ == "__main__":
    os.chdir("elsewhere")
    print(os.path.isabs(__file__))
    with multiprocessing.Pool(2) as pool:
        print(pool.map(square, range(4)))
""",
    )
    completed = run_module("run", "script.py", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["True", "[0, 1, 4, 9]"]


def test_an_uncaught_exception_shows_the_scripts_traceback_as_python_does(tmp_path):
    script = write_script(tmp_path, "def fail():\n    raise ValueError('no')\n\nfail()\n")
    plain = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    completed = run_module("run", str(script))
    assert completed.returncode == plain.returncode == 1
    assert completed.stderr == plain.stderr
    assert "gilfree" not in completed.stderr


@pytest.mark.parametrize(
    "source",
    ["def (:\n", "print('before', flush=True)\nraise KeyboardInterrupt\n"],
    ids=["syntax-error", "keyboard-interrupt"],
)
def test_a_syntax_error_or_an_interrupt_is_reported_as_python_does(tmp_path, source):
    """Both showed gilfree's and runpy's frames."""
    script = write_script(tmp_path, source)
    plain = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    completed = run_module("run", str(script))
    assert (completed.returncode, completed.stdout) == (plain.returncode, plain.stdout)
    assert completed.stderr == plain.stderr
    assert "gilfree" not in completed.stderr


def test_a_linked_script_imports_its_neighbours_as_under_python(tmp_path):
    """Python puts the folder of the script a link points to first on the path; gilfree put
    the link's."""
    real, links = tmp_path / "real", tmp_path / "links"
    real.mkdir()
    links.mkdir()
    (real / "helper.py").write_text("ANSWER = 42\n")
    (real / "main.py").write_text("import helper\n\nprint(helper.ANSWER)\n")
    (links / "tool.py").symlink_to(real / "main.py")
    completed = run_module("run", str(links / "tool.py"))
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "42\n"


def test_run_takes_a_directory_or_zip_file_with_a_main_module(tmp_path):
    import zipfile

    folder = tmp_path / "app"
    folder.mkdir()
    source = """
import multiprocessing, sys
if __name__ == "__main__":
    with multiprocessing.Pool(1) as pool:
        print(pool.map(abs, [-1, -2]), sys.argv[1:], __spec__.name)
"""
    (folder / "__main__.py").write_text(source)
    with zipfile.ZipFile(tmp_path / "app.zip", "w") as archive:
        archive.writestr("__main__.py", source)
    for target in (folder, tmp_path / "app.zip"):
        completed = run_module("run", str(target), "x")
        assert completed.returncode == 0, completed.stderr
        assert completed.stdout == "[1, 2] ['x'] __main__\n"
    (tmp_path / "empty").mkdir()
    empty = run_module("run", str(tmp_path / "empty"))
    assert empty.returncode == 1 and "can't find '__main__' module in" in empty.stderr


# --- python -m gilfree run -m module ---------------------------------------------------------

PACKAGE_MAIN = """
import concurrent.futures, multiprocessing, sys
from . import work

def cube(x):
    return x ** 3

if __name__ == "__main__":
    with concurrent.futures.ProcessPoolExecutor(2) as executor:
        squares = list(executor.map(work.square, range(5)))
        print(type(executor).__module__, type(executor).__name__, squares)
    with multiprocessing.Pool(2) as pool:
        print(type(pool).__module__, type(pool).__name__, pool.map(cube, [2, 3]))
    print(__name__, __spec__.name, sys.argv[1:])
    print(sys.argv[0])
    print(sys.path[0])
"""


def test_run_m_runs_a_package_main_with_gilfrees_pools(tmp_path):
    package = tmp_path / "app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "work.py").write_text("def square(x):\n    return x * x\n")
    (package / "__main__.py").write_text(PACKAGE_MAIN)
    completed = run_module("run", "-m", "app", "x", "--y", cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    root = os.path.realpath(tmp_path)
    assert completed.stdout.splitlines() == [
        "gilfree.executor ProcessPoolExecutor [0, 1, 4, 9, 16]",
        "gilfree.pool Pool [8, 27]",
        "__main__ app.__main__ ['x', '--y']",
        os.path.join(root, "app", "__main__.py"),  # as python -m sets them
        root,
    ]


@pytest.mark.parametrize("form", [("-m", "tool"), ("-mtool",)])
def test_run_m_runs_a_plain_module_with_its_arguments(tmp_path, form):
    (tmp_path / "tool.py").write_text(
        "import sys\nprint(__name__, __spec__.name, sys.argv)\nprint(sys.path[0])\nsys.exit(3)\n"
    )
    completed = run_module("run", *form, "a", "-b", "--c=d", cwd=tmp_path)
    assert completed.returncode == 3, completed.stderr
    root = os.path.realpath(tmp_path)
    argv = [os.path.join(root, "tool.py"), "a", "-b", "--c=d"]
    assert completed.stdout.splitlines() == [f"__main__ tool {argv}", root]


PYTEST_FILE = """
import concurrent.futures

def double(x):
    return 2 * x

def test_doubles_in_workers():
    with concurrent.futures.ProcessPoolExecutor(1) as executor:
        assert type(executor).__module__ == "gilfree.executor"
        assert list(executor.map(double, [1, 2])) == EXPECTED
"""


@pytest.mark.parametrize(("expected", "status"), [("[2, 4]", 0), ("[0]", 1)])
def test_run_m_pytest_returns_pytests_exit_status(tmp_path, expected, status):
    (tmp_path / "test_tiny.py").write_text(PYTEST_FILE.replace("EXPECTED", expected))
    completed = run_module(
        "run", "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_tiny.py", cwd=tmp_path
    )
    assert completed.returncode == status, completed.stdout + completed.stderr
    assert ("1 passed" if status == 0 else "1 failed") in completed.stdout, completed.stdout


def test_run_m_explains_a_missing_module(tmp_path):
    missing = run_module("run", "-m", "gilfree_no_such_module", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        "python -m gilfree run: No module named gilfree_no_such_module"
    ]
    (tmp_path / "broken.py").write_text("import gilfree_no_such_dependency\n")
    # an ImportError from the module's own code keeps its traceback
    broken = run_module("run", "-m", "broken", cwd=tmp_path)
    assert broken.returncode == 1 and "Traceback" in broken.stderr, broken.stderr
    assert "No module named 'gilfree_no_such_dependency'" in broken.stderr
    usage = run_module("run", "-m")
    assert usage.returncode == 2 and "-m needs a module name" in usage.stderr
    assert "python -m gilfree run -m module" in usage.stdout


# --- python -m gilfree bench ----------------------------------------------------------------


def test_bench_quick_measures_the_start_up_and_memory_rows():
    completed = run_module(
        "bench",
        "--quick",
        "--contenders",
        "gilfree,ppe_fork,pool",
        "--only",
        "round_trip,cold_start,worker_memory,startup_stdlib_main",
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    table = completed.stdout
    for title in (
        "round trip (no-op)",
        "cold start: 1st executor, 8 workers, 32 numpy+pandas tasks",
        "cold start: 2nd executor, same interpreter",
        "memory per worker (PSS), 8 workers, numpy+pandas main",
        "startup (create+1 task+shutdown), main imports only the stdlib executor",
    ):
        assert title in table, table
    assert "failed [" not in table, table
    assert "MiB for 8 workers" in table and "issue 9:" in table, table


def test_bench_runs_each_cell_in_its_own_interpreter_but_a_session_in_one():
    from gilfree.bench import contenders, runner
    from gilfree.bench.suite import SUITE

    entries = [contenders.find_entry(key) for key in ("gilfree", "ppe", "ppe_fork", "loky")]
    keys = ("round_trip", "startup", "cold_start_first", "cold_start_second", "startup_stdlib_main")
    workloads = [workload for workload in SUITE if workload.key in keys]
    for quick in (False, True):
        settings = runner.build_settings(runner.parse_arguments(["--quick"] if quick else []))
        batches = runner.plan_batches(workloads, entries, settings, named=set())
        cells = {(b.key, tuple(w.key for w in b.workloads), b.script, b.runs) for b in batches}
        runs = 1 if quick else 3
        for key in ("gilfree", "ppe_fork", "loky"):  # both cold starts in one interpreter
            assert (key, ("cold_start_first", "cold_start_second"), "numpy_pandas", runs) in cells
        assert ("gilfree", ("startup_stdlib_main",), "stdlib", 1) in cells
        assert not any(b.key == "ppe_fork" and workloads[0] in b.workloads for b in batches)
        steady = ("round_trip", "startup")
        if quick:  # --quick shares one interpreter per contender for the steady-state rows
            assert ("ppe", steady, "numpy_pandas", 1) in cells
        else:
            assert {("ppe", (key,), "numpy_pandas", 1) for key in steady} <= cells


def test_bench_runs_a_rows_repetitions_in_rounds_across_its_contenders(monkeypatch):
    from gilfree.bench import contenders, runner
    from gilfree.bench.suite import SUITE

    entries = [contenders.find_entry(key) for key in ("gilfree", "loky")]
    settings = runner.build_settings(runner.parse_arguments([]))
    workloads = [w for w in SUITE if w.key in ("cold_start_first", "cold_start_second", "startup")]
    batches = runner.plan_batches(workloads, entries, settings, named=set())
    rows = runner.rows_of(batches)
    assert [[(b.key, b.runs) for b in row] for row in rows] == [
        [("gilfree", 1), ("loky", 1)],  # startup: one interpreter each
        [("gilfree", 3), ("loky", 3)],  # the cold starts: one session, fresh interpreters
    ]
    started: list[str] = []
    values = iter([5.0, 9.0, 3.0, 8.0, 4.0, 7.0])

    def run_interpreter(batch, _settings):
        started.append(batch.key)
        value = next(values)
        return {w.key: runner.Outcome(value, None, f"run {len(started)}") for w in batch.workloads}

    monkeypatch.setattr(runner, "run_interpreter", run_interpreter)
    gilfree, loky = runner.run_row(rows[1], settings)
    assert started == ["gilfree", "loky"] * 3
    assert gilfree["cold_start_first"] == runner.Outcome(3.0, None, "run 3")
    assert loky["cold_start_second"] == runner.Outcome(7.0, None, "run 6")


def test_bench_rejects_an_unknown_workload_or_contender():
    for option in ("--only", "--contenders"):
        completed = run_module("bench", option, "no_such_thing")
        assert completed.returncode == 2
        assert "unknown" in completed.stderr and "no_such_thing" in completed.stderr


def test_bench_quick_times_a_numpy_row_against_the_loop_and_the_best_chunksize():
    completed = run_module(
        "bench", "--quick", "--contenders", "gilfree,ppe_best", "--only", "matmul_sum"
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    table = completed.stdout
    assert "map(float((a @ a.T).sum())), 600 × 64×64 float64 (--quick size)" in table, table
    assert "failed [" not in table and "vs sequential" in table, table
    timed = re.compile(r"\s\d+(\.\d+)? (s|ms|µs)\s+\d+(\.\d+)? µs/array")
    for contender in ("sequential", "gilfree", "ProcessPoolExecutor(best chunksize)"):
        lines = [line for line in table.splitlines() if f"  {contender} " in line]
        assert len(lines) == 1 and timed.search(lines[0]), table
    assert re.search(r"µs/array, chunksize (1|16|64|256)\s", table), table
    assert "≥3× PPE best chunksize (issue 10)" in table and "issue 10:" in table, table


def test_bench_numpy_rows_run_with_one_blas_thread_in_interpreters_of_their_own():
    from gilfree.bench import contenders, runner
    from gilfree.bench.suite import SUITE

    entries = [contenders.find_entry(key) for key in ("gilfree", "ppe", "ppe_best")]
    settings = runner.build_settings(runner.parse_arguments(["--quick"]))
    workloads = [w for w in SUITE if w.key in ("round_trip", "matmul_sum", "groupby_big_frame")]
    batches = runner.plan_batches(workloads, entries, settings, named=set())
    for batch in batches:
        numeric = {w.key for w in batch.workloads} & {"matmul_sum", "groupby_big_frame"}
        assert not numeric or {w.key for w in batch.workloads} == numeric
        assert dict(batch.environment).get("OPENBLAS_NUM_THREADS") == ("1" if numeric else None)
    cells = {(b.key, tuple(w.key for w in b.workloads)) for b in batches}
    assert ("sequential", ("matmul_sum", "groupby_big_frame")) in cells
    assert ("ppe_best", ("matmul_sum",)) in cells  # a submit has no chunksize to sweep


class _Unpicklable:
    """An item that cannot be sent: the fork-after-the-data contender must never pickle it."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self):
        raise TypeError("this item cannot be pickled")


# The stdlib forks this process, which other tests' executors may have left threads in.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_the_fork_after_the_data_contender_sends_no_item_and_leaves_no_process():
    import multiprocessing

    from gilfree.bench import contenders

    contender = contenders.find_entry("fork_inherit").load()
    pool = contender.create(2)
    items = [_Unpicklable(value) for value in range(7)]
    assert contender.map(pool, lambda item: item.value * 10, items) == [0, 10, 20, 30, 40, 50, 60]
    assert contender.map(pool, lambda item: -item.value, items, chunksize=1)[-1] == -6
    assert contender.call(pool, lambda item: item.value + 1, items[3]) == 4
    assert multiprocessing.active_children() == []
    with pytest.raises(ZeroDivisionError):
        contender.map(pool, lambda item: 1 // item.value, items)
    assert multiprocessing.active_children() == []
    contender.close(pool, graceful=True)
