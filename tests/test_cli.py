"""``python -m gilfree``: the seed workloads and (issue 4) ``run``."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.gilfree_only, pytest.mark.timeout(120)]


def run_module(*arguments, timeout=100):
    return subprocess.run(
        [sys.executable, "-m", "gilfree", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
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
