"""CPython 3.13's own ``test_concurrent_futures`` process-pool tests, run against gilfree.

Each CPython test module runs in a child interpreter (``python -c RUNNER``: no main script, so
workers have nothing to re-import) that first calls ``gilfree._run.install()`` (as ``python -m
gilfree run`` does), which rebinds ``concurrent.futures.ProcessPoolExecutor`` and
``concurrent.futures.process.ProcessPoolExecutor`` to gilfree's (and multiprocessing's ``Pool``
and ``Process``), and only then imports the tests: their mixins bind ``executor_type`` at
import. Only the process-pool classes run (``ProcessPoolFork...Test``,
``ProcessPoolForkserver...Test``, ``ProcessPoolSpawn...Test``); those for ``ThreadPoolExecutor``
and the futures themselves test nothing of gilfree's. Tests that start a fresh interpreter with
``python -c`` code (``test_interpreter_shutdown``, ...) get the same ``install()`` prepended.

``SKIPPED`` lists the tests that do not run, each with its reason. Every other test must pass,
and at least ``MIN_PASSED`` of each module must (so a shim that selects nothing cannot pass).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

#: gilfree's conformance: nothing to run against the stdlib (GILFREE_TEST_IMPL=stdlib).
pytestmark = [pytest.mark.gilfree_only, pytest.mark.process_only]

if sys.version_info[:2] != (3, 13):
    pytest.skip(
        "runs CPython 3.13's own test_concurrent_futures (this is "
        f"{sys.version_info.major}.{sys.version_info.minor})",
        allow_module_level=True,
    )
if importlib.util.find_spec("test.test_concurrent_futures") is None:  # pragma: no cover
    pytest.skip(
        "this CPython has no test package (test.test_concurrent_futures)", allow_module_level=True
    )

#: ``module.test_name`` -> why it does not run (for each of the three start-method classes).
SKIPPED = {
    # They read concurrent.futures' private attributes that gilfree has no counterpart for
    # (it has no manager thread, call queue or multiprocessing context).
    "test_process_pool.test_max_tasks_per_child_defaults_to_spawn_context": (
        "reads executor._mp_context"
    ),
    "test_shutdown.test_del_shutdown": "reads executor._executor_manager_thread and _call_queue",
    "test_shutdown.test_shutdown_no_wait": (
        "reads executor._executor_manager_thread and _call_queue"
    ),
    "test_deadlock.test_shutdown_deadlock_pickle": "reads executor._executor_manager_thread",
    # An intended difference: a killed worker fails only the task it was running
    # (WorkerCrashedError, a BrokenProcessPool) and is replaced; the pool stays usable, where
    # the stdlib's breaks and refuses new work.
    "test_process_pool.test_killed_child": "gilfree fails only the killed worker's task",
    # Refuses every thread start after the first (threading._start_joinable_thread) to make
    # the stdlib's second thread (a queue feeder) fail. gilfree starts one thread, which the
    # mock lets through, so nothing fails and the map's own TypeError comes back.
    # tests/test_lifecycle.py refuses gilfree's thread and checks the BrokenProcessPool.
    "test_process_pool.test_python_finalization_error": (
        "the mock refuses the stdlib's second thread; gilfree starts only one"
    ),
}

#: The CPython modules run, with the least number of their tests that must pass (with CPython
#: 3.13.0: 48, 24, 24, 15, 45 and 6 pass; the rest are skipped, here or by CPython itself).
MIN_PASSED = {
    "test_process_pool": 40,
    "test_shutdown": 18,
    "test_wait": 20,
    "test_as_completed": 12,
    "test_deadlock": 40,
    "test_init": 5,
}

#: Seconds one module may take (the slowest, test_wait, sleeps ~35 s by design).
MODULE_TIMEOUT = 150

RUNNER = r"""
import json, sys, unittest

import gilfree, gilfree._run
gilfree._run.install()

from test.support import script_helper

_run_python = script_helper.run_python_until_end


def run_python_until_end(*args, **env_vars):
    # Child interpreters started with ``-c code`` run gilfree too.
    if args[:1] == ("-c",):
        args = ("-c", "import gilfree._run; gilfree._run.install()\n" + args[1], *args[2:])
    return _run_python(*args, **env_vars)


script_helper.run_python_until_end = run_python_until_end

module_name, skipped = sys.argv[1], json.loads(sys.argv[2])
module = __import__("test.test_concurrent_futures." + module_name, fromlist=["_"])
from test.test_concurrent_futures import util

assert util.ProcessPoolForkMixin.executor_type is gilfree.ProcessPoolExecutor, "not rebound"


def cases(suite):
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from cases(test)
        else:
            yield test


def skip(reason):
    @unittest.skip(reason)
    def method():
        pass

    return method


suite = unittest.TestSuite()
for case in cases(unittest.defaultTestLoader.loadTestsFromModule(module)):
    if not type(case).__name__.startswith("ProcessPool"):
        continue
    assert case.executor_type is gilfree.ProcessPoolExecutor, case.id()
    reason = skipped.get(module_name + "." + case._testMethodName)
    if reason is not None:
        setattr(case, case._testMethodName, skip("gilfree: " + reason))
    suite.addTest(case)
result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
summary = {
    "run": result.testsRun,
    "skipped": len(result.skipped),
    "failed": [test.id() for test, _ in result.failures + result.errors],
    "unexpected_successes": len(result.unexpectedSuccesses),
}
print("CONFORMANCE " + json.dumps(summary), flush=True)
sys.exit(0 if result.wasSuccessful() else 1)
"""


@pytest.mark.timeout(MODULE_TIMEOUT + 30)
@pytest.mark.parametrize("module", list(MIN_PASSED))
def test_cpython_process_pool_tests_pass(module, tmp_path):
    output_path = tmp_path / "output.txt"
    with open(output_path, "w") as output:
        # Output to a file, not a pipe: nothing waits on a worker that keeps a pipe open.
        child = subprocess.Popen(
            [sys.executable, "-c", RUNNER, module, json.dumps(SKIPPED)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            start_new_session=True,
        )
        try:
            child.wait(MODULE_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    text = output_path.read_text(errors="replace")
    summary = _summary(text)
    assert summary is not None and child.returncode == 0 and not summary["failed"], (
        f"{module}: exit status {child.returncode}\n{_tail(text)}"
    )
    passed = summary["run"] - summary["skipped"]
    assert passed >= MIN_PASSED[module], f"{module}: only {passed} tests passed\n{_tail(text)}"


def _summary(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("CONFORMANCE "):
            return json.loads(line.removeprefix("CONFORMANCE "))
    return None


def _tail(text: str, limit: int = 12000) -> str:
    """The failures' tracebacks (unittest prints them after the list of tests), or the end."""
    start = text.find("\n======")
    return text[start:][-limit:] if start >= 0 else text[-limit:]


def test_the_skip_list_names_real_tests():
    """A renamed CPython test must not leave a stale entry here that hides nothing."""
    spec = importlib.util.find_spec("test.test_concurrent_futures")
    assert spec is not None and spec.origin is not None
    folder = Path(spec.origin).parent
    for key in SKIPPED:
        module_name, test_name = key.split(".")
        assert f"def {test_name}(" in (folder / f"{module_name}.py").read_text(), key
