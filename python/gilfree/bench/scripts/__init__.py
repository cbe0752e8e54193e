"""The seed's two example scripts, written for the stdlib, and running them three ways.

``run_three_ways(name, n)`` runs ``<name>.py`` with the stdlib, with its import changed to
``gilfree.multiprocessing``, and unchanged under ``python -m gilfree run``, each in a fresh
interpreter, and reports each run's output and the seconds the script measured itself.

``bench_numpy_pandas.py`` and ``bench_stdlib.py`` are the main scripts of ``python -m gilfree
bench`` (see `gilfree.bench.main_scripts`).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = ("seed_pool", "seed_process")
STDLIB_IMPORT = "import multiprocessing\n"
GILFREE_IMPORT = "import gilfree.multiprocessing as multiprocessing\n"
#: Longest a script may run (seconds).
SCRIPT_TIMEOUT = 600


@dataclass
class ScriptRun:
    """One run of a script: its result lines (without the timing line) and its own timing."""

    how: str
    results: list[str]
    seconds: float


def script_path(name: str) -> Path:
    """The path of the script ``name`` (``seed_pool`` or ``seed_process``)."""
    return Path(__file__).with_name(f"{name}.py")


def _run(how: str, command: list[str]) -> ScriptRun:
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{how}: exit status {completed.returncode}\n{completed.stderr}")
    lines = completed.stdout.splitlines()
    timing = [line for line in lines if line.startswith("seconds ")]
    if len(timing) != 1:
        raise RuntimeError(f"{how}: no timing line in its output:\n{completed.stdout}")
    results = [line for line in lines if not line.startswith("seconds ")]
    return ScriptRun(how, results, float(timing[0].split()[1]))


def run_three_ways(name: str, n: int) -> list[ScriptRun]:
    """Runs the script ``name`` with argument ``n``: stdlib, import changed, gilfree run."""
    path = script_path(name)
    source = path.read_text()
    if STDLIB_IMPORT not in source:
        raise RuntimeError(f"{path} does not import multiprocessing as the seed does")
    with tempfile.TemporaryDirectory(prefix="gilfree-seed-") as folder:
        changed = Path(folder) / path.name
        changed.write_text(source.replace(STDLIB_IMPORT, GILFREE_IMPORT, 1))
        return [
            _run("stdlib", [sys.executable, str(path), str(n)]),
            _run("import changed", [sys.executable, str(changed), str(n)]),
            _run("gilfree run", [sys.executable, "-m", "gilfree", "run", str(path), str(n)]),
        ]
